package memstore

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/deliverytest"
)

func TestContract(t *testing.T) {
	deliverytest.Run(t, func(t *testing.T) deliverytest.Harness {
		s := New()
		s.ReleaseGrace = 7 * time.Minute
		s.Now = ticking(time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC))
		return harness(s)
	})
}

// ticking is a clock that starts at start and moves on a millisecond every time it is read, so
// that two readings never fall on the same instant and no test waits for real time.
func ticking(start time.Time) func() time.Time {
	var mu sync.Mutex
	now := start
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

// harness is the contract's way around s, through its fields.
func harness(s *Store) deliverytest.Harness {
	return deliverytest.Harness{
		Store:        s,
		ReleaseGrace: s.ReleaseGrace,
		Now:          func(*testing.T) time.Time { return s.Now() },
		Seed: func(t *testing.T, r deliverytest.Row) {
			t.Helper()
			s.mu.Lock()
			defer s.mu.Unlock()
			if _, ok := s.deliveries[r.ID]; ok {
				t.Fatalf("seed delivery %s: exists already", r.ID)
			}
			content, err := json.Marshal(r.Content)
			if err != nil {
				t.Fatalf("seed delivery %s: %v", r.ID, err)
			}
			d := r.Delivery
			d.Content = delivery.Content{}
			s.deliveries[r.ID] = &row{Delivery: d, content: content, leaseOwner: r.LeaseOwner, publishes: r.Publishes, published: !r.Unpublished}
		},
		Get: func(t *testing.T, id uuid.UUID) deliverytest.Row {
			t.Helper()
			s.mu.Lock()
			defer s.mu.Unlock()
			r, ok := s.deliveries[id]
			if !ok {
				t.Fatalf("delivery %s not found", id)
			}
			return deliverytest.Row{Delivery: r.copy(), LeaseOwner: r.leaseOwner, Publishes: r.publishes, Unpublished: !r.published}
		},
		Log: func(_ *testing.T, id uuid.UUID) []deliverytest.Logged {
			var log []deliverytest.Logged
			for _, a := range s.Attempts(id) {
				log = append(log, deliverytest.Logged{
					Drive: a.Drive, Attempt: a.Attempt.Attempt, Worker: a.Worker, Provider: a.Provider,
					Outcome: a.State.Outcome(), Reason: a.Reason, Error: a.Error, ProviderMessageID: a.ProviderMessageID,
					Started: a.Started, Latency: a.Latency,
				})
			}
			return slices.Clip(log)
		},
	}
}
