package ratelimit_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/ratelimit"
)

// Take on a key of its own per goroutine, each call an update (read + compare-and-swap).
func BenchmarkTake(b *testing.B) {
	l := newLimiter(b, natstest.Start(b), ratelimit.Config{})
	var users atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := ratelimit.CapKey(strconv.FormatInt(users.Add(1), 10), "marketing", "email")
		at := time.Now()
		for pb.Next() {
			at = at.Add(time.Hour)
			if _, err := l.Take(context.Background(), []ratelimit.Cap{{Key: key, Limit: 3, Window: time.Hour, At: at}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Take with four caps (one per channel) in one call, one goroutine: the latency a send sees.
func BenchmarkTakeFourCaps(b *testing.B) {
	l := newLimiter(b, natstest.Start(b), ratelimit.Config{})
	var caps []ratelimit.Cap
	for _, ch := range []string{"ios", "android", "sms", "email"} {
		caps = append(caps, ratelimit.Cap{Key: ratelimit.CapKey("user", "marketing", ch), Limit: 3, Window: time.Hour})
	}
	at := time.Now()
	for b.Loop() {
		at = at.Add(time.Hour)
		for i := range caps {
			caps[i].At = at
		}
		if _, err := l.Take(context.Background(), caps); err != nil {
			b.Fatal(err)
		}
	}
}

// AllowRequest at a high rate: almost every call is answered from the replica's lease.
func BenchmarkAllowRequest(b *testing.B) {
	l := newLimiter(b, natstest.Start(b), ratelimit.Config{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := l.AllowRequest(context.Background(), "app", 1e9, 1e6); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// AllowRequest with a burst of one: every call leases from the shared bucket (the worst case).
func BenchmarkAllowRequestLeaseEachCall(b *testing.B) {
	l := newLimiter(b, natstest.Start(b), ratelimit.Config{})
	for b.Loop() {
		if _, _, err := l.AllowRequest(context.Background(), "app", 1e9, 1); err != nil {
			b.Fatal(err)
		}
	}
}
