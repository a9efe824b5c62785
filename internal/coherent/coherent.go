// Package coherent is a read cache that stays exact across replicas. Writers record the keys
// they change in a change feed (a table written in the same transaction as the change); every
// read first waits for a poll of the feed that started after the read did, and that poll evicts
// whatever changed. So a read that begins after a write was acknowledged, on any replica, never
// sees the value from before it, while the database sees one small feed query per round of
// concurrent reads instead of one lookup per read.
//
// This is written by hand because the caches that libraries offer expire entries by time,
// which cannot give "every read after the acknowledgement sees the change".
package coherent

import (
	"context"
	"sync"
	"time"
)

// Feed reads the change feed.
type Feed interface {
	// Changes returns the keys changed by transactions at or after horizon (an opaque position,
	// zero at first) and the horizon to pass next time. Keys may repeat across calls. It must
	// report every change committed before the call began.
	Changes(ctx context.Context, horizon uint64) (keys []string, next uint64, err error)
}

// Cache maps keys to values of type V. The zero value is not usable; see New.
type Cache[V any] struct {
	feed Feed
	max  int
	// stale is how long the feed may go unread before the cache stops trusting itself (the feed
	// keeps changes for longer than this).
	stale time.Duration

	mu      sync.Mutex
	entries map[string]V
	gen     uint64 // bumped by every eviction, so a fill that raced one is not kept
	horizon uint64
	polled  time.Time
	waiters []chan error
	polling bool
}

// New returns a cache of at most max entries over feed; it forgets everything when the feed has
// not been read for stale.
func New[V any](feed Feed, max int, stale time.Duration) *Cache[V] {
	return &Cache[V]{feed: feed, max: max, stale: stale, entries: map[string]V{}}
}

// Sync waits for a poll of the feed that starts after Sync is called, and returns the
// generation to pass to Put. After Sync, Get returns nothing older than the feed's contents at
// the call.
func (c *Cache[V]) Sync(ctx context.Context) (uint64, error) {
	ch := make(chan error, 1)
	c.mu.Lock()
	c.waiters = append(c.waiters, ch)
	if !c.polling {
		c.polling = true
		go c.pollLoop()
	}
	c.mu.Unlock()
	select {
	case err := <-ch:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, nil
}

// pollLoop polls for as long as there are waiters: each round serves the waiters that arrived
// before it started.
func (c *Cache[V]) pollLoop() {
	for {
		c.mu.Lock()
		waiters := c.waiters
		c.waiters = nil
		if len(waiters) == 0 {
			c.polling = false
			c.mu.Unlock()
			return
		}
		horizon := c.horizon
		c.mu.Unlock()

		started := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		keys, next, err := c.feed.Changes(ctx, horizon)
		cancel()

		c.mu.Lock()
		if err == nil {
			evicted := len(keys) > 0
			if !c.polled.IsZero() && started.Sub(c.polled) > c.stale {
				clear(c.entries) // changes may have left the feed unseen
				evicted = true
			}
			for _, k := range keys {
				delete(c.entries, k)
			}
			if evicted {
				c.gen++
			}
			c.horizon, c.polled = next, started
		}
		c.mu.Unlock()
		for _, w := range waiters {
			w <- err
		}
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
