package links

import (
	"container/list"
	"sync"
)

// cacheShards spreads the cache's lock: redirects on every core touch it.
const cacheShards = 16

// Cache is a bounded least-recently-used map from link ids to values, safe for concurrent use.
type Cache[V any] struct {
	shards [cacheShards]cacheShard[V]
}

type cacheShard[V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used
	items map[int64]*list.Element
}

type cacheEntry[V any] struct {
	key int64
	val V
}

// NewCache returns a Cache that holds at most size entries (at least one per shard).
func NewCache[V any](size int) *Cache[V] {
	c := &Cache[V]{}
	per := max(size/cacheShards, 1)
	for i := range c.shards {
		c.shards[i] = cacheShard[V]{max: per, order: list.New(), items: make(map[int64]*list.Element, per)}
	}
	return c
}

func (c *Cache[V]) shard(k int64) *cacheShard[V] {
	// The low bits are a sequence number: consecutive links land in different shards.
	return &c.shards[uint64(k)%cacheShards]
}

// Get returns the value of k and marks it used.
func (c *Cache[V]) Get(k int64) (V, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[k]; ok {
		s.order.MoveToFront(e)
		return e.Value.(*cacheEntry[V]).val, true
	}
	var zero V
	return zero, false
}

// Add stores v for k, evicting the least recently used entry of a full shard.
func (c *Cache[V]) Add(k int64, v V) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[k]; ok {
		e.Value.(*cacheEntry[V]).val = v
		s.order.MoveToFront(e)
		return
	}
	if s.order.Len() >= s.max {
		old := s.order.Back()
		s.order.Remove(old)
		delete(s.items, old.Value.(*cacheEntry[V]).key)
	}
	s.items[k] = s.order.PushFront(&cacheEntry[V]{key: k, val: v})
}

// Len counts the entries.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += c.shards[i].order.Len()
		c.shards[i].mu.Unlock()
	}
	return n
}
