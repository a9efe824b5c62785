package coherent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// store is a database with a change feed: a write changes the value and appends its key to the
// feed in one step, as a transaction would.
type store struct {
	mu     sync.Mutex
	values map[string]int
	feed   []string
	polls  atomic.Int64
}

func (s *store) write(key string, v int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key] = v
	s.feed = append(s.feed, key)
}

func (s *store) read(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Let a read straddle concurrent writes and polls, as a database round trip would.
	time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
	return s.values[key]
}

func (s *store) Changes(_ context.Context, horizon uint64) ([]string, uint64, error) {
	s.polls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.feed[horizon:]...), uint64(len(s.feed)), nil
}

// get reads through the cache the way the contacts service does.
func get(ctx context.Context, c *Cache[int], s *store, key string) (int, error) {
	gen, err := c.Sync(ctx)
	if err != nil {
		return 0, err
	}
	if v, ok := c.Get(key); ok {
		return v, nil
	}
	v := s.read(key)
	c.Put(gen, key, v)
	return v, nil
}

// TestReadAfterWrite checks the cache's promise under concurrency: once a write returned, every
// read that starts afterwards, through any replica's cache, sees it or something newer.
func TestReadAfterWrite(t *testing.T) {
	s := &store{values: map[string]int{}}
	replicas := []*Cache[int]{New[int](s, 1000, time.Hour), New[int](s, 1000, time.Hour)}
	replicas[1].poller.gap = 0 // one replica polls back to back, the other DefaultGap apart
	ctx := context.Background()
	keys := []string{"a", "b", "c"}
	var acked sync.Map // key -> last acknowledged version
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for _, k := range keys {
		writers.Add(1)
		go func() { // one writer per key, writing increasing versions
			defer writers.Done()
			for v := 1; ; v++ {
				select {
				case <-stop:
					return
				default:
				}
				s.write(k, v)
				acked.Store(k, v)
				time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
			}
		}()
	}
	errs := make(chan error, 8)
	for r := range 8 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c := replicas[r%2]
			for range 500 {
				k := keys[rand.IntN(len(keys))]
				before, _ := acked.Load(k)
				got, err := get(ctx, c, s, k)
				if err != nil {
					errs <- err
					return
				}
				if b, ok := before.(int); ok && got < b {
					errs <- fmt.Errorf("read %s = %d after version %d was acknowledged", k, got, b)
					return
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	writers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d polls served 4000 reads", s.polls.Load())
}

func TestHitsWithoutWrites(t *testing.T) {
	s := &store{values: map[string]int{"k": 7}}
	c := New[int](s, 10, time.Hour)
	ctx := context.Background()
	for range 3 {
		if v, err := get(ctx, c, s, "k"); err != nil || v != 7 {
			t.Fatalf("get = %d, %v", v, err)
		}
	}
	if c.Len() != 1 {
		t.Fatalf("%d entries, want 1", c.Len())
	}
	s.write("k", 8)
	if v, _ := get(ctx, c, s, "k"); v != 8 {
		t.Fatalf("after a write: %d, want 8", v)
	}
}

func TestBounded(t *testing.T) {
	s := &store{values: map[string]int{}}
	c := New[int](s, 5, time.Hour)
	ctx := context.Background()
	for i := range 50 {
		if _, err := get(ctx, c, s, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		if c.Len() > 5 {
			t.Fatalf("%d entries, more than the bound", c.Len())
		}
	}
}

type failingFeed struct{}

func (failingFeed) Changes(context.Context, uint64) ([]string, uint64, error) {
	return nil, 0, fmt.Errorf("database down")
}

func TestFeedErrorFailsTheRead(t *testing.T) {
	c := New[int](failingFeed{}, 5, time.Hour)
	if _, err := c.Sync(context.Background()); err == nil {
		t.Fatal("Sync succeeded with a failing feed")
	}
}

// TestSharedPoller: caches on one poller are kept by the same polls.
func TestSharedPoller(t *testing.T) {
	s := &store{values: map[string]int{"key:1": 1, "template:a": 1}}
	p := NewPoller(s, time.Hour)
	keys, templates := NewCache[int](p, 10), NewCache[int](p, 10)
	ctx := context.Background()
	for _, c := range []*Cache[int]{keys, templates} {
		for _, k := range []string{"key:1", "template:a"} {
			if v, err := get(ctx, c, s, k); err != nil || v != 1 {
				t.Fatalf("get %s = %d, %v", k, v, err)
			}
		}
	}
	s.write("template:a", 2)
	polls := s.polls.Load()
	if v, _ := get(ctx, keys, s, "template:a"); v != 2 {
		t.Fatalf("after a write: %d, want 2", v)
	}
	// The poll that served keys evicted from templates too: no poll of its own is needed to
	// drop the old value.
	if v, ok := templates.Get("template:a"); ok {
		t.Fatalf("templates still holds %d after the poll", v)
	}
	if v, ok := templates.Get("key:1"); !ok || v != 1 {
		t.Fatalf("templates lost an unchanged key: %d, %v", v, ok)
	}
	if n := s.polls.Load() - polls; n != 1 {
		t.Fatalf("%d polls, want 1", n)
	}
}

// blockingFeed holds each poll until release is closed, and counts the polls.
type blockingFeed struct {
	polls   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (f *blockingFeed) Changes(ctx context.Context, horizon uint64) ([]string, uint64, error) {
	f.polls.Add(1)
	f.entered <- struct{}{}
	<-f.release
	return nil, horizon, nil
}

func TestSyncSince(t *testing.T) {
	ctx := context.Background()
	s := &store{values: map[string]int{}}
	p := NewPoller(s, time.Hour)
	began := time.Now()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The poll that Sync waited for started after began: a request that began then needs no
	// other, however many caches it reads.
	for range 3 {
		if err := p.SyncSince(ctx, began); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.polls.Load(); n != 1 {
		t.Fatalf("%d polls, want 1", n)
	}
	// A request that began after the last poll started waits for a new one.
	if err := p.SyncSince(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := s.polls.Load(); n != 2 {
		t.Fatalf("%d polls, want 2", n)
	}
}

func TestSyncSinceJoinsTheRoundUnderWay(t *testing.T) {
	ctx := context.Background()
	f := &blockingFeed{entered: make(chan struct{}), release: make(chan struct{})}
	p := NewPoller(f, time.Hour)
	began := time.Now()
	first := make(chan error, 1)
	go func() { first <- p.SyncSince(ctx, began) }()
	<-f.entered // the round that started after began is under way
	joined := make(chan error, 1)
	go func() { joined <- p.SyncSince(ctx, began) }()
	// Only a round of its own could let the joiner through before the first round ends.
	waitFor(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.joiners) == 1
	})
	close(f.release)
	for _, ch := range []chan error{first, joined} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if n := f.polls.Load(); n != 1 {
		t.Fatalf("%d polls, want 1", n)
	}
}

func TestBegan(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got := Began(WithBegan(context.Background(), at)); !got.Equal(at) {
		t.Fatalf("Began = %v, want %v", got, at)
	}
	if got := Began(context.Background()); time.Since(got) > time.Minute {
		t.Fatalf("Began without a stamp = %v, want about now", got)
	}
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
	}
}

// TestWatch: a watcher sees each poll's keys before the readers of that poll go on.
func TestWatch(t *testing.T) {
	ctx := context.Background()
	s := &store{values: map[string]int{}}
	p := NewPoller(s, time.Hour)
	var seen []string
	p.Watch(func(keys []string, all bool) { seen = append(seen, keys...) })
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.write("a", 1)
	s.write("b", 1)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if fmt.Sprint(seen) != "[a b]" {
		t.Fatalf("watched %q, want [a b]", seen)
	}
}

// tooMany is a feed too far behind to list its changes.
type tooMany struct{ polls atomic.Int64 }

func (f *tooMany) Changes(_ context.Context, horizon uint64) ([]string, uint64, error) {
	if f.polls.Add(1) == 1 {
		return nil, 1, nil
	}
	return nil, horizon + 1, ErrTooManyChanges
}

// TestTooManyChangesForgetsEverything: a feed that cannot list its changes makes every cache
// forget, and the read goes on.
func TestTooManyChangesForgetsEverything(t *testing.T) {
	ctx := context.Background()
	p := NewPoller(&tooMany{}, time.Hour)
	c := NewCache[int](p, 10)
	var forgot bool
	p.Watch(func(_ []string, all bool) { forgot = forgot || all })
	gen, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(gen, "k", 1)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync after too many changes: %v", err)
	}
	if _, ok := c.Get("k"); ok || !forgot {
		t.Fatalf("after too many changes the cache holds k (%v), the watcher saw all=%v", ok, forgot)
	}
}
