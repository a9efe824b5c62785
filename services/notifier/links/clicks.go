package links

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Click is one followed short link.
type Click struct {
	LinkID     int64
	DeliveryID uuid.UUID
	At         time.Time
	// Bot is why the click is not a person's: BotAgent, BotTiming (set by the store), or "".
	Bot string
	// Channel, Category and Template label the click in metrics; the store takes them from
	// the link.
	Channel, Category, Template string
}

// ClickStore writes clicks. The postgres package implements it.
type ClickStore interface {
	// InsertClicks stores the clicks in one statement and returns the outcome of each, in
	// order: OutcomePerson, OutcomeBot, or OutcomeDuplicate for a click it did not store. It
	// classifies a click as BotTiming when it came within prefetch of its delivery being sent,
	// and skips a click when its delivery already has one of the same class (person or bot)
	// within window before it, so that two replicas' clicks are deduplicated too; and a click
	// of a link it does not hold (pruned meanwhile).
	InsertClicks(ctx context.Context, clicks []Click, window, prefetch time.Duration) ([]string, error)
}

// RecorderConfig configures a Recorder; zero values take the defaults.
type RecorderConfig struct {
	// Window: a click on a delivery within Window of the last one counted is a duplicate
	// (default 1 minute).
	Window time.Duration
	// Prefetch: a click within Prefetch of the delivery's send is a scanner's (default 2 s).
	Prefetch time.Duration
	// FlushInterval is the longest a click waits in memory (default 200 ms); a batch of
	// BatchSize (default 2000) goes at once.
	FlushInterval time.Duration
	BatchSize     int
	// MaxPending bounds the clicks held while the database cannot take them (default 1e6);
	// beyond it new clicks are dropped and counted.
	MaxPending int
	// Counted is told the outcome of each click; nil: nothing.
	Counted func(c Click, outcome string)
	Log     *slog.Logger
}

// The outcomes a Recorder reports to Counted.
const (
	OutcomePerson    = "person"
	OutcomeBot       = "bot"
	OutcomeDuplicate = "duplicate"
	OutcomeDropped   = "dropped"
)

// Recorder takes clicks from redirects without blocking them and writes them to the store in
// batches. A click is counted once its batch is committed; until then it is held in memory,
// through database outages (up to MaxPending), and Close writes what is left, so that a stopped
// notifier loses none. Only a killed process loses the clicks of its last FlushInterval, which
// the redirect already answered: a click is counted at most once, never made up.
type Recorder struct {
	store ClickStore
	cfg   RecorderConfig

	mu      sync.Mutex
	pending []Click
	recent  map[dedupeKey]time.Time // last click taken per delivery and class
	swept   time.Time
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type dedupeKey struct {
	delivery uuid.UUID
	bot      bool
}

// NewRecorder starts a Recorder; Close stops it.
func NewRecorder(store ClickStore, cfg RecorderConfig) *Recorder {
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Prefetch < 0 {
		cfg.Prefetch = 0
	} else if cfg.Prefetch == 0 {
		cfg.Prefetch = 2 * time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 200 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1_000_000
	}
	if cfg.Counted == nil {
		cfg.Counted = func(Click, string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{store: store, cfg: cfg, recent: map[dedupeKey]time.Time{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Add takes a click. It never blocks on the database: the click joins the next batch, unless
// the same delivery had a click of the same class within the window (a duplicate, not kept).
func (r *Recorder) Add(c Click) {
	key := dedupeKey{c.DeliveryID, c.Bot != ""}
	r.mu.Lock()
	if last, ok := r.recent[key]; ok && c.At.Sub(last) < r.cfg.Window && !c.At.Before(last) {
		r.mu.Unlock()
		r.cfg.Counted(c, OutcomeDuplicate)
		return
	}
	if len(r.pending) >= r.cfg.MaxPending {
		r.mu.Unlock()
		r.cfg.Counted(c, OutcomeDropped)
		return
	}
	r.recent[key] = c.At
	if c.At.Sub(r.swept) > r.cfg.Window {
		for k, at := range r.recent {
			if c.At.Sub(at) >= r.cfg.Window {
				delete(r.recent, k)
			}
		}
		r.swept = c.At
	}
	r.pending = append(r.pending, c)
	full := len(r.pending) >= r.cfg.BatchSize
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Pending counts the clicks not yet written.
func (r *Recorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

func (r *Recorder) run() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-r.stop:
			r.drain()
			return
		case <-t.C:
		case <-r.kick:
		}
		if backoff > 0 {
			select {
			case <-r.stop:
				r.drain()
				return
			case <-time.After(backoff):
			}
		}
		if err := r.flush(context.Background()); err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
			r.cfg.Log.Warn("write clicks; they are kept and written again", "pending", r.Pending(), "err", err)
			continue
		}
		backoff = 0
	}
}

// flush writes the pending clicks, a batch at a time; on an error the unwritten ones go back
// to the front of the queue.
func (r *Recorder) flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		n := min(len(r.pending), r.cfg.BatchSize)
		if n == 0 {
			r.mu.Unlock()
			return nil
		}
		batch := make([]Click, n)
		copy(batch, r.pending)
		r.mu.Unlock()

		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		outcomes, err := r.store.InsertClicks(wctx, batch, r.cfg.Window, r.cfg.Prefetch)
		cancel()
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.pending = append(r.pending[:0:0], r.pending[n:]...)
		r.mu.Unlock()
		for i, c := range batch {
			r.cfg.Counted(c, outcomes[i])
		}
	}
}

// drain writes what is left at Close, trying for up to a minute.
func (r *Recorder) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		err := r.flush(ctx)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			r.cfg.Log.Error("clicks not written at shutdown", "lost", r.Pending(), "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Close writes the pending clicks and stops the Recorder.
func (r *Recorder) Close() {
	close(r.stop)
	<-r.done
}
