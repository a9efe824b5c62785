package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/deliverytest"
	"github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/internal/retention"
)

const day = 24 * time.Hour

// pruner prunes s's deliveries and attempt log as the notifier does, keeping them for keep.
func pruner(s *postgres.Store, pool *pgxpool.Pool, keep time.Duration, batch int) *retention.Pruner {
	return &retention.Pruner{DB: pool, Batch: batch, Tables: []retention.Table{
		{Name: "delivery.attempts", Keep: keep, Prune: func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
			return s.In(tx).PruneAttempts(ctx, from, cutoff, limit)
		}},
		{Name: "delivery.deliveries", Keep: keep, Prune: func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
			return s.In(tx).PruneDeliveries(ctx, from, cutoff, limit)
		}},
	}}
}

// aged is a delivery accepted at created, last changed at updated, in state.
func aged(state delivery.State, created, updated time.Time) deliverytest.Row {
	id := ids.NewV7At(created)
	r := deliverytest.Row{Delivery: delivery.Delivery{ID: id, NotificationID: id, Channel: delivery.Email,
		To: "a@example.com", Category: "account", Priority: delivery.Normal, State: state,
		ExpiresAt: created.Add(day), CreatedAt: created, UpdatedAt: updated}}
	if !state.Terminal() {
		due := updated.Add(time.Hour)
		r.DueAt = &due
	}
	return r
}

func logAttempt(t *testing.T, pool *pgxpool.Pool, id uuid.UUID, drive int, started time.Time) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `INSERT INTO delivery.attempts (delivery_id, drive, attempt, worker, provider,
		outcome, started_at, latency_us) VALUES ($1, $2, 1, 'w', 'fake', 'sent', $3, 100)`, id, drive, started); err != nil {
		t.Fatal(err)
	}
}

func exists(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(t.Context(), `SELECT EXISTS (`+sql+`)`, args...).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestPrune: a finished delivery goes with its attempt log once it was both accepted and last
// changed longer ago than the retention, whatever its terminal state; one that is not finished
// stays however old, and so does a dead letter that died again lately.
func TestPrune(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	old, recent := now.Add(-100*day), now.Add(-10*day)
	rows := []struct {
		name  string
		row   deliverytest.Row
		stays bool
	}{
		{"sent long ago", aged(delivery.Sent, old, old), false},
		{"delivered long ago", aged(delivery.Delivered, old, old.Add(time.Minute)), false},
		{"dead long ago", aged(delivery.Dead, old, old), false},
		{"skipped long ago", aged(delivery.Skipped, old, old), false},
		{"expired long ago", aged(delivery.Expired, old, old), false},
		{"re-driven lately and dead again", aged(delivery.Dead, old, recent), true},
		{"scheduled long ago for later", aged(delivery.Scheduled, old, old), true},
		{"retrying since long ago", aged(delivery.Retrying, old, old), true},
		{"sending since long ago", aged(delivery.Sending, old, old), true},
		{"a fallback step waiting since long ago", aged(delivery.Waiting, old, old), true},
		{"sent lately", aged(delivery.Sent, recent, recent), true},
		{"sent just before the cutoff was accepted", aged(delivery.Sent, now.Add(-89*day), now.Add(-89*day)), true},
	}
	for _, r := range rows {
		if err := seed(ctx, pool, r.row); err != nil {
			t.Fatal(err)
		}
		logAttempt(t, pool, r.row.ID, 0, r.row.CreatedAt)
	}
	redriven := rows[5].row.ID
	logAttempt(t, pool, redriven, 1, recent)

	got := pruner(s, pool, 90*day, 2).Pass(ctx)
	if got["delivery.deliveries"] != 5 {
		t.Errorf("pruned %d deliveries, want 5", got["delivery.deliveries"])
	}
	for _, r := range rows {
		if there := exists(t, pool, `SELECT 1 FROM delivery.deliveries WHERE id = $1`, r.row.ID); there != r.stays {
			t.Errorf("%s: kept %v, want %v", r.name, there, r.stays)
		}
	}
	// The attempt log: every attempt of the deliveries that went, and every attempt that started
	// before the cutoff (a delivery still open past the retention has no use for them).
	for _, r := range rows {
		old := r.row.CreatedAt.Before(now.Add(-90 * day))
		if there := exists(t, pool, `SELECT 1 FROM delivery.attempts WHERE delivery_id = $1 AND drive = 0`, r.row.ID); there == old {
			t.Errorf("%s: its attempt kept %v, want %v", r.name, there, !old)
		}
	}
	if !exists(t, pool, `SELECT 1 FROM delivery.attempts WHERE delivery_id = $1 AND drive = 1`, redriven) {
		t.Error("the attempt of a re-drive made lately is gone")
	}
	if got := pruner(s, pool, 90*day, 2).Pass(ctx); got["delivery.deliveries"] != 0 || got["delivery.attempts"] != 0 {
		t.Errorf("a second pass pruned %v, want nothing", got)
	}
	if got := pruner(s, pool, 0, 2).Pass(ctx); len(got) != 0 {
		t.Errorf("with retention 0: pruned %v, want nothing looked at", got)
	}
}

// TestPruneBatches: a statement deletes at most its limit, and the next goes on from where it
// ended, even past deliveries that stay.
func TestPruneBatches(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	cutoff := now.Add(-90 * day)
	for i := range 7 {
		at := now.Add(-100*day + time.Duration(i)*time.Hour)
		st := delivery.Sent
		if i == 2 {
			st = delivery.Queued
		}
		if err := seed(ctx, pool, aged(st, at, at)); err != nil {
			t.Fatal(err)
		}
	}
	from := time.Time{}
	var batches []int
	for {
		var n int
		var last time.Time
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			n, last, err = s.In(tx).PruneDeliveries(ctx, from, cutoff, 2)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, n)
		if n < 2 {
			break
		}
		if !last.After(from) {
			t.Fatalf("a batch ended at %s, not after where it began (%s)", last, from)
		}
		from = last
	}
	if !slices.Equal(batches, []int{2, 2, 2, 0}) {
		t.Errorf("batches of %v, want 2, 2, 2, then none left", batches)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries`).Scan(&left); err != nil || left != 1 {
		t.Errorf("%d deliveries left (%v), want the queued one", left, err)
	}
}

// TestPrunePlans: retention reads the deliveries and the attempt log in the order of their
// primary keys, from where the last batch ended, also in a generic plan: never a scan of the
// whole table, nor a scan of one of the partial indexes of the hot path.
func TestPrunePlans(t *testing.T) {
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	var ds []delivery.Delivery
	for i := range 20_000 {
		at := now.Add(-200*day + time.Duration(i)*10*time.Minute)
		r := aged(delivery.Sent, at, at)
		ds = append(ds, r.Delivery)
	}
	if err := s.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO delivery.attempts (delivery_id, attempt, worker, provider, outcome, started_at, latency_us)
		SELECT id, 1, 'w', 'fake', 'sent', created_at, 100 FROM delivery.deliveries;
		ANALYZE delivery.deliveries; ANALYZE delivery.attempts`); err != nil {
		t.Fatal(err)
	}
	from, cutoff := ids.FirstV7(now.Add(-150*day)).String(), ids.FirstV7(now.Add(-90*day)).String()
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, sql, table, index string
		}{
			{"deliveries", postgres.PruneDeliveriesSQL, "deliveries", "deliveries_pkey"},
			{"attempts", postgres.PruneAttemptsSQL, "attempts", "attempts_pkey"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				if _, err := conn.Exec(ctx, `PREPARE `+tc.name+`(uuid, uuid, timestamptz, int) AS `+tc.sql); err != nil {
					t.Fatal(err)
				}
				rows, err := conn.Query(ctx, `EXPLAIN EXECUTE `+tc.name+`('`+from+`', '`+cutoff+`', now() - interval '90 days', 5000)`)
				if err != nil {
					t.Fatal(err)
				}
				plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				text := strings.Join(plan, "\n")
				if !strings.Contains(text, "Index Scan using "+tc.index+" on "+tc.table) ||
					strings.Contains(text, "Seq Scan on "+tc.table) || strings.Contains(text, "deliveries_open") ||
					strings.Contains(text, "deliveries_due") || strings.Contains(text, "deliveries_dead") {
					t.Errorf("plan:\n%s\nwant the rows read through %s alone", text, tc.index)
				}
			})
		}
	}
}
