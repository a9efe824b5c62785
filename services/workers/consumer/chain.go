package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/workers"
)

// A channel's provider is called through a chain of Senders, outermost first: the rate limit
// paces calls, the circuit breaker stops them while the provider is failing, and the
// instrumentation bounds, times and traces the call itself. Each part refuses a send it does not
// let through with a *workers.NotSentError, which gives the delivery back unsent.

// timed is what the instrumented call reports besides the provider's answer.
type timed struct {
	workers.Result
	Started time.Time
	Latency time.Duration
}

// timedSender is the innermost part of the chain: the provider call, bounded by a timeout,
// traced and timed.
type timedSender struct {
	sender  workers.Sender
	timeout time.Duration
	metrics *Metrics
}

func (s *timedSender) send(ctx context.Context, m *workers.Message) (timed, error) {
	ctx, span := tracing.Tracer().Start(ctx, "send "+string(m.Channel),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("herald.delivery_id", m.DeliveryID.String()),
			attribute.String("herald.provider", s.sender.Provider()),
			attribute.Int("herald.attempt", m.Attempt)))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t := timed{Started: time.Now()}
	res, err := s.sender.Send(ctx, m)
	t.Result, t.Latency = res, time.Since(t.Started)
	if err != nil {
		span.SetStatus(codes.Error, "provider refused or failed") // the error text may name an address
	}
	if s.metrics != nil {
		provider := res.Provider
		if provider == "" {
			provider = s.sender.Provider()
		}
		s.metrics.ProviderDuration.WithLabelValues(string(m.Channel), provider).Observe(t.Latency.Seconds())
	}
	return t, err
}

// sendFunc is one link of the chain.
type sendFunc func(ctx context.Context, m *workers.Message) (timed, error)

// breaker is a channel's circuit breaker. It opens after a run of provider failures (at once on
// a configuration error); while it is open, sends are refused and the consumer claims nothing,
// so no attempt is spent; after a cooldown one probe decides whether it closes again.
type breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	cooldown time.Duration
	// probeAt is when the open circuit lets a probe through (Unix nanoseconds).
	probeAt atomic.Int64
	// configError makes the breaker trip on the failure being reported, whatever the count.
	configError atomic.Bool
	// failures is the run of failures that tripped the breaker, for the log.
	failures atomic.Uint32
}

func newBreaker(ch delivery.Channel, provider string, failures int, cooldown time.Duration, m *Metrics, log *slog.Logger) *breaker {
	b := &breaker{cooldown: cooldown}
	log = log.With("channel", ch, "provider", provider)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        string(ch),
		MaxRequests: 1, // one probe
		Timeout:     cooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool {
			b.failures.Store(n.ConsecutiveFailures)
			return b.configError.Load() || n.ConsecutiveFailures >= uint32(failures)
		},
		IsSuccessful: providerAnswered,
		// Runs inside the breaker's lock: it may not call the breaker.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if m != nil {
				m.CircuitState.WithLabelValues(string(ch), provider).Set(circuitValue(to))
				if to == gobreaker.StateOpen {
					m.CircuitOpened.WithLabelValues(string(ch), provider).Inc()
				}
			}
			switch to {
			case gobreaker.StateOpen:
				b.probeAt.Store(time.Now().Add(cooldown).UnixNano())
				n := b.failures.Load()
				if from == gobreaker.StateHalfOpen {
					n = 1 // the probe
				}
				log.Warn("circuit open; channel paused", "consecutive_failures", n,
					"probe_failed", from == gobreaker.StateHalfOpen, "cooldown", cooldown)
			case gobreaker.StateHalfOpen:
				log.Info("circuit half-open; probing")
			case gobreaker.StateClosed:
				log.Info("circuit closed; channel resumed")
			}
		},
	})
	if m != nil {
		m.CircuitState.WithLabelValues(string(ch), provider).Set(0)
	}
	return b
}

// providerAnswered reports whether a send's outcome speaks well of the provider: it took the
// message, or it refused this one message for a reason of the message's own. A send that a
// Sender of several credentials held back because every budget was spent (route's
// "rate_limited") says nothing against them either. Anything else (timeouts, unavailability,
// configuration errors, every credential's circuit open) counts towards opening the circuit.
func providerAnswered(err error) bool {
	var perm *workers.PermanentError
	var ns *workers.NotSentError
	return err == nil || errors.As(err, &perm) || errors.As(err, &ns) && ns.Reason == "rate_limited"
}

// state returns the circuit's state.
func (b *breaker) state() gobreaker.State { return b.cb.State() }

// pausedFor returns how long a delivery refused by the circuit should stay away: until the probe
// may go, and at least a second.
func (b *breaker) pausedFor() time.Duration {
	return max(time.Until(time.Unix(0, b.probeAt.Load())), time.Second)
}

// wrap returns next behind the breaker.
func (b *breaker) wrap(next sendFunc) sendFunc {
	return func(ctx context.Context, m *workers.Message) (timed, error) {
		report, err := b.cb.Allow()
		if err != nil { // open, or the probe is already out
			return timed{}, &workers.NotSentError{Reason: "circuit_open", RetryAfter: b.pausedFor()}
		}
		t, err := next(ctx, m)
		var ce *workers.ConfigError
		if errors.As(err, &ce) {
			b.configError.Store(true)
			defer b.configError.Store(false)
		}
		report(err)
		return t, err
	}
}

// limiter paces a channel's provider calls (a Twilio sender's rate, say). A call waits for its
// turn at most maxWait, so that what is left of its lease covers the call and its record;
// beyond that the delivery goes back, to come when the queue of calls has drained.
type limiter struct {
	lim     *rate.Limiter
	maxWait time.Duration
	// backoff is how long a refused delivery stays away: about the time the consumer's
	// senders take to use the rate.
	backoff time.Duration
}

// wrap returns next behind the limiter. A wait ends when quit does (the consumer stops), which
// gives the delivery back at once; a call under way is not cut short.
func (l *limiter) wrap(next sendFunc, quit context.Context) sendFunc {
	return func(ctx context.Context, m *workers.Message) (timed, error) {
		r := l.lim.Reserve()
		wait := r.Delay()
		if wait > l.maxWait {
			r.Cancel()
			return timed{}, &workers.NotSentError{Reason: "rate_limited", RetryAfter: l.backoff}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-quit.Done():
				t.Stop()
				r.Cancel()
				return timed{}, &workers.NotSentError{Reason: "stopping"}
			}
		}
		return next(ctx, m)
	}
}

// newLimiter returns a limiter of ratePerSecond calls (burst at once, at least one), shared by
// concurrency senders, that waits at most maxWait.
func newLimiter(ratePerSecond float64, burst, concurrency int, maxWait time.Duration) *limiter {
	return &limiter{
		lim:     rate.NewLimiter(rate.Limit(ratePerSecond), burst),
		maxWait: maxWait,
		backoff: time.Duration(float64(concurrency) / ratePerSecond * float64(time.Second)),
	}
}
