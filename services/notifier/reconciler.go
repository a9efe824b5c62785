package notifier

import (
	"context"
	"log/slog"
	"time"
)

// Reconciler repairs what the queue cannot: it publishes scheduled deliveries when they fall
// due, re-publishes queued deliveries whose message seems lost (a broker that lost it, a publish
// that never happened after the commit), releases deliveries whose worker's lease expired, and
// expires deliveries past their ttl. Several replicas may run it at once: each takes rows with
// SKIP LOCKED.
type Reconciler struct {
	Store     Store
	Publisher Publisher
	Log       *slog.Logger
	// Interval between passes.
	Interval time.Duration
	// RepublishAfter is how long a queued delivery may wait before it is published again; it
	// doubles with each re-publish of the same delivery, so a long backlog is not multiplied.
	RepublishAfter time.Duration
	// Batch bounds the rows one pass takes at a time.
	Batch int
	// Metrics counts re-publishes and expiries; nil counts nothing.
	Metrics *Metrics
}

// Run reconciles until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("reconcile pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass reconciles every delivery that is due now and returns how many it published.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	total := 0
	for {
		pubs, expired, err := r.Store.Reconcile(ctx, time.Now(), r.RepublishAfter, r.Batch)
		if err != nil {
			return total, err
		}
		if r.Metrics != nil {
			r.Metrics.Expired.Add(float64(expired))
			for _, p := range pubs {
				if !p.Due { // a scheduled delivery falling due is no sign of trouble
					r.Metrics.Republished.WithLabelValues(string(p.Channel)).Inc()
				}
			}
		}
		if len(pubs) > 0 {
			// The rows already carry their next deadline, so a failed publish is retried by a
			// later pass.
			if err := r.Publisher.Publish(ctx, pubs); err != nil {
				r.Log.Warn("re-publish failed", "deliveries", len(pubs), "err", err)
			}
			total += len(pubs)
			r.Log.Info("re-published deliveries", "count", len(pubs))
		}
		if len(pubs) < r.Batch {
			return total, nil
		}
	}
}
