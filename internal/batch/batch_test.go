package batch

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestBatchesConcurrentCalls(t *testing.T) {
	var batches, calls atomic.Int64
	release := make(chan struct{})
	b := New(func(_ context.Context, reqs []int) ([]int, []error, error) {
		if batches.Add(1) == 1 {
			<-release // hold the first batch so the others pile up
		}
		calls.Add(int64(len(reqs)))
		out := make([]int, len(reqs))
		errs := make([]error, len(reqs))
		for i, r := range reqs {
			out[i] = r * 2
			if r == 7 {
				errs[i] = errors.New("seven")
			}
		}
		return out, errs, nil
	}, 50, 1)
	defer b.Close()
	var wg sync.WaitGroup
	// One call runs alone and is held; the next 50 (a full batch, which is what the queue
	// holds) pile up behind it and must then run as one batch.
	const n = 51
	results := make([]int, n)
	failures := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], failures[i] = b.Do(context.Background(), i) })
		if i == 0 {
			for batches.Load() == 0 { // the first call is running alone
				runtime.Gosched()
			}
		}
	}
	for len(b.queue) < n-1 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	for i := range n {
		if i == 7 {
			if failures[i] == nil {
				t.Error("request 7's own error was lost")
			}
			continue
		}
		if failures[i] != nil || results[i] != 2*i {
			t.Errorf("request %d = %d, %v", i, results[i], failures[i])
		}
	}
	if calls.Load() != n || batches.Load() != 2 {
		t.Errorf("%d calls in %d batches, want %d in 2", calls.Load(), batches.Load(), n)
	}
}

func TestBatchError(t *testing.T) {
	boom := errors.New("boom")
	b := New(func(context.Context, []string) ([]string, []error, error) { return nil, nil, boom }, 8, 2)
	defer b.Close()
	if _, err := b.Do(context.Background(), "x"); !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want the batch's error", err)
	}
}

func TestCanceledCallerIsAnswered(t *testing.T) {
	b := New(func(_ context.Context, reqs []int) ([]int, []error, error) { return reqs, nil, nil }, 8, 1)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with a canceled context = %v", err)
	}
	if r, err := b.Do(context.Background(), 2); err != nil || r != 2 {
		t.Fatalf("Do after = %d, %v", r, err)
	}
}

func TestDoAll(t *testing.T) {
	var sizes []int
	var mu sync.Mutex
	b := New(func(_ context.Context, reqs []int) ([]int, []error, error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		out := make([]int, len(reqs))
		errs := make([]error, len(reqs))
		for i, r := range reqs {
			out[i] = r + 1
			if r == 3 {
				errs[i] = errors.New("three")
			}
		}
		return out, errs, nil
	}, 4, 1)
	defer b.Close()
	reqs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	res, errs := b.DoAll(context.Background(), reqs)
	for i, r := range reqs {
		switch {
		case r == 3 && errs[i] == nil:
			t.Error("request 3's own error was lost")
		case r != 3 && (errs[i] != nil || res[i] != r+1):
			t.Errorf("request %d = %d, %v", r, res[i], errs[i])
		}
	}
	// One caller's requests are not split more than the maximum requires.
	if !slices.Equal(sizes, []int{4, 4, 2}) {
		t.Errorf("batches of %v, want 4, 4 and 2", sizes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, errs := b.DoAll(ctx, reqs); !errors.Is(errs[0], context.Canceled) {
		t.Errorf("DoAll with a canceled context: %v", errs[0])
	}
}
