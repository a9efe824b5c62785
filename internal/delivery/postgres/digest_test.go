package postgres_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/ids"
)

// TestPruneDigests: a digest closed before the cutoff goes; an open one stays however old, and
// so does one closed after the cutoff.
func TestPruneDigests(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	old := now.Add(-100 * day)
	cutoff := now.Add(-90 * day)
	digests := []struct {
		name   string
		closed *time.Time
		stays  bool
	}{
		{"closed long ago", &old, false},
		{"open long ago", nil, true},
		{"opened long ago, closed lately", ptr(now.Add(-time.Hour)), true},
	}
	for i, d := range digests {
		id := ids.NewV7At(old.Add(time.Duration(i) * time.Minute))
		if _, err := pool.Exec(ctx, `INSERT INTO delivery.digests (id, app_id, user_id, category, channel, address,
			template, close_at, created_at, closed, closed_at) VALUES ($1, $1, $2, 'news', 'email', 'a@example.com', 't',
			$3, $3, $4, $5)`, id, d.name, old, d.closed != nil, d.closed); err != nil {
			t.Fatal(err)
		}
	}
	n, _, err := s.PruneDigests(ctx, old.Add(-day), cutoff, 100)
	if err != nil || n != 1 {
		t.Fatalf("PruneDigests: %d, %v; want 1", n, err)
	}
	for _, d := range digests {
		if got := exists(t, pool, `SELECT 1 FROM delivery.digests WHERE user_id = $1`, d.name); got != d.stays {
			t.Errorf("%s: stays %v, want %v", d.name, got, d.stays)
		}
	}
}
