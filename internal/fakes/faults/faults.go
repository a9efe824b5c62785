// Package faults is the misbehaviour a provider fake can be told to show, shared by every fake in
// internal/fakes: the next requests fail with a scripted answer or lose their connection, every
// request waits, and the requests are counted. Handler applies it to an HTTP fake before the
// fake's own handler runs; the SMTP fake applies it per phase of its own protocol. What a failure
// looks like on the wire is each fake's own business.
package faults

import (
	"sync"
	"time"
)

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until it is
// cleared or Reset.
const Always = -1

// Countdown is how many more times a misbehaviour happens: it stops at zero, and a negative
// count (Always) never runs out. It does no locking of its own.
type Countdown int

// Take reports whether the misbehaviour happens once more, and uses up one time.
func (c *Countdown) Take() bool {
	if *c == 0 {
		return false
	}
	if *c > 0 {
		*c--
	}
	return true
}

// Faults is the scripted misbehaviour of one endpoint (or one SMTP phase). E is the fake's
// failure answer: an HTTP status, a provider's error code, an error value; its zero value means
// no failure. The zero Faults misbehaves in no way. Faults is safe for concurrent use.
type Faults[E comparable] struct {
	mu                sync.Mutex
	fail              E
	failLeft          Countdown
	dropLeft          Countdown
	delay             time.Duration
	retryAfter        time.Duration
	defaultRetryAfter time.Duration
	requests          int
}

// New returns Faults whose rate-limit answers ask clients to wait retryAfter, until
// SetRetryAfter; Reset restores it.
func New[E comparable](retryAfter time.Duration) *Faults[E] {
	return &Faults[E]{retryAfter: retryAfter, defaultRetryAfter: retryAfter}
}

// Action is what to do with one request: wait Delay, then lose the connection (Drop), answer
// Fail (when it is not the zero E) or handle the request. RetryAfter is what a rate-limit
// answer asks for.
type Action[E comparable] struct {
	Delay      time.Duration
	Drop       bool
	Fail       E
	RetryAfter time.Duration
}

// Fail makes the next n requests (or every one, if n is Always) answer e instead of being
// handled. Fail with the zero E, or with n 0, stops failing.
func (f *Faults[E]) Fail(e E, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.failLeft = e, Countdown(n)
}

// Drop makes the next n requests (or every one, if n is Always) lose their connection without
// an answer. A drop comes before any failure.
func (f *Faults[E]) Drop(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLeft = Countdown(n)
}

// SetDelay makes every request wait d (or until the client gives up) before it is handled.
func (f *Faults[E]) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// SetRetryAfter sets the wait that rate-limit answers ask for, in protocols that have one (sent
// in whole seconds, rounded up; see Seconds).
func (f *Faults[E]) SetRetryAfter(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retryAfter = d
}

// RetryAfter returns the wait that rate-limit answers ask for.
func (f *Faults[E]) RetryAfter() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.retryAfter
}

// Requests returns how many requests have been taken, whatever was done with them.
func (f *Faults[E]) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// Reset clears every misbehaviour and the request count, and restores New's retryAfter.
func (f *Faults[E]) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	var none E
	f.fail, f.failLeft, f.dropLeft, f.delay = none, 0, 0, 0
	f.retryAfter, f.requests = f.defaultRetryAfter, 0
}

// Take counts one request and returns what to do with it, using up one drop or, failing that,
// one failure.
func (f *Faults[E]) Take() Action[E] {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	a := Action[E]{Delay: f.delay, RetryAfter: f.retryAfter}
	var none E
	switch {
	case f.dropLeft.Take():
		a.Drop = true
	case f.fail != none && f.failLeft.Take():
		a.Fail = f.fail
	}
	return a
}

// Sleep waits d, or until done is closed; it reports whether it waited all of d.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// Seconds is d in whole seconds, rounded up, as Retry-After carries it.
func Seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
