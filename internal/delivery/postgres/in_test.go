package postgres_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// TestIn: a store In a transaction makes its transitions in it, to commit or roll back with
// whatever else the transaction writes, with the store's settings.
func TestIn(t *testing.T) {
	s, pool := newStore(t)
	s.ReleaseGrace = 7 * time.Minute
	ctx := t.Context()
	now := time.Now()
	d := delivery.Delivery{ID: uuid.Must(uuid.NewV7()), NotificationID: uuid.Must(uuid.NewV7()), Channel: delivery.Email,
		To: "ada@example.com", Category: "account", Priority: delivery.Normal, State: delivery.Queued,
		DueAt: &now, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
	stored := func() int {
		t.Helper()
		ds, err := s.OfNotification(ctx, d.NotificationID)
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}

	for _, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := s.In(tx)
		if err := in.Create(ctx, []delivery.Delivery{d}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if ds, err := in.OfNotification(ctx, d.NotificationID); err != nil || len(ds) != 1 {
			t.Fatalf("OfNotification in the transaction = %d deliveries, %v; want 1", len(ds), err)
		}
		if n := stored(); n != 0 {
			t.Fatalf("%d deliveries seen outside the transaction before its commit", n)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n, want := stored(), map[bool]int{true: 1}[commit]; n != want {
			t.Fatalf("commit %v: %d deliveries stored, want %d", commit, n, want)
		}
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	in := s.In(tx)
	if got, err := in.Claim(ctx, "worker-a", time.Minute, []uuid.UUID{d.ID}); err != nil || len(got) != 1 {
		t.Fatalf("Claim in the transaction = %d deliveries, %v", len(got), err)
	}
	if err := in.Release(ctx, "worker-a", []uuid.UUID{d.ID}); err != nil {
		t.Fatal(err)
	}
	var grace time.Duration
	if err := tx.QueryRow(ctx, `SELECT due_at - now() FROM delivery.deliveries WHERE id = $1`, d.ID).Scan(&grace); err != nil || grace != s.ReleaseGrace {
		t.Errorf("released in the transaction due %v after now (%v), want the store's grace %v", grace, err, s.ReleaseGrace)
	}
}
