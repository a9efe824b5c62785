package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/deliverytest"
)

// TestClaimMerged: calls merged into one statement each get the claims of their own ids, and a
// delivery that several of them name goes to one only, as it would had they come one by one:
// two consumers of one worker holding it would both send it.
func TestClaimMerged(t *testing.T) {
	s, pool := newStore(t)
	now := time.Now()
	var a, b, c uuid.UUID
	for _, id := range []*uuid.UUID{&a, &b, &c} {
		*id = uuid.Must(uuid.NewV7())
		if err := seed(t.Context(), pool, deliverytest.Row{Delivery: delivery.Delivery{
			ID: *id, NotificationID: uuid.Must(uuid.NewV7()), Channel: delivery.SMS, To: "+14155550123",
			Category: "account", Priority: delivery.Normal, State: delivery.Queued,
			DueAt: &now, ExpiresAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now,
		}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ClaimMerged(t.Context(), "worker-a", time.Minute, []uuid.UUID{a, b}, []uuid.UUID{b, c, c}, []uuid.UUID{a})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]uuid.UUID{{a, b}, {c}, nil}
	for i := range want {
		var ids []uuid.UUID
		for _, d := range got[i] {
			ids = append(ids, d.ID)
		}
		if !slices.Equal(ids, want[i]) {
			t.Errorf("call %d got %v, want %v", i, ids, want[i])
		}
	}
}
