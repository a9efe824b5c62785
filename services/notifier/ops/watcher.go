package ops

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/workerstatus"
)

// Watcher samples the queues and keeps the last Window of samples. It implements Source.
type Watcher struct {
	js     jetstream.JetStream
	pool   *pgxpool.Pool
	status jetstream.KeyValue
	log    *slog.Logger
	// Interval between samples, and Window of history kept.
	Interval time.Duration
	Window   time.Duration
	// Engagement, when set, counts the click-through rates the snapshot shows (engagement.go).
	Engagement   EngagementFunc
	engagementAt time.Time // guarded by Run's goroutine
	engagement   []EngagementRow
	// waiting is the last count of waiting deliveries per channel, to read again at
	// waitingNext (guarded by Run's goroutine): see readDatabase.
	waiting     map[string]ChannelSample
	waitingNext time.Time

	gauges struct {
		pending, inFlight, scheduled, retrying, dead, oldest *prometheus.GaugeVec
	}

	mu       sync.Mutex
	history  []Sample
	totals   []map[string]counts // per sample: each channel's monotonic send counts
	dead     []DeadLetterGroup
	circuits []Circuit
	last     map[string]workerstatus.State // per worker and channel: the last report
	sum      map[string]counts             // per channel: sends counted so far, across restarts
}

type counts struct{ sent, failed float64 }

// NewWatcher returns a Watcher reading JetStream, the database and the workers' status bucket,
// and registers its gauges with reg.
func NewWatcher(js jetstream.JetStream, pool *pgxpool.Pool, status jetstream.KeyValue, reg prometheus.Registerer, log *slog.Logger) *Watcher {
	w := &Watcher{js: js, pool: pool, status: status, log: log, Interval: 5 * time.Second, Window: 15 * time.Minute,
		last: map[string]workerstatus.State{}, sum: map[string]counts{}}
	gauge := func(name, help string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"channel"})
		reg.MustRegister(g)
		return g
	}
	w.gauges.pending = gauge("herald_queue_pending", "Deliveries waiting in the channel's queue for a worker.")
	w.gauges.inFlight = gauge("herald_queue_in_flight", "Deliveries handed to workers and not yet answered.")
	w.gauges.scheduled = gauge("herald_queue_scheduled", "Deliveries waiting for their send time.")
	w.gauges.retrying = gauge("herald_queue_retrying", "Deliveries waiting out a retry backoff.")
	w.gauges.dead = gauge("herald_dead_letters", "Dead letters, re-drivable.")
	w.gauges.oldest = gauge("herald_queue_oldest_age_seconds", "How long the oldest delivery waiting in its channel's queue (published, not yet received by a worker) has waited.")
	return w
}

// Run samples every Interval until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		if err := w.Sample(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sample queues", "err", err)
		}
		w.refreshEngagement(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Snapshot implements Source.
func (w *Watcher) Snapshot() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Snapshot{History: slices.Clone(w.history), DeadLetters: slices.Clone(w.dead), Circuits: slices.Clone(w.circuits),
		Engagement: slices.Clone(w.engagement)}
	if len(w.history) > 0 {
		s.Latest = w.history[len(w.history)-1]
	}
	return s
}

// Sample reads the queues once and adds the sample to the history.
func (w *Watcher) Sample(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.Interval)
	defer cancel()
	now := time.Now()
	byChannel := map[string]*ChannelSample{}
	var sample Sample
	for _, ch := range delivery.Channels {
		sample.Channels = append(sample.Channels, ChannelSample{Channel: string(ch)})
	}
	for i := range sample.Channels {
		byChannel[sample.Channels[i].Channel] = &sample.Channels[i]
	}
	var errs []error
	errs = append(errs, w.readQueues(ctx, byChannel), w.readDatabase(ctx, byChannel))
	dead, err := w.readDeadLetters(ctx)
	errs = append(errs, err)
	reports, err := w.readReports(ctx)
	errs = append(errs, err)

	w.mu.Lock()
	defer w.mu.Unlock()
	sample.Time = now
	circuits := w.count(reports)
	total := map[string]counts{}
	for ch, c := range w.sum {
		total[ch] = c
	}
	// Rates over the last minute of history (or what there is of it).
	base, baseTotals := now, total
	for i := len(w.history) - 1; i >= 0; i-- {
		base, baseTotals = w.history[i].Time, w.totals[i]
		if now.Sub(base) >= time.Minute {
			break
		}
	}
	if secs := now.Sub(base).Seconds(); secs > 0 {
		for ch, c := range total {
			if cs := byChannel[ch]; cs != nil {
				cs.SendRate = (c.sent - baseTotals[ch].sent) / secs
				cs.FailureRate = (c.failed - baseTotals[ch].failed) / secs
			}
		}
	}
	w.history = append(w.history, sample)
	w.totals = append(w.totals, total)
	for len(w.history) > 0 && now.Sub(w.history[0].Time) > w.Window {
		w.history, w.totals = w.history[1:], w.totals[1:]
	}
	if dead != nil {
		w.dead = dead
	}
	if reports != nil {
		w.circuits = circuits
	}
	for _, c := range sample.Channels {
		w.gauges.pending.WithLabelValues(c.Channel).Set(float64(c.Pending))
		w.gauges.inFlight.WithLabelValues(c.Channel).Set(float64(c.InFlight))
		w.gauges.scheduled.WithLabelValues(c.Channel).Set(float64(c.Scheduled))
		w.gauges.retrying.WithLabelValues(c.Channel).Set(float64(c.Retrying))
		w.gauges.dead.WithLabelValues(c.Channel).Set(float64(c.DeadLetters))
		w.gauges.oldest.WithLabelValues(c.Channel).Set(c.OldestAgeSeconds)
	}
	return errors.Join(errs...)
}

// count folds the workers' cumulative counts into each channel's monotonic sums (a restarted
// worker starts again from zero) and returns the circuits. Call with mu held.
func (w *Watcher) count(reports []workerstatus.State) []Circuit {
	var out []Circuit
	for _, r := range reports {
		key := r.Worker + "/" + r.Channel
		prev, seen := w.last[key]
		if seen && r.Updated.Equal(prev.Updated) {
			prev = r // the same report again: nothing new
		}
		dSent, dFailed := float64(r.Sent), float64(r.Failed)
		if seen && r.Sent >= prev.Sent && r.Failed >= prev.Failed {
			dSent, dFailed = float64(r.Sent-prev.Sent), float64(r.Failed-prev.Failed)
		}
		c := w.sum[r.Channel]
		c.sent += dSent
		c.failed += dFailed
		w.sum[r.Channel] = c
		w.last[key] = r
		if len(r.Routes) == 0 {
			out = append(out, Circuit{Channel: r.Channel, Provider: r.Provider, Worker: r.Worker, State: r.Circuit, Updated: r.Updated})
			continue
		}
		// A channel with several credentials shows each one's circuit; the channel's own opens
		// only when they all fail, and then theirs show it.
		for _, x := range r.Routes {
			out = append(out, Circuit{Channel: r.Channel, Provider: x.Provider, Worker: r.Worker, State: x.Circuit,
				Updated: r.Updated, Active: x.Active})
		}
	}
	slices.SortStableFunc(out, func(a, b Circuit) int { // stable: a channel's credentials stay in order
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Worker, b.Worker))
	})
	return out
}

// readQueues reads how long the oldest message of each channel's queue that no worker has
// received yet has waited.
func (w *Watcher) readQueues(ctx context.Context, byChannel map[string]*ChannelSample) error {
	var errs []error
	for _, ch := range delivery.Channels {
		b, err := queue.ReadBacklog(ctx, w.js, ch)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !b.Oldest.IsZero() {
			byChannel[string(ch)].OldestAgeSeconds = max(time.Since(b.Oldest).Seconds(), 0)
		}
	}
	return errors.Join(errs...)
}

// readDatabase counts the deliveries that wait, per channel and state: queued for a worker,
// held by one, scheduled, retrying and dead. The queue's messages are batches of deliveries, so
// its own counts say little of the work waiting. The counts read the deliveries_open index, so
// sent history is not read; but a backlog of a million is read whole, which takes a good part
// of a second: the counts are read again only once twenty times as long as the last reading
// took has passed, so that they cost the database at most a twentieth of one connection, and
// the samples in between repeat them.
func (w *Watcher) readDatabase(ctx context.Context, byChannel map[string]*ChannelSample) error {
	if now := time.Now(); now.Before(w.waitingNext) {
		for ch, c := range w.waiting {
			if cs := byChannel[ch]; cs != nil {
				cs.Pending, cs.InFlight, cs.Scheduled, cs.Retrying, cs.DeadLetters =
					c.Pending, c.InFlight, c.Scheduled, c.Retrying, c.DeadLetters
			}
		}
		return nil
	}
	began := time.Now()
	waiting := map[string]ChannelSample{}
	rows, err := w.pool.Query(ctx, `
		SELECT channel,
			count(*) FILTER (WHERE state = 'queued'),
			count(*) FILTER (WHERE state = 'sending'),
			count(*) FILTER (WHERE state = 'scheduled'),
			count(*) FILTER (WHERE state = 'retrying'),
			count(*) FILTER (WHERE state = 'dead')
		FROM delivery.deliveries
		WHERE state IN ('queued', 'sending', 'scheduled', 'retrying', 'dead')
		GROUP BY channel`)
	if err != nil {
		return err
	}
	var ch string
	var queued, sending, scheduled, retrying, dead int64
	_, err = pgx.ForEachRow(rows, []any{&ch, &queued, &sending, &scheduled, &retrying, &dead}, func() error {
		c := ChannelSample{Pending: queued, InFlight: sending, Scheduled: scheduled, Retrying: retrying, DeadLetters: dead}
		waiting[ch] = c
		if cs := byChannel[ch]; cs != nil {
			cs.Pending, cs.InFlight, cs.Scheduled, cs.Retrying, cs.DeadLetters =
				c.Pending, c.InFlight, c.Scheduled, c.Retrying, c.DeadLetters
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.waiting = waiting
	w.waitingNext = began.Add(20 * time.Since(began))
	return nil
}

func (w *Watcher) readDeadLetters(ctx context.Context) ([]DeadLetterGroup, error) {
	rows, err := w.pool.Query(ctx, `SELECT channel, reason, count(*) FROM delivery.deliveries
		WHERE state = 'dead' GROUP BY channel, reason ORDER BY count(*) DESC, channel, reason LIMIT 100`)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetterGroup, error) {
		var g DeadLetterGroup
		err := r.Scan(&g.Channel, &g.Reason, &g.Count)
		return g, err
	})
	if out == nil && err == nil {
		out = []DeadLetterGroup{}
	}
	return out, err
}

func (w *Watcher) readReports(ctx context.Context) ([]workerstatus.State, error) {
	if w.status == nil {
		return nil, nil
	}
	reports, err := workerstatus.List(ctx, w.status)
	if reports == nil && err == nil {
		reports = []workerstatus.State{}
	}
	return reports, err
}
