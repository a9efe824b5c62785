package ratelimit_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/ratelimit"
)

// chunk is the most tokens one replica leases at once (see the package comment).
func chunk(rate float64, burst int) float64 {
	return max(1, min(float64(burst), math.Ceil(rate/10)))
}

// hammer calls AllowRequest from several goroutines per limiter, far faster than rate, for
// about d, and returns the requests allowed and the time measured around the whole run.
func hammer(t *testing.T, limiters []*ratelimit.Limiter, app string, rate float64, burst int, d time.Duration) (allowed int64, elapsed time.Duration) {
	t.Helper()
	const goroutines = 4
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for _, l := range limiters {
		for range goroutines {
			wg.Go(func() {
				for time.Now().Before(stop) {
					ok, retryAfter, err := l.AllowRequest(context.Background(), app, rate, burst)
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						n.Add(1)
						continue
					}
					if retryAfter <= 0 {
						t.Errorf("refused with retry-after %v", retryAfter)
						return
					}
					// Still thousands of attempts a second per goroutine.
					time.Sleep(min(retryAfter, 200*time.Microsecond))
				}
			})
		}
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

// Two replicas on separate connections together stay within the shared bucket's bound.
func TestAllowRequestTwoReplicas(t *testing.T) {
	s := natstest.Start(t)
	replicas := []*ratelimit.Limiter{newLimiter(t, s, ratelimit.Config{}), newLimiter(t, s, ratelimit.Config{})}
	const rate, burst = 300.0, 30
	allowed, elapsed := hammer(t, replicas, "app-1", rate, burst, 1500*time.Millisecond)
	upper := float64(burst) + rate*elapsed.Seconds() + float64(len(replicas))*chunk(rate, burst)
	t.Logf("%d allowed in %v (bound %.0f)", allowed, elapsed, upper)
	if float64(allowed) > upper {
		t.Errorf("%d allowed in %v, more than burst + rate*elapsed + replicas*chunk = %.0f", allowed, elapsed, upper)
	}
	if allowed == 0 {
		t.Error("nothing allowed")
	}
}

// One replica asked far above the rate is held to about the rate: no more than the bound, and
// not starved either.
func TestAllowRequestThrottlesToTheRate(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	const rate, burst = 500.0, 50
	allowed, elapsed := hammer(t, []*ratelimit.Limiter{l}, "app-1", rate, burst, 1500*time.Millisecond)
	upper := float64(burst) + rate*elapsed.Seconds() + chunk(rate, burst)
	lower := rate * elapsed.Seconds() / 2
	t.Logf("%d allowed in %v (expected between %.0f and %.0f)", allowed, elapsed, lower, upper)
	if float64(allowed) > upper {
		t.Errorf("%d allowed in %v, more than burst + rate*elapsed + chunk = %.0f", allowed, elapsed, upper)
	}
	if float64(allowed) < lower {
		t.Errorf("%d allowed in %v, under half the rate (%.0f)", allowed, elapsed, lower)
	}
}

// At a rate of one per 100 s, the burst is all there is: it goes, then requests are refused
// with a retry-after no longer than a token takes.
func TestAllowRequestBurstThenRefuse(t *testing.T) {
	s := natstest.Start(t)
	a, b := newLimiter(t, s, ratelimit.Config{}), newLimiter(t, s, ratelimit.Config{})
	const rate, burst = 0.01, 5
	ctx := context.Background()
	allowed := 0
	for i := range 2 * burst {
		l := a
		if i%2 == 1 {
			l = b
		}
		ok, retryAfter, err := l.AllowRequest(ctx, "app-1", rate, burst)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
			continue
		}
		if retryAfter <= 0 || retryAfter > 100*time.Second {
			t.Errorf("request %d refused with retry-after %v, want (0, 100s]", i, retryAfter)
		}
	}
	if allowed != burst {
		t.Errorf("%d allowed, want the burst of %d", allowed, burst)
	}
	// Another app has a bucket of its own.
	if ok, _, err := a.AllowRequest(ctx, "app-2", rate, burst); err != nil || !ok {
		t.Errorf("other app: ok %v, err %v", ok, err)
	}
}

func TestAllowRequestInvalid(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	for name, args := range map[string]struct {
		rate  float64
		burst int
	}{
		"zero rate":  {0, 10},
		"NaN rate":   {math.NaN(), 10},
		"inf rate":   {math.Inf(1), 10},
		"zero burst": {10, 0},
	} {
		if _, _, err := l.AllowRequest(context.Background(), "app", args.rate, args.burst); !errors.Is(err, ratelimit.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
