package route

import (
	"errors"
	"sync"
	"time"

	"github.com/heraldhq/herald/services/workers"
)

// breaker is one credential's circuit. It opens after a run of failures (at once on a
// configuration error), which sends the channel's deliveries to the next credential; once its
// cooldown has passed, one send probes it, and closes it again if the provider answered.
// It reads the time it is given, so tests drive it without waiting.
type breaker struct {
	failures int
	cooldown time.Duration
	onChange func(state)

	mu        sync.Mutex
	st        state
	run       int       // failures in a row
	openUntil time.Time // when an open circuit lets a probe through
	probing   bool
}

type state int

const (
	closed state = iota
	halfOpen
	open
)

func (s state) String() string {
	return [...]string{"closed", "half-open", "open"}[s]
}

// allow says whether a send may go at now, and whether it is the probe of an open circuit.
func (b *breaker) allow(now time.Time) (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.st {
	case closed:
		return true, false
	case open:
		if now.Before(b.openUntil) {
			return false, false
		}
		b.set(halfOpen)
	}
	if b.probing {
		return false, false
	}
	b.probing = true
	return true, true
}

// cancel returns a probe that was not sent after all (the rate budget held it back).
func (b *breaker) cancel(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// report counts a send's answer at now. The provider answered well when it took the message or
// refused it for a reason of the message's own; anything else counts towards opening.
func (b *breaker) report(now time.Time, err error, probe bool) {
	var perm *workers.PermanentError
	var ce *workers.ConfigError
	good := err == nil || errors.As(err, &perm)
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if good {
		b.run = 0
		if b.st == halfOpen && probe {
			b.set(closed)
		}
		return
	}
	b.run++
	if b.st == halfOpen && probe || b.st == closed && (b.run >= b.failures || errors.As(err, &ce)) {
		b.openUntil = now.Add(b.cooldown)
		b.set(open)
	}
}

// heldFor returns how long the circuit stays open from now, 0 when it is not open.
func (b *breaker) heldFor(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.st != open {
		return 0
	}
	return max(b.openUntil.Sub(now), 0)
}

func (b *breaker) state() state {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

// set changes the state; b.mu is held.
func (b *breaker) set(s state) {
	if b.st == s {
		return
	}
	b.st = s
	if b.onChange != nil {
		b.onChange(s)
	}
}
