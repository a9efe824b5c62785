package retention_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/retention"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func setup(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL);
		CREATE INDEX notes_at ON notes (at)`)
	return err
}

func open(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgdb.Open(ctx, pgtest.DB(t, "retention", setup), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// pruneNotes deletes notes by their time, as the services' statements do, and counts its calls.
type pruneNotes struct {
	mu     sync.Mutex
	limits []int
}

func (p *pruneNotes) prune(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	p.mu.Lock()
	p.limits = append(p.limits, limit)
	p.mu.Unlock()
	var n int
	var last time.Time
	err := tx.QueryRow(ctx, `
		WITH gone AS (
			DELETE FROM notes WHERE id IN (
				SELECT id FROM notes WHERE at >= $1 AND at < $2 ORDER BY at LIMIT $3)
			RETURNING at)
		SELECT count(*), coalesce(max(at), $1) FROM gone`, from, cutoff, limit).Scan(&n, &last)
	return n, last, err
}

func (p *pruneNotes) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.limits)
}

// insert adds n notes at the given age.
func insert(t *testing.T, pool *pgxpool.Pool, n int, age time.Duration) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `INSERT INTO notes (at) SELECT now() - $1::interval FROM generate_series(1, $2)`,
		age, n); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM notes`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pruned reads herald_retention_pruned_rows_total{table} from reg.
func pruned(t *testing.T, reg *prometheus.Registry, table string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herald_retention_pruned_rows_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestPass: rows older than the table's retention go, in batches of at most Batch rows, and are
// counted; newer rows stay; a table kept for ever is not touched.
func TestPass(t *testing.T) {
	pool := open(t)
	insert(t, pool, 10, 2*time.Hour)
	insert(t, pool, 3, time.Minute)
	notes := &pruneNotes{}
	forever := &pruneNotes{}
	reg := prometheus.NewRegistry()
	m := retention.NewMetrics(reg)
	p := &retention.Pruner{DB: pool, Batch: 3, Metrics: m, Tables: []retention.Table{
		{Name: "public.kept", Keep: 0, Prune: forever.prune},
		{Name: "public.notes", Keep: time.Hour, Prune: notes.prune},
	}}
	got := p.Pass(t.Context())
	if got["public.notes"] != 10 || len(got) != 1 {
		t.Errorf("Pass = %v, want 10 rows of public.notes", got)
	}
	if n := count(t, pool); n != 3 {
		t.Errorf("%d notes left, want the 3 recent ones", n)
	}
	for _, l := range notes.limits {
		if l != 3 {
			t.Errorf("a batch of %d, want 3", l)
		}
	}
	if len(notes.limits) != 4 { // 3 + 3 + 3 + 1
		t.Errorf("%d batches, want 4", len(notes.limits))
	}
	if forever.calls() != 0 {
		t.Errorf("a table kept for ever was pruned %d times", forever.calls())
	}
	if v := pruned(t, reg, "public.notes"); v != 10 {
		t.Errorf("herald_retention_pruned_rows_total{table=public.notes} = %v, want 10", v)
	}
	if got := p.Pass(t.Context()); got["public.notes"] != 0 {
		t.Errorf("a second pass pruned %v, want nothing", got)
	}
}

// TestPassLeavesALockedTable: while another replica holds a table's lock, a pass leaves the
// table alone, and prunes it once the lock is free.
func TestPassLeavesALockedTable(t *testing.T) {
	pool := open(t)
	ctx := t.Context()
	insert(t, pool, 5, 2*time.Hour)
	notes := &pruneNotes{}
	p := &retention.Pruner{DB: pool, Tables: []retention.Table{{Name: "public.notes", Keep: time.Hour, Prune: notes.prune}}}

	other, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, retention.LockKey("public.notes")); err != nil {
		t.Fatal(err)
	}
	if got := p.Pass(ctx); got["public.notes"] != 0 || notes.calls() != 0 || count(t, pool) != 5 {
		t.Errorf("with the lock held elsewhere: Pass = %v after %d batches, %d notes left; want nothing pruned",
			got, notes.calls(), count(t, pool))
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, retention.LockKey("public.notes")); err != nil {
		t.Fatal(err)
	}
	other.Release()
	if got := p.Pass(ctx); got["public.notes"] != 5 || count(t, pool) != 0 {
		t.Errorf("with the lock free: Pass = %v, %d notes left; want all 5 pruned", got, count(t, pool))
	}
}

// TestPassReplicas: replicas pruning at once delete every old row once between them, and never
// a recent one.
func TestPassReplicas(t *testing.T) {
	pool := open(t)
	insert(t, pool, 500, 2*time.Hour)
	insert(t, pool, 7, time.Minute)
	reg := prometheus.NewRegistry()
	m := retention.NewMetrics(reg)
	var wg sync.WaitGroup
	for range 4 {
		notes := &pruneNotes{}
		p := &retention.Pruner{DB: pool, Batch: 10, Metrics: m,
			Tables: []retention.Table{{Name: "public.notes", Keep: time.Hour, Prune: notes.prune}}}
		wg.Go(func() {
			// A pass that finds the table taken ends at once: go on until the others are done.
			for range 1000 {
				p.Pass(t.Context())
				var left int
				if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM notes`).Scan(&left); err != nil || left <= 7 {
					return
				}
			}
		})
	}
	wg.Wait()
	if n := count(t, pool); n != 7 {
		t.Errorf("%d notes left, want the 7 recent ones", n)
	}
	if v := pruned(t, reg, "public.notes"); v != 500 {
		t.Errorf("counted %v rows pruned, want 500", v)
	}
}

// TestPassFailure: a batch that fails deletes nothing, and the other tables are pruned still.
func TestPassFailure(t *testing.T) {
	pool := open(t)
	insert(t, pool, 5, 2*time.Hour)
	notes := &pruneNotes{}
	failing := func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
		if _, err := tx.Exec(ctx, `DELETE FROM notes`); err != nil {
			return 0, from, err
		}
		return 0, from, errors.New("broken")
	}
	p := &retention.Pruner{DB: pool, Tables: []retention.Table{
		{Name: "public.broken", Keep: time.Hour, Prune: failing},
		{Name: "public.notes", Keep: time.Hour, Prune: notes.prune},
	}}
	if got := p.Pass(t.Context()); got["public.broken"] != 0 || got["public.notes"] != 5 {
		t.Errorf("Pass = %v, want nothing from the failing table and 5 notes", got)
	}
}
