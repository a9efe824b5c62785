package links

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Limiter is a token bucket per client address: Rate requests a second, Burst at once. Buckets
// idle long enough to be full again are forgotten, so memory follows the clients of the last
// few seconds, not every client ever seen.
type Limiter struct {
	rate  float64
	burst float64
	seed  maphash.Seed

	shards [cacheShards]limitShard
}

type limitShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter returns a Limiter; rate <= 0 lets everything through.
func NewLimiter(rate float64, burst int) *Limiter {
	l := &Limiter{rate: rate, burst: float64(max(burst, 1)), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = map[string]*bucket{}
	}
	return l
}

// Allow takes a token from client's bucket at now, or says how long until one is there.
func (l *Limiter) Allow(client string, now time.Time) (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	s := &l.shards[maphash.String(l.seed, client)%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	refill := time.Duration(l.burst / l.rate * float64(time.Second))
	if now.Sub(s.swept) > refill && len(s.buckets) > 0 {
		for k, b := range s.buckets {
			if now.Sub(b.at) > refill {
				delete(s.buckets, k)
			}
		}
		s.swept = now
	}
	b, ok := s.buckets[client]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		s.buckets[client] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}
