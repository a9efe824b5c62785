package links

import (
	"context"
	"sync"
	"time"
)

// BlockSize is how many sequence numbers one reservation holds: the sequence in PostgreSQL
// advances by BlockSize, so one round trip serves BlockSize links.
const BlockSize = 1000

// Allocator issues link ids from blocks of sequence numbers reserved in PostgreSQL, so that ids
// are unique across replicas with one database round trip per BlockSize links.
type Allocator struct {
	// Reserve returns the first number of a fresh block of BlockSize (the sequence's nextval).
	Reserve func(ctx context.Context) (int64, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	next, end int64
}

// IDs returns n fresh link ids. Errors: those of Reserve.
func (a *Allocator) IDs(ctx context.Context, n int) ([]int64, error) {
	if n == 0 {
		return nil, nil
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	out := make([]int64, 0, n)
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(out) < n {
		if a.next >= a.end {
			// Held under the lock: callers queue behind one reservation instead of each
			// reserving a block of its own.
			first, err := a.Reserve(ctx)
			if err != nil {
				return nil, err
			}
			a.next, a.end = first, first+BlockSize
		}
		take := min(int64(n-len(out)), a.end-a.next)
		t := now()
		for i := int64(0); i < take; i++ {
			out = append(out, MakeID(t, a.next+i))
		}
		a.next += take
	}
	return out, nil
}
