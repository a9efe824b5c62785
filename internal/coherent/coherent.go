// Package coherent is a read cache that stays exact across replicas. Writers record the keys
// they change in a change feed (a table written in the same transaction as the change); every
// read first waits for a poll of the feed that started after the read did, and that poll evicts
// whatever changed. So a read that begins after a write was acknowledged, on any replica, never
// sees the value from before it, while the database sees one small feed query per round of
// concurrent reads instead of one lookup per read. Polls start at least a millisecond apart, so
// under load the feed sees at most a thousand queries a second however many readers wait.
//
// This is written by hand because the caches that libraries offer expire entries by time,
// which cannot give "every read after the acknowledgement sees the change".
package coherent

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Feed reads the change feed.
type Feed interface {
	// Changes returns the keys changed by transactions at or after horizon (an opaque position,
	// zero at first) and the horizon to pass next time. Keys may repeat across calls. It must
	// report every change committed before the call began. It may instead return
	// ErrTooManyChanges with a next horizon from after the call began, when the keys are too
	// many to list: the caches then forget everything.
	Changes(ctx context.Context, horizon uint64) (keys []string, next uint64, err error)
}

// ErrTooManyChanges is what a Feed answers when listing the changes would cost more than
// forgetting everything (a reader far behind a remote feed).
var ErrTooManyChanges = errors.New("too many changes to list")

// Poller reads a feed for the caches over it: each round of polling serves every cache's
// waiting readers with one query, and evicts what changed from all of them. Caches whose keys
// come from one feed share a Poller (keys of different kinds must then not collide).
type Poller struct {
	feed Feed
	// stale is how long the feed may go unread before the caches stop trusting themselves (the
	// feed keeps changes for longer than this).
	stale time.Duration
	// gap is the least time between the starts of two polls: under load, readers wait up to
	// gap for a round, so the feed sees at most 1/gap queries per second, not one per round
	// trip.
	gap time.Duration

	mu      sync.Mutex
	caches  []evicter
	horizon uint64
	polled  time.Time    // when the last successful poll started
	started time.Time    // when the last poll started
	waiters []chan error // served by the next round
	joiners []chan error // served by the round under way
	polling bool
	inRound bool // a round's query is under way
}

type evicter interface {
	evict(keys []string, all bool)
}

// Watch calls fn with what each successful poll found: the changed keys, and whether every
// cache forgot everything. fn runs before the poll's readers go on, with p locked (it must not
// call p), so state that fn keeps is as fresh as the caches for every reader that synced.
func (p *Poller) Watch(fn func(keys []string, all bool)) {
	p.mu.Lock()
	p.caches = append(p.caches, watcher(fn))
	p.mu.Unlock()
}

type watcher func(keys []string, all bool)

func (w watcher) evict(keys []string, all bool) { w(keys, all) }

// DefaultGap is the least time between two polls of a feed.
const DefaultGap = time.Millisecond

// NewPoller returns a poller of feed; its caches forget everything when the feed has not been
// read for stale.
func NewPoller(feed Feed, stale time.Duration) *Poller {
	return &Poller{feed: feed, stale: stale, gap: DefaultGap}
}

// Sync waits for a poll of the feed that starts after Sync is called. After Sync, no cache of p
// holds anything older than the feed's contents at the call.
func (p *Poller) Sync(ctx context.Context) error { return p.SyncSince(ctx, time.Now()) }

// SyncSince waits for a poll of the feed that started at or after t: it returns at once when
// the last successful poll did, joins the poll under way when that one did, and otherwise
// waits for the next. After it, no cache of p holds anything older than the feed's contents
// at t. A request that began at t (see WithBegan) and reads several caches of one poller, one
// after another, so waits for one poll instead of one per cache.
func (p *Poller) SyncSince(ctx context.Context, t time.Time) error {
	p.mu.Lock()
	if !p.polled.IsZero() && !p.polled.Before(t) {
		p.mu.Unlock()
		return nil
	}
	ch := make(chan error, 1) // made only here: the common answer above allocates nothing
	switch {
	case p.inRound && !p.started.Before(t):
		p.joiners = append(p.joiners, ch)
	default:
		p.waiters = append(p.waiters, ch)
		if !p.polling {
			p.polling = true
			go p.pollLoop()
		}
	}
	p.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pollLoop polls for as long as there are waiters: each round serves the waiters that arrived
// before it started.
func (p *Poller) pollLoop() {
	for {
		p.mu.Lock()
		if wait := p.gap - time.Since(p.started); wait > 0 && len(p.waiters) > 0 {
			p.mu.Unlock()
			time.Sleep(wait) // let more readers join the round
			p.mu.Lock()
		}
		waiters := p.waiters
		p.waiters = nil
		if len(waiters) == 0 {
			p.polling = false
			p.mu.Unlock()
			return
		}
		horizon := p.horizon
		p.started, p.inRound = time.Now(), true
		started := p.started
		p.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		keys, next, err := p.feed.Changes(ctx, horizon)
		cancel()
		tooMany := errors.Is(err, ErrTooManyChanges)
		if tooMany {
			keys, err = nil, nil
		}

		p.mu.Lock()
		if err == nil {
			// Past stale, changes may have left the feed unseen.
			all := tooMany || !p.polled.IsZero() && started.Sub(p.polled) > p.stale
			for _, c := range p.caches {
				c.evict(keys, all)
			}
			p.horizon, p.polled = next, started
		}
		waiters = append(waiters, p.joiners...)
		p.joiners, p.inRound = nil, false
		p.mu.Unlock()
		for _, w := range waiters {
			w <- err
		}
	}
}

// Cache maps keys to values of type V. The zero value is not usable; see New and NewCache.
type Cache[V any] struct {
	poller *Poller
	max    int

	mu      sync.Mutex
	entries map[string]V
	gen     uint64 // bumped by every eviction, so a fill that raced one is not kept
}

// New returns a cache of at most max entries over feed, with a poller of its own (see
// NewPoller).
func New[V any](feed Feed, max int, stale time.Duration) *Cache[V] {
	return NewCache[V](NewPoller(feed, stale), max)
}

// NewCache returns a cache of at most max entries kept by p.
func NewCache[V any](p *Poller, max int) *Cache[V] {
	c := &Cache[V]{poller: p, max: max, entries: map[string]V{}}
	p.mu.Lock()
	p.caches = append(p.caches, c)
	p.mu.Unlock()
	return c
}

// Sync waits for a poll of the feed that starts after Sync is called (see Poller.Sync), and
// returns the generation to pass to Put.
func (c *Cache[V]) Sync(ctx context.Context) (uint64, error) { return c.SyncSince(ctx, time.Now()) }

// SyncSince waits for a poll of the feed that started at or after t (see Poller.SyncSince), and
// returns the generation to pass to Put.
func (c *Cache[V]) SyncSince(ctx context.Context, t time.Time) (uint64, error) {
	if err := c.poller.SyncSince(ctx, t); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, nil
}

func (c *Cache[V]) evict(keys []string, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if all {
		clear(c.entries)
	}
	for _, k := range keys {
		delete(c.entries, k)
	}
	// Any change bumps the generation, cached or not: a fill in progress may have read the
	// value from before it.
	if all || len(keys) > 0 {
		c.gen++
	}
}

// Get returns the cached value of key, if any. Call Sync first.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[key]
	return v, ok
}

// Put caches v under key, unless an eviction happened since gen (from Sync before the value
// was read): the value might then predate a change the eviction stood for.
func (c *Cache[V]) Put(gen uint64, key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= c.max {
		clear(c.entries) // crude but bounded; a miss only costs a lookup
		c.gen++
		return
	}
	c.entries[key] = v
}

// Len returns the number of cached entries.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

type beganKey struct{}

// WithBegan records in ctx when the request it carries began, for Began.
func WithBegan(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, beganKey{}, t)
}

// Began returns when the request carried by ctx began (see WithBegan), or the current time
// when nothing recorded it. A read may sync with SyncSince(Began(ctx)): whatever was
// acknowledged before the request began, it sees.
func Began(ctx context.Context) time.Time {
	if t, ok := ctx.Value(beganKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}
