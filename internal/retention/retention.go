// Package retention deletes the rows Herald keeps for a while only. Each service lists its
// tables, how long their rows are kept, and a statement that deletes a bounded batch of the
// older ones; a Pruner runs those statements on a ticker.
//
// A batch is a short transaction of its own, so that a large backlog (retention turned on over
// years of history) never holds a long lock nor makes one huge transaction. Each batch first
// takes a transaction-level advisory lock of its table, without waiting: the replicas of a
// service take turns batch by batch, a replica that finds the lock taken leaves the table to the
// one holding it until its next pass, and two replicas never delete the same rows at once.
// Deleting a row that is gone deletes nothing, so a pass cut short anywhere is simply resumed.
package retention

import (
	"context"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// PruneFunc deletes, in tx, up to limit rows of a table that are due to go: those older than
// cutoff. It goes through them in the order of a time they carry (an id's or a timestamp's),
// starting at from, and returns how many it deleted and the time of the last one, from which
// the next batch goes on. Fewer than limit means that none is left.
type PruneFunc func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (n int, last time.Time, err error)

// Table is one table's retention.
type Table struct {
	// Name is the table, schema-qualified: the metric's label and the advisory lock's key.
	Name string
	// Keep is how long its rows are kept; 0 (or less) keeps them for ever.
	Keep  time.Duration
	Prune PruneFunc
}

// DB begins the batches' transactions: a pool.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Defaults of a Pruner.
const (
	DefaultInterval = 10 * time.Minute
	DefaultBatch    = 5000
)

// Pruner deletes what its tables keep no longer, one batch at a time.
type Pruner struct {
	DB     DB
	Tables []Table
	// Interval is the time between passes (DefaultInterval when 0).
	Interval time.Duration
	// Batch is the most rows one statement deletes (DefaultBatch when 0).
	Batch   int
	Metrics *Metrics
	Log     *slog.Logger
	// Now is the clock cutoffs are reckoned from; nil means time.Now.
	Now func() time.Time
}

// Metrics count what a Pruner deleted.
type Metrics struct {
	Pruned *prometheus.CounterVec
}

// NewMetrics creates the retention metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_retention_pruned_rows_total", Help: "Rows deleted because their retention ran out, by table.",
	}, []string{"table"})}
	reg.MustRegister(m.Pruned)
	return m
}

// Run makes a pass at once, then one every Interval, until ctx ends.
func (p *Pruner) Run(ctx context.Context) {
	t := time.NewTicker(cmpOr(p.Interval, DefaultInterval))
	defer t.Stop()
	for {
		p.Pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass prunes each table whose rows are not kept for ever, in the order given, and returns how
// many rows it deleted from each. A table whose batch fails, or that another replica is pruning,
// is left until the next pass; the failure is logged.
func (p *Pruner) Pass(ctx context.Context) map[string]int {
	out := map[string]int{}
	for _, t := range p.Tables {
		if ctx.Err() != nil {
			break
		}
		if t.Keep <= 0 {
			continue
		}
		began := time.Now()
		n, busy, err := p.prune(ctx, t)
		out[t.Name] = n
		switch {
		case err != nil && ctx.Err() == nil:
			p.log().Warn("prune old rows", "table", t.Name, "rows", n, "err", err)
		case busy && n == 0:
			p.log().Debug("another replica is pruning", "table", t.Name)
		case n > 0:
			p.log().Info("pruned old rows", "table", t.Name, "rows", n, "keep", t.Keep.String(),
				"took", time.Since(began).Round(time.Millisecond).String())
		}
	}
	return out
}

// prune deletes t's old rows a batch at a time, until none is left, another replica holds the
// table (busy), or a batch fails.
func (p *Pruner) prune(ctx context.Context, t Table) (total int, busy bool, err error) {
	limit := cmpOr(p.Batch, DefaultBatch)
	cutoff := p.now().Add(-t.Keep)
	var from time.Time
	for {
		var n int
		var last time.Time
		locked := false
		err := pgx.BeginFunc(ctx, p.DB, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, LockKey(t.Name)).Scan(&locked); err != nil || !locked {
				return err
			}
			var err error
			n, last, err = t.Prune(ctx, tx, from, cutoff, limit)
			return err
		})
		if err != nil {
			return total, false, err
		}
		if !locked {
			return total, true, nil
		}
		total += n
		if p.Metrics != nil && n > 0 {
			p.Metrics.Pruned.WithLabelValues(t.Name).Add(float64(n))
		}
		if n < limit {
			return total, false, nil
		}
		from = last
	}
}

// LockKey returns the advisory lock a Pruner takes while it prunes table: one per table, so that
// replicas may prune different tables at once.
func LockKey(table string) int64 {
	h := fnv.New64a()
	h.Write([]byte("herald-retention-" + table))
	return int64(h.Sum64() >> 1)
}

func (p *Pruner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Pruner) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.New(slog.DiscardHandler)
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
