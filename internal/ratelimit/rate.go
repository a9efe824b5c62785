package ratelimit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// leaseTTL is how long a replica may spend the tokens it leased: an idle replica must not
// spend a hoard later on top of what the bucket gives the others.
const leaseTTL = time.Second

// appState is one replica's view of one app's bucket.
type appState struct {
	mu          sync.Mutex
	tokens      int        // leased and not spent
	expires     time.Time  // when the leased tokens become void
	used        int        // tokens spent from the current lease: sizes the next one
	deniedUntil time.Time  // the shared bucket cannot fill a lease before this
	lease       *leaseCall // the lease in flight, if any
}

// leaseCall lets the callers that arrive during a lease wait for it instead of leasing too.
type leaseCall struct {
	done chan struct{}
	err  error
}

// AllowRequest takes one token from app's bucket, which refills at ratePerSecond up to burst
// tokens and is shared by every replica, and reports whether the request may go ahead. A
// refused request gets the time after which this replica will ask the shared bucket again.
// Most calls answer from tokens this replica leased earlier, without a round trip (see the
// package comment for the bounds this implies). It returns an error wrapping ErrInvalid for a
// rate or burst below the minimum, and one wrapping ErrUnavailable if the store does not
// answer in time.
func (l *Limiter) AllowRequest(ctx context.Context, app string, ratePerSecond float64, burst int) (ok bool, retryAfter time.Duration, err error) {
	if !(ratePerSecond >= 1e-6) || math.IsInf(ratePerSecond, 1) || burst < 1 {
		return false, 0, fmt.Errorf("%w: app %s: rate %v per second, burst %d", ErrInvalid, app, ratePerSecond, burst)
	}
	st := l.app(app)
	st.mu.Lock()
	ok, retryAfter, local := st.spend(time.Now())
	st.mu.Unlock()
	if local {
		return ok, retryAfter, nil
	}
	// From here on the store may be involved: bound the wait.
	ctx, cancel := l.bound(ctx)
	defer cancel()
	for {
		st.mu.Lock()
		if ok, retryAfter, local := st.spend(time.Now()); local {
			st.mu.Unlock()
			return ok, retryAfter, nil
		}
		if call := st.lease; call != nil {
			st.mu.Unlock()
			select {
			case <-call.done:
				if call.err != nil {
					return false, 0, call.err
				}
				continue
			case <-ctx.Done():
				return false, 0, unavailable("wait for lease of "+app, ctx.Err())
			}
		}

		// Lease a chunk, handing back what expired unspent.
		giveBack := st.tokens
		want := min(chunk(ratePerSecond, burst), max(1, 2*st.used))
		call := &leaseCall{done: make(chan struct{})}
		st.tokens, st.lease = 0, call
		st.mu.Unlock()

		got, wait, err := l.lease(ctx, "rate."+escape(app), ratePerSecond, burst, want, giveBack)

		st.mu.Lock()
		st.lease = nil
		now := time.Now()
		switch {
		case err != nil:
			call.err = err
		case got == 0:
			st.deniedUntil = now.Add(wait)
		default:
			st.tokens, st.expires, st.used = got-1, now.Add(leaseTTL), 1
		}
		st.mu.Unlock()
		close(call.done)
		return got > 0, wait, err
	}
}

// spend answers from this replica's lease when it can: local is false if the shared bucket
// must be asked. The caller holds st.mu.
func (st *appState) spend(now time.Time) (ok bool, retryAfter time.Duration, local bool) {
	if st.tokens > 0 && now.Before(st.expires) {
		st.tokens--
		st.used++
		return true, 0, true
	}
	if now.Before(st.deniedUntil) {
		return false, st.deniedUntil.Sub(now), true
	}
	return false, 0, false
}

// chunk is the most tokens a replica leases at once: about 100 ms of the rate.
func chunk(rate float64, burst int) int {
	return int(max(1, min(float64(burst), math.Ceil(rate/10))))
}

func (l *Limiter) app(app string) *appState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.apps[app]
	if st == nil {
		st = &appState{}
		l.apps[app] = st
	}
	return st
}

// lease takes up to want tokens (at least one) from the shared bucket at key, after adding
// giveBack unspent ones. If the bucket holds less than one token it takes none and returns how
// long the bucket needs to refill want tokens.
func (l *Limiter) lease(ctx context.Context, key string, rate float64, burst, want, giveBack int) (int, time.Duration, error) {
	for attempt := 0; ; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return 0, 0, err
		}
		value, rev, err := l.get(ctx, key)
		if err != nil {
			return 0, 0, err
		}
		now := time.Now()
		// A missing key is a full bucket: keys expire only once their bucket has refilled.
		tokens, at := float64(burst), now
		if t, a, ok := decodeBucket(value); ok {
			tokens, at = t, a
			// A clock behind the last writer's refills nothing, and does not move time back.
			if now.After(at) {
				tokens += rate * now.Sub(at).Seconds()
				at = now
			}
		}
		tokens = min(float64(burst), tokens+float64(giveBack))
		got := min(want, int(tokens))
		if got < 1 {
			return 0, seconds((float64(want) - tokens) / rate), nil
		}
		tokens -= float64(got)
		// The key can go once the bucket would be full again.
		ttl := min(seconds((float64(burst)-tokens)/rate)+ttlSlack, l.cfg.MaxWindow+ttlSlack)
		err = l.put(ctx, key, encodeBucket(tokens, at), rev, ttl)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		return got, 0, nil
	}
}

// seconds converts s seconds to a Duration, clamped to [0, a year].
func seconds(s float64) time.Duration {
	const year = 365 * 24 * time.Hour
	if !(s > 0) {
		return 0
	}
	if s >= year.Seconds() {
		return year
	}
	return time.Duration(s * float64(time.Second))
}

const bucketVersion = 1

// encodeBucket stores a bucket's state: a version byte, the tokens as a big-endian float64 and
// the time they were counted as a varint of Unix microseconds.
func encodeBucket(tokens float64, at time.Time) []byte {
	b := make([]byte, 0, 1+8+binary.MaxVarintLen64)
	b = append(b, bucketVersion)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(tokens))
	return binary.AppendVarint(b, at.UnixMicro())
}

// decodeBucket reads what encodeBucket wrote; ok is false for anything else (such as a missing
// key), which the caller treats as a full bucket.
func decodeBucket(b []byte) (tokens float64, at time.Time, ok bool) {
	if len(b) < 1+8+1 || b[0] != bucketVersion {
		return 0, time.Time{}, false
	}
	tokens = math.Float64frombits(binary.BigEndian.Uint64(b[1:9]))
	us, n := binary.Varint(b[9:])
	if n != len(b)-9 || math.IsNaN(tokens) || tokens < 0 {
		return 0, time.Time{}, false
	}
	return tokens, time.UnixMicro(us), true
}
