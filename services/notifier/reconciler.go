package notifier

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// Reconciler repairs what the queue cannot: it publishes scheduled deliveries when they fall
// due and retries when their backoff is over, re-publishes queued deliveries whose message seems
// lost (a broker that lost it, a publish that never happened after the commit), releases
// deliveries whose worker's lease expired, expires deliveries past their ttl, and closes the
// digests that fall due. What it publishes goes out as batches, one message per channel for up
// to queue.MaxBatch deliveries. Several replicas may run it at once: each takes rows with SKIP
// LOCKED.
type Reconciler struct {
	Store     ReconcileStore
	Publisher Publisher
	Log       *slog.Logger
	// Interval between passes.
	Interval time.Duration
	// RepublishAfter is how long a queued delivery may wait before it is published again; it
	// doubles with each re-publish of the same delivery, so a long backlog is not multiplied.
	RepublishAfter time.Duration
	// Batch bounds the rows one pass takes at a time.
	Batch int
	// Metrics counts re-publishes and expiries, and tells when the last pass ended; nil counts
	// nothing.
	Metrics *Metrics
	// Queue, when set, tells how far the workers have read each channel's queue: a queued
	// delivery published after the oldest message they have not received yet most likely
	// has its message still waiting, so it is not published again. Without it, a backlog older
	// than RepublishAfter is published a second time, and grows.
	Queue Backlog
	// Digests, when set, closes the digests that fall due on each pass (digest.go).
	Digests *DigestCloser
	// PassTimeout bounds each pass Run makes (0: DefaultPassTimeout). A pass still waiting
	// when it runs out, on a lock or on a pool with no connection to give, is cut: its open
	// transaction rolls back, and the next pass takes up what it left, since every batch it
	// took already carries its next deadline.
	PassTimeout time.Duration
}

// DefaultPassTimeout is how long a pass may run when PassTimeout is 0: a thousand batches of a
// long backlog fit in it many times over.
const DefaultPassTimeout = time.Minute

// ReconcileStore finds the deliveries whose deadline passed and moves them on; internal/delivery's
// stores implement it (see their Reconcile).
type ReconcileStore interface {
	// Reconcile takes up to limit deliveries whose deadline has passed: it queues again and
	// returns the ones to publish (but those Held, whose message held names as still waiting in
	// its queue), and expires those past their ttl, returning how many.
	Reconcile(ctx context.Context, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]delivery.Due, int, error)
}

// Backlog reports on the channels' queues.
type Backlog interface {
	// OldestWaiting returns when the oldest message of the channel's queue that no worker has
	// received yet was published; false when there is none.
	OldestWaiting(ctx context.Context, ch delivery.Channel) (time.Time, bool, error)
}

// publishSlack is how much earlier than its message's timestamp in the queue a delivery may
// have been marked published (updated_at): the message follows the commit, and the notifier's
// and the broker's clocks may differ a little.
const publishSlack = 30 * time.Second

// backlogReadTimeout bounds the reading of one channel's backlog in held.
const backlogReadTimeout = 5 * time.Second

// held returns, for each channel whose queue holds messages no worker has received yet, when
// the oldest of them was published, less publishSlack. A channel whose queue cannot be read is
// left out: its deliveries are published again, as without a Queue.
func (r *Reconciler) held(ctx context.Context) map[delivery.Channel]time.Time {
	if r.Queue == nil {
		return nil
	}
	held := map[delivery.Channel]time.Time{}
	for _, ch := range delivery.Channels {
		// A JetStream request takes its deadline from its context when that has one: without a
		// bound of its own, a request the broker never answers (one lost in a leader election)
		// would hold the pass until the pass's deadline.
		qctx, cancel := context.WithTimeout(ctx, backlogReadTimeout)
		since, ok, err := r.Queue.OldestWaiting(qctx, ch)
		cancel()
		switch {
		case err != nil:
			r.Log.Warn("cannot read the queue's backlog; its stale deliveries are published again", "channel", ch, "err", err)
		case ok:
			held[ch] = since.Add(-publishSlack)
		}
	}
	return held
}

// Run reconciles until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	r.passed() // the clock of a first pass that hangs starts here
	timeout := r.PassTimeout
	if timeout <= 0 {
		timeout = DefaultPassTimeout
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := r.Pass(pctx)
		switch {
		case ctx.Err() != nil:
		case pctx.Err() != nil:
			r.Log.Warn("a reconcile pass ran out of time; the next one carries on", "timeout", timeout)
		case err != nil:
			r.Log.Warn("reconcile pass failed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass reconciles every delivery that is due now and returns how many it published.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	defer r.passed()
	total := 0
	if r.Digests != nil {
		n, err := r.Digests.Close(ctx, time.Now())
		total += n
		if err != nil {
			r.Log.Warn("closing digests failed", "err", err)
		}
	}
	held := r.held(ctx)
	for {
		taken, expired, err := r.Store.Reconcile(ctx, time.Now(), r.RepublishAfter, r.Batch, held)
		if err != nil {
			return total, err
		}
		byChannel := map[delivery.Channel][]uuid.UUID{}
		n := 0
		for _, d := range taken {
			if d.Held {
				continue
			}
			byChannel[d.Channel] = append(byChannel[d.Channel], d.ID)
			n++
			if r.Metrics != nil && !d.OnTime { // a delivery whose time came is no sign of trouble
				r.Metrics.Republished.WithLabelValues(string(d.Channel)).Inc()
			}
		}
		if r.Metrics != nil {
			r.Metrics.Expired.Add(float64(expired))
		}
		if n > 0 {
			// The rows already carry their next deadline, so a failed publish is retried by a
			// later pass.
			if err := r.Publisher.Publish(ctx, byChannel); err != nil {
				r.Log.Warn("re-publish failed", "deliveries", n, "err", err)
			}
			total += n
			r.Log.Info("re-published deliveries", "count", n)
		}
		if len(taken) < r.Batch {
			return total, nil
		}
	}
}

// passed records that a pass ended now: a pass that hangs where its deadline cannot reach
// would otherwise stop digests, re-publishes and expiries unseen.
func (r *Reconciler) passed() {
	if r.Metrics != nil {
		r.Metrics.ReconcilerPassed.SetToCurrentTime()
	}
}
