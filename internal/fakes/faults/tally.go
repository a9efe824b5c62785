package faults

import (
	"sync"
	"time"
)

// Tally counts the messages a fake accepted, and holds its count-only mode: for load tests that
// send more messages than are worth keeping, each accepted message is reported instead of kept.
// The zero Tally keeps everything. It is safe for concurrent use.
type Tally struct {
	mu        sync.Mutex
	accepted  int64
	countOnly bool
	onAccept  func(id string, at time.Time)
}

// CountOnly switches the fake to counting only: from then on it keeps no message and calls
// onAccept, when not nil, with the id of each accepted message (what id is the fake's to say)
// and the time the fake received it. onAccept is called from the request's goroutine, outside
// the fake's lock, and must be safe for concurrent use. Reset does not undo CountOnly.
func (t *Tally) CountOnly(onAccept func(id string, at time.Time)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countOnly, t.onAccept = true, onAccept
}

// Accepted returns how many messages the fake accepted, in either mode.
func (t *Tally) Accepted() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.accepted
}

// Accept counts n accepted messages. It reports whether the fake keeps them and, in count-only
// mode, the function to report each to instead (nil when there is none).
func (t *Tally) Accept(n int) (keep bool, report func(id string, at time.Time)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.accepted += int64(n)
	if !t.countOnly {
		return true, nil
	}
	return false, t.onAccept
}

// Reset sets the count of accepted messages back to zero.
func (t *Tally) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.accepted = 0
}
