// Package consumer runs one channel's worker loop: it pulls delivery ids from the channel's
// JetStream consumer, claims them in batches, calls the provider with bounded concurrency,
// records the outcomes in batches, and only then acknowledges the messages.
//
// The stages are joined by channels, and each stage takes whatever has piled up since its last
// round as one batch, so the database sees one claim and one record statement per batch while a
// lone message still goes straight through.
//
// The consumer protects the provider and the deliveries' attempts. A circuit breaker opens after
// a run of provider failures (at once on a configuration error): while it is open the channel
// stops pulling and claims nothing, so no attempt is spent, and after a cooldown one probe
// delivery decides whether it closes again. A rate limiter paces provider calls. A delivery that
// uses up its attempts is announced as a dead letter.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/workers"
)

// Config is one channel's consumer.
type Config struct {
	Channel  delivery.Channel
	Sender   workers.Sender
	Store    workers.Store
	Policy   workers.Policy
	WorkerID string
	// Concurrency is how many provider calls may be in flight at once.
	Concurrency int
	// BatchSize bounds one claim or record statement.
	BatchSize int
	// Lease is how long a claim lasts; a worker that dies leaves its deliveries to others after
	// this long. It must exceed SendTimeout; the time left over bounds a wait for the rate
	// limiter.
	Lease time.Duration
	// SendTimeout bounds one provider call.
	SendTimeout time.Duration
	// AckWait is the JetStream consumer's ack wait.
	AckWait time.Duration
	// Gate, when set, re-checks each batch against the recipients' settings before sending.
	Gate workers.Gate
	// Announcer, when set, publishes what provider answers mean for addresses.
	Announcer workers.Announcer
	// Metrics, when set, counts outcomes and circuit changes.
	Metrics *Metrics
	// Unsubscribe, when set, adds List-Unsubscribe links to emails.
	Unsubscribe *workers.UnsubscribeLinks
	Log         *slog.Logger
	// BreakerFailures is how many provider failures in a row (transient errors, timeouts) open
	// the channel's circuit; 0 means 5. A configuration error opens it at once.
	BreakerFailures int
	// BreakerCooldown is how long the circuit stays open before one probe delivery may go;
	// 0 means 30 seconds.
	BreakerCooldown time.Duration
	// RatePerSecond bounds provider calls per second on the channel (e.g. a Twilio sender's
	// limit); 0 means unlimited. Burst is how many calls may go back to back above that rate;
	// 0 means 1.
	RatePerSecond float64
	Burst         int
	// Jitter returns the backoff's jitter, a number in [0, 1); nil means uniformly random.
	Jitter func() float64
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 15 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 4 * c.SendTimeout
	}
	if c.Policy.MaxAttempts <= 0 {
		c.Policy = workers.DefaultPolicy
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = 30 * time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 1
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
}

// Consumer is a running channel loop.
type Consumer struct {
	cfg      Config
	sent     atomic.Int64 // provider calls accepted, for the status report
	failed   atomic.Int64
	cons     jetstream.Consumer
	in       chan jetstream.Msg
	work     chan job
	done     chan result
	slots    chan struct{}
	stopping chan struct{}
	// quit ends waits for the rate limiter when the consumer stops.
	quit     context.Context
	stopQuit context.CancelFunc
	wg       sync.WaitGroup
	recorded sync.WaitGroup

	mu      sync.Mutex
	cc      jetstream.ConsumeContext // the current pull; the claim loop replaces it after a pause
	stopped bool

	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	limiter *rate.Limiter // nil when unlimited
	// probeAt is when the open circuit lets a probe through (Unix nanoseconds).
	probeAt atomic.Int64
	// configError makes the breaker trip on the failure being reported, whatever the count.
	configError atomic.Bool
	// failures is the run of failures that tripped the breaker, for the log.
	failures atomic.Uint32
	// next is a message the claim loop took and has not claimed yet; only the claim loop
	// touches it.
	next jetstream.Msg
}

type job struct {
	msg     jetstream.Msg
	m       *workers.Message
	claimed time.Time // when the claim, and so the lease, began (or a little before)
}

type result struct {
	msg jetstream.Msg
	a   workers.Attempt
	// release: the provider was not called, or its answer blamed Herald's configuration; the
	// delivery goes back unrecorded, and the message comes back after delay.
	release bool
	delay   time.Duration
}

// Start ensures the channel's durable consumer and starts pulling from it. It fails if the
// lease does not exceed the send timeout, or if the consumer cannot be set up.
func Start(ctx context.Context, js jetstream.JetStream, cfg Config) (*Consumer, error) {
	cfg.defaults()
	if cfg.Lease <= cfg.SendTimeout {
		return nil, fmt.Errorf("consumer %s: lease %v must exceed the send timeout %v", cfg.Channel, cfg.Lease, cfg.SendTimeout)
	}
	cons, err := queue.EnsureConsumer(ctx, js, cfg.Channel, queue.ConsumerConfig{AckWait: cfg.AckWait})
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:  cfg,
		cons: cons,
		// in holds as many messages as one pull brings, so that the claim loop finds
		// them all ready and claims them as one batch: unbuffered, every hand-over waited for
		// the loop, which took one message per claim.
		in:       make(chan jetstream.Msg, pullMax(cfg)),
		work:     make(chan job, claimAhead*cfg.Concurrency),
		done:     make(chan result, cfg.BatchSize),
		slots:    make(chan struct{}, claimAhead*cfg.Concurrency),
		stopping: make(chan struct{}),
	}
	c.quit, c.stopQuit = context.WithCancel(context.Background())
	c.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        string(cfg.Channel),
		MaxRequests: 1, // one probe
		Timeout:     cfg.BreakerCooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool {
			c.failures.Store(n.ConsecutiveFailures)
			return c.configError.Load() || n.ConsecutiveFailures >= uint32(cfg.BreakerFailures)
		},
		IsSuccessful:  providerAnswered,
		OnStateChange: c.circuitChanged,
	})
	if cfg.Metrics != nil {
		cfg.Metrics.CircuitState.WithLabelValues(string(cfg.Channel), cfg.Sender.Provider()).Set(0)
	}
	if cfg.RatePerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RatePerSecond), cfg.Burst)
	}
	c.cc, err = c.consume()
	if err != nil {
		c.stopQuit()
		return nil, err
	}
	c.wg.Add(1)
	go c.claimLoop()
	for range cfg.Concurrency {
		c.wg.Add(1)
		go c.sendLoop()
	}
	c.recorded.Add(1)
	go c.recordLoop()
	return c, nil
}

func (c *Consumer) consume() (jetstream.ConsumeContext, error) {
	cc, err := c.cons.Consume(c.receive,
		jetstream.PullMaxMessages(pullMax(c.cfg)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.cfg.Log.Warn("consume", "channel", c.cfg.Channel, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", c.cfg.Channel, err)
	}
	return cc, nil
}

// pullMax is how many messages the client pulls ahead of the claims.
func pullMax(cfg Config) int { return max(2*cfg.Concurrency, 64) }

// providerAnswered reports whether a send's outcome speaks well of the provider: it took the
// message, or it refused this one message for a reason of the message's own. Anything else
// (timeouts, unavailability, configuration errors) counts towards opening the circuit.
func providerAnswered(err error) bool {
	var perm *workers.PermanentError
	return err == nil || errors.As(err, &perm)
}

// circuitChanged runs inside the breaker's lock: it may not call the breaker.
func (c *Consumer) circuitChanged(_ string, from, to gobreaker.State) {
	log := c.cfg.Log.With("channel", c.cfg.Channel, "provider", c.cfg.Sender.Provider())
	if m := c.cfg.Metrics; m != nil {
		m.CircuitState.WithLabelValues(string(c.cfg.Channel), c.cfg.Sender.Provider()).Set(circuitValue(to))
		if to == gobreaker.StateOpen {
			m.CircuitOpened.WithLabelValues(string(c.cfg.Channel), c.cfg.Sender.Provider()).Inc()
		}
	}
	switch to {
	case gobreaker.StateOpen:
		c.probeAt.Store(time.Now().Add(c.cfg.BreakerCooldown).UnixNano())
		failures := c.failures.Load()
		if from == gobreaker.StateHalfOpen {
			failures = 1 // the probe
		}
		log.Warn("circuit open; channel paused", "consecutive_failures", failures,
			"probe_failed", from == gobreaker.StateHalfOpen, "cooldown", c.cfg.BreakerCooldown)
	case gobreaker.StateHalfOpen:
		log.Info("circuit half-open; probing")
	case gobreaker.StateClosed:
		log.Info("circuit closed; channel resumed")
	}
}

// CircuitState returns the state of the channel's circuit: "closed" (sending), "open"
// (paused) or "half-open" (one probe may go).
func (c *Consumer) CircuitState() string { return c.breaker.State().String() }

// pausedFor returns how long a message handed back because of the circuit should stay away:
// until the probe may go, and at least a second.
func (c *Consumer) pausedFor() time.Duration {
	return max(time.Until(time.Unix(0, c.probeAt.Load())), time.Second)
}

// receive hands a message to the claimer, or gives it back to the server at once when the
// consumer is stopping.
func (c *Consumer) receive(msg jetstream.Msg) {
	select {
	case <-c.stopping:
		msg.Nak()
		return
	default:
	}
	select {
	case c.in <- msg:
	case <-c.stopping:
		msg.Nak()
	}
}

// claimLoop claims deliveries as the circuit allows: batches while it is closed, one probe
// while it is half-open, nothing while it is open.
func (c *Consumer) claimLoop() {
	defer c.wg.Done()
	defer close(c.work)
	defer func() {
		if c.next != nil {
			c.next.Nak()
		}
	}()
	for {
		var ok bool
		switch c.breaker.State() {
		case gobreaker.StateOpen:
			ok = c.pause()
		case gobreaker.StateHalfOpen:
			ok = c.probe()
		default:
			ok = c.claimBatch()
		}
		if !ok {
			return
		}
	}
}

// claimAhead bounds the deliveries claimed and not yet sent, in rounds of Concurrency: the
// senders' own and one round more. While one round is sent, the next is claimed and re-checked,
// so that no sender waits for a claim (with 50 ms providers, claiming only for idle senders
// kept them a third idle); and a claimed delivery waits for a sender about one provider call,
// far less than its lease.
const claimAhead = 2

// claimBatch waits for a free slot and a message, takes whatever more is ready as one batch,
// claims the batch and hands the claimed deliveries to the senders. A claim starts a lease, so
// no more is claimed than the senders can start on within a round (claimAhead). It returns
// false when the consumer is stopping.
func (c *Consumer) claimBatch() bool {
	select {
	case c.slots <- struct{}{}:
	case <-c.stopping:
		return false
	}
	msg, ok := c.take()
	if !ok {
		<-c.slots
		return false
	}
	if c.breaker.State() != gobreaker.StateClosed {
		// The circuit opened while this waited for a message: keep the message for the
		// probe, or to hand back.
		c.next = msg
		<-c.slots
		return true
	}
	batch := []jetstream.Msg{msg}
more:
	for len(batch) < c.cfg.BatchSize {
		select {
		case c.slots <- struct{}{}:
		default:
			break more
		}
		select {
		case msg := <-c.in:
			batch = append(batch, msg)
		default:
			<-c.slots
			break more
		}
	}
	c.claim(batch)
	return true
}

// take returns the message kept back, or else the next one to arrive; false when the consumer
// is stopping.
func (c *Consumer) take() (jetstream.Msg, bool) {
	if msg := c.next; msg != nil {
		c.next = nil
		return msg, true
	}
	select {
	case msg := <-c.in:
		return msg, true
	case <-c.stopping:
		return nil, false
	}
}

// pause stops pulling while the circuit is open. The messages already pulled go back to the
// server, to come again when the probe may go; the rest stay in the stream, where no ack wait
// runs, so a long pause ends without a wave of redeliveries. Once the cooldown is over, pause
// pulls again and returns true; false when the consumer is stopping.
func (c *Consumer) pause() bool {
	c.mu.Lock()
	cc := c.cc
	c.mu.Unlock()
	cc.Drain() // passes what the client holds to receive, and so to the loop below
	drained := cc.Closed()
	if c.next != nil {
		c.next.NakWithDelay(c.pausedFor())
		c.next = nil
	}
	cooled := time.NewTimer(time.Until(time.Unix(0, c.probeAt.Load())))
	defer cooled.Stop()
	for due := false; !due || drained != nil; {
		select {
		case msg := <-c.in:
			msg.NakWithDelay(c.pausedFor())
		case <-drained:
			drained = nil
		case <-cooled.C:
			due = true
		case <-c.stopping:
			return false
		}
	}
	c.nakWaiting(c.pausedFor())
	for {
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			return false
		}
		cc, err := c.consume()
		if err == nil {
			c.cc = cc
		}
		c.mu.Unlock()
		if err == nil {
			return true
		}
		c.cfg.Log.Warn("cannot resume pulling; retrying", "channel", c.cfg.Channel, "err", err)
		select {
		case <-time.After(time.Second):
		case <-c.stopping:
			return false
		}
	}
}

// probe lets one delivery through the half-open circuit. It first takes every send slot, so
// that no send is in flight and the breaker has had its say on the last one (the previous
// probe, if any); then, if the circuit is still half-open, it claims a single message. It
// returns false when the consumer is stopping.
func (c *Consumer) probe() bool {
	held := 0
	defer func() {
		for range held {
			<-c.slots
		}
	}()
	for held < cap(c.slots) {
		select {
		case c.slots <- struct{}{}:
			held++
		case <-c.stopping:
			return false
		}
	}
	if c.breaker.State() != gobreaker.StateHalfOpen {
		return true
	}
	msg, ok := c.take()
	if !ok {
		return false
	}
	held-- // the probe keeps its slot until it is sent
	c.claim([]jetstream.Msg{msg})
	return true
}

func (c *Consumer) claim(batch []jetstream.Msg) {
	ids := make([]uuid.UUID, 0, len(batch))
	byID := make(map[uuid.UUID]jetstream.Msg, len(batch))
	for _, msg := range batch {
		id, err := queue.ParseBody(msg.Data())
		if err != nil {
			c.cfg.Log.Error("dropping malformed message", "channel", c.cfg.Channel, "err", err)
			msg.TermWithReason("malformed delivery id")
			<-c.slots
			continue
		}
		if _, dup := byID[id]; dup { // two publishes of one delivery in one batch
			msg.Ack()
			<-c.slots
			continue
		}
		ids = append(ids, id)
		byID[id] = msg
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	at := time.Now()
	claims, err := c.cfg.Store.Claim(ctx, c.cfg.WorkerID, c.cfg.Lease, ids)
	cancel()
	if err != nil {
		c.cfg.Log.Warn("claim failed; messages will come back", "channel", c.cfg.Channel, "count", len(ids), "err", err)
		for _, id := range ids {
			byID[id].NakWithDelay(time.Second)
			<-c.slots
		}
		return
	}
	var claimed []job
	for _, cl := range claims {
		msg := byID[cl.ID]
		switch cl.Status {
		case workers.Claimed:
			claimed = append(claimed, job{msg: msg, m: cl.Message, claimed: at}) // keeps its slot until sent
			continue
		case workers.Busy:
			msg.NakWithDelay(max(time.Until(cl.RetryAt), 0) + time.Second)
		case workers.Done:
			msg.Ack()
		}
		<-c.slots
	}
	c.dispatch(claimed)
}

// dispatch re-checks the claimed deliveries against the recipients' settings and hands the ones
// still wanted to the senders. If the check cannot be made, the claims are given back: an
// opt-out must not be missed for want of asking.
func (c *Consumer) dispatch(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	var skip map[uuid.UUID]string
	if c.cfg.Gate != nil {
		msgs := make([]*workers.Message, len(jobs))
		for i, j := range jobs {
			msgs[i] = j.m
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		skip, err = c.cfg.Gate.Check(ctx, msgs)
		if err != nil {
			c.cfg.Log.Warn("cannot re-check recipients; giving the deliveries back", "channel", c.cfg.Channel,
				"count", len(jobs), "err", err)
			ids := make([]uuid.UUID, len(jobs))
			for i, j := range jobs {
				ids[i] = j.m.DeliveryID
			}
			if err := c.cfg.Store.Release(ctx, c.cfg.WorkerID, ids); err != nil {
				c.cfg.Log.Warn("release failed; the leases will expire", "channel", c.cfg.Channel, "err", err)
			}
			cancel()
			for _, j := range jobs {
				j.msg.NakWithDelay(5 * time.Second)
				<-c.slots
			}
			return
		}
		cancel()
	}
	for _, j := range jobs {
		if reason, ok := skip[j.m.DeliveryID]; ok {
			<-c.slots
			c.cfg.Log.Info("skipped at send time", "delivery_id", j.m.DeliveryID, "channel", j.m.Channel, "reason", reason)
			c.done <- result{msg: j.msg, a: workers.Attempt{Message: j.m, Outcome: workers.OutcomeSkipped,
				Reason: reason, Started: time.Now()}}
			continue
		}
		c.cfg.Unsubscribe.Apply(j.m)
		c.work <- j
	}
}

// sendLoop calls the provider for claimed deliveries and passes the outcome to the recorder.
func (c *Consumer) sendLoop() {
	defer c.wg.Done()
	for j := range c.work {
		r := c.send(j)
		<-c.slots
		c.done <- r
	}
}

// send waits for the rate limiter and the circuit breaker, calls the provider and classifies
// its answer. A delivery that does not get to the provider, or whose provider blames Herald's
// configuration, is given back without counting an attempt.
func (c *Consumer) send(j job) result {
	m := j.m
	if c.limiter != nil {
		// The wait may use half of the lease that the send does not need; the rest is left for
		// recording the outcome.
		ctx, cancel := context.WithDeadline(c.quit, j.claimed.Add((c.cfg.Lease-c.cfg.SendTimeout)/2))
		err := c.limiter.Wait(ctx)
		cancel()
		if err != nil {
			delay := time.Duration(float64(c.cfg.Concurrency) / c.cfg.RatePerSecond * float64(time.Second))
			if c.quit.Err() != nil {
				delay = 0 // stopping: another worker may take it now
			}
			c.cfg.Log.Info("rate limit leaves no time to send; giving the delivery back", "delivery_id", m.DeliveryID,
				"channel", m.Channel, "err", err)
			return result{msg: j.msg, a: workers.Attempt{Message: m}, release: true, delay: delay}
		}
	}
	report, err := c.breaker.Allow()
	if err != nil { // open, or the probe is already out
		c.cfg.Log.Info("circuit open; giving the delivery back", "delivery_id", m.DeliveryID, "channel", m.Channel)
		return result{msg: j.msg, a: workers.Attempt{Message: m}, release: true, delay: c.pausedFor()}
	}

	ctx, span := tracing.Tracer().Start(tracing.Extract(context.Background(), j.msg.Headers()), "send "+string(m.Channel),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("herald.delivery_id", m.DeliveryID.String()),
			attribute.String("herald.provider", c.cfg.Sender.Provider()),
			attribute.Int("herald.attempt", m.Attempt)))
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SendTimeout)
	start := time.Now()
	res, err := c.cfg.Sender.Send(ctx, m)
	a := workers.Attempt{Message: m, Provider: c.cfg.Sender.Provider(), Started: start, Latency: time.Since(start)}
	cancel()
	if err != nil {
		span.SetStatus(codes.Error, "provider refused or failed") // the error text may name the provider's reason only
	}
	span.End()
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.ProviderDuration.WithLabelValues(string(m.Channel), a.Provider).Observe(a.Latency.Seconds())
	}
	if err == nil {
		c.sent.Add(1)
	} else {
		c.failed.Add(1)
	}

	var ce *workers.ConfigError
	if errors.As(err, &ce) {
		c.configError.Store(true)
		report(err)
		c.configError.Store(false)
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.ConfigErrors.WithLabelValues(string(m.Channel), a.Provider).Inc()
		}
		c.cfg.Log.Error("provider configuration error; channel paused", "channel", m.Channel, "provider", a.Provider,
			"delivery_id", m.DeliveryID, "err", err)
		return result{msg: j.msg, a: a, release: true, delay: c.pausedFor()}
	}
	report(err)

	var retryAfter time.Duration
	a.Outcome, a.Reason, retryAfter = workers.Classify(err)
	a.Reason = storable(a.Reason, maxReason)
	if err != nil {
		a.Error = storable(err.Error(), maxErrorText)
	}
	switch a.Outcome {
	case workers.OutcomeSent:
		a.ProviderMessageID = storable(res.ProviderMessageID, maxProviderMessageID)
	case workers.OutcomeFailed:
		var perm *workers.PermanentError
		if errors.As(err, &perm) {
			a.Effect, a.Since = perm.Effect, perm.Since
		}
	case workers.OutcomeRetry:
		if m.Attempt >= c.cfg.Policy.MaxAttempts {
			a.Dead = true
		} else {
			a.RetryAt = time.Now().Add(c.cfg.Policy.Backoff(m.Attempt, retryAfter, c.cfg.Jitter()))
		}
	}
	c.cfg.Log.Info("attempt", "delivery_id", m.DeliveryID, "channel", m.Channel, "attempt", m.Attempt,
		"provider", a.Provider, "outcome", outcomeName(a), "reason", a.Reason, "latency_ms", a.Latency.Milliseconds())
	return result{msg: j.msg, a: a}
}

func outcomeName(a workers.Attempt) string {
	switch {
	case a.Outcome == workers.OutcomeSent:
		return "sent"
	case a.Outcome == workers.OutcomeFailed:
		return "failed"
	case a.Outcome == workers.OutcomeSkipped:
		return "skipped"
	case a.Dead:
		return "dead"
	}
	return "retry"
}

// recordLoop writes outcomes in batches and acknowledges their messages once written. If the
// database stays unreachable, the messages are left to come back: the lease then expires, and
// the delivery may be sent again (a duplicate, never a loss).
func (c *Consumer) recordLoop() {
	defer c.recorded.Done()
	for r := range c.done {
		batch := []result{r}
	more:
		for len(batch) < c.cfg.BatchSize {
			select {
			case r, ok := <-c.done:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.record(batch)
	}
}

func (c *Consumer) record(batch []result) {
	var recorded, released []result
	for _, r := range batch {
		if r.release {
			released = append(released, r)
		} else {
			recorded = append(recorded, r)
		}
	}
	if len(released) > 0 {
		c.release(released)
	}
	if len(recorded) > 0 {
		c.recordAttempts(recorded)
	}
}

// release gives deliveries back unrecorded, their attempt not counted, and lets their
// messages come back after their delay.
func (c *Consumer) release(batch []result) {
	ids := make([]uuid.UUID, len(batch))
	for i, r := range batch {
		ids[i] = r.a.Message.DeliveryID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.cfg.Store.Release(ctx, c.cfg.WorkerID, ids)
	cancel()
	if err != nil {
		c.cfg.Log.Warn("release failed; the leases will expire", "channel", c.cfg.Channel, "count", len(ids), "err", err)
	}
	for _, r := range batch {
		r.msg.NakWithDelay(r.delay)
	}
}

func (c *Consumer) recordAttempts(batch []result) {
	attempts := make([]workers.Attempt, len(batch))
	for i, r := range batch {
		attempts[i] = r.a
	}
	wait := 100 * time.Millisecond
	deadline := time.Now().Add(c.cfg.Lease / 2)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.cfg.Store.Record(ctx, c.cfg.WorkerID, attempts)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.cfg.Log.Error("cannot record outcomes; their deliveries will be retried", "channel", c.cfg.Channel,
				"count", len(batch), "err", err)
			for _, r := range batch {
				r.msg.Nak()
			}
			return
		}
		c.cfg.Log.Warn("record failed; retrying", "channel", c.cfg.Channel, "count", len(batch), "err", err)
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
	for _, r := range batch {
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.recorded(c.cfg.Sender.Provider(), r.a)
		}
		if r.a.Effect != workers.NoEffect && c.cfg.Announcer != nil {
			c.announce("a provider's verdict on an address", r.a, c.cfg.Announcer.Announce)
		}
		if r.a.Dead {
			m := r.a.Message
			c.cfg.Log.Warn("dead letter", "delivery_id", m.DeliveryID, "channel", m.Channel, "attempts", m.Attempt,
				"provider", r.a.Provider, "reason", r.a.Reason, "err", r.a.Error)
			if c.cfg.Announcer != nil {
				c.announce("a dead letter", r.a, c.cfg.Announcer.DeadLetter)
			}
		}
	}
	for _, r := range batch {
		if r.a.Outcome == workers.OutcomeRetry && !r.a.Dead {
			r.msg.NakWithDelay(time.Until(r.a.RetryAt))
		} else {
			r.msg.Ack()
		}
	}
}

// announce publishes a fact about an attempt, retrying briefly. A lost announcement costs an
// attempt on a dead address later, or a dead letter noticed from the database instead of the
// event, not a notification.
func (c *Consumer) announce(what string, a workers.Attempt, publish func(context.Context, workers.Attempt) error) {
	var err error
	for try := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = publish(ctx, a)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	c.cfg.Log.Error("cannot announce "+what, "delivery_id", a.Message.DeliveryID, "effect", a.Effect, "err", err)
}

// Stop stops pulling, hands back messages not yet claimed, lets the provider calls in flight
// finish, records them, gives back the deliveries still waiting for the rate limiter, and
// returns once every message is answered.
func (c *Consumer) Stop() {
	close(c.stopping)
	c.stopQuit()
	c.mu.Lock()
	c.stopped = true // the claim loop starts no new pull after a pause
	cc := c.cc
	c.mu.Unlock()
	// Drain, not Stop: Stop drops the messages already pulled into the client's buffer, which
	// the server then holds for a whole AckWait; Drain passes them to receive, which hands them
	// back at once.
	cc.Drain()
	<-cc.Closed()
	c.wg.Wait()
	c.nakWaiting(0)
	close(c.done)
	c.recorded.Wait()
	// Anything the callback could not hand over was Nak'd by receive.
}

// nakWaiting hands back the messages waiting in c.in, to come again after delay.
func (c *Consumer) nakWaiting(delay time.Duration) {
	for {
		select {
		case msg := <-c.in:
			msg.NakWithDelay(delay)
		default:
			return
		}
	}
}

// Counts returns the provider calls this consumer made that the provider accepted, and those
// that failed, since it started.
func (c *Consumer) Counts() (sent, failed int64) { return c.sent.Load(), c.failed.Load() }

// Channel returns the channel the consumer serves.
func (c *Consumer) Channel() delivery.Channel { return c.cfg.Channel }

// Provider names the channel's provider.
func (c *Consumer) Provider() string { return c.cfg.Sender.Provider() }
