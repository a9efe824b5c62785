// Package batch turns many concurrent calls into few batched ones: callers hand in one request
// each and wait; a few runners take whatever has piled up (up to a maximum), run it as one
// batch, and hand each caller its result. Under light load a call runs alone and at once; under
// heavy load the batches grow, so a database or a remote service sees one round trip for many
// calls (group commit).
//
// Written by hand because what it needs is small and specific: no waiting for a batch to fill
// (which would add latency at low load), and results routed back to each caller.
package batch

import (
	"context"
	"errors"
	"sync"
)

// Func runs a batch: it returns one result and one error per request, in order, or an error
// for the whole batch.
type Func[Req, Res any] func(ctx context.Context, reqs []Req) ([]Res, []error, error)

// Batcher runs Funcs over batches of concurrent calls.
type Batcher[Req, Res any] struct {
	run   Func[Req, Res]
	max   int
	queue chan call[Req, Res]
	done  chan struct{}
	// closeOnce lets Close be called more than once.
	closeOnce sync.Once
}

type call[Req, Res any] struct {
	ctx   context.Context
	req   Req
	reply chan reply[Res]
}

type reply[Res any] struct {
	res Res
	err error
}

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("batcher closed")

// New starts runners goroutines that run batches of at most max requests with run.
func New[Req, Res any](run Func[Req, Res], max, runners int) *Batcher[Req, Res] {
	b := &Batcher[Req, Res]{run: run, max: max, queue: make(chan call[Req, Res], max*runners), done: make(chan struct{})}
	for range runners {
		go b.loop()
	}
	return b
}

// Do runs req in a batch with whatever other calls are waiting, and returns its result.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	c := call[Req, Res]{ctx: ctx, req: req, reply: make(chan reply[Res], 1)}
	var zero Res
	select {
	case b.queue <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.done:
		return zero, ErrClosed
	}
	select {
	case r := <-c.reply:
		return r.res, r.err
	case <-ctx.Done():
		// The batch may still run the request; its result is dropped.
		return zero, ctx.Err()
	}
}

// DoAll runs reqs in batches with whatever other calls are waiting, as one caller handing in
// several requests at once, and returns each request's result and error.
func (b *Batcher[Req, Res]) DoAll(ctx context.Context, reqs []Req) ([]Res, []error) {
	res, errs := make([]Res, len(reqs)), make([]error, len(reqs))
	calls := make([]call[Req, Res], len(reqs))
	queued := make([]bool, len(reqs))
	for i, req := range reqs {
		c := call[Req, Res]{ctx: ctx, req: req, reply: make(chan reply[Res], 1)}
		select {
		case b.queue <- c:
			calls[i], queued[i] = c, true
		case <-ctx.Done():
			errs[i] = ctx.Err()
		case <-b.done:
			errs[i] = ErrClosed
		}
	}
	for i, c := range calls {
		if !queued[i] {
			continue
		}
		select {
		case r := <-c.reply:
			res[i], errs[i] = r.res, r.err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return res, errs
}

// Close stops the runners once the queued calls are answered with ErrClosed. Closing again does
// nothing.
func (b *Batcher[Req, Res]) Close() { b.closeOnce.Do(func() { close(b.done) }) }

func (b *Batcher[Req, Res]) loop() {
	calls := make([]call[Req, Res], 0, b.max)
	reqs := make([]Req, 0, b.max)
	for {
		calls, reqs = calls[:0], reqs[:0]
		select {
		case c := <-b.queue:
			calls = append(calls, c)
		case <-b.done:
			return
		}
	more:
		for len(calls) < b.max {
			select {
			case c := <-b.queue:
				calls = append(calls, c)
			default:
				break more
			}
		}
		// A batch runs under the first caller's context without its cancellation: the others
		// still wait for it.
		ctx := context.WithoutCancel(calls[0].ctx)
		var live []call[Req, Res]
		for _, c := range calls {
			if c.ctx.Err() != nil {
				c.reply <- reply[Res]{err: c.ctx.Err()}
				continue
			}
			live = append(live, c)
			reqs = append(reqs, c.req)
		}
		if len(live) == 0 {
			continue
		}
		res, errs, err := b.run(ctx, reqs)
		for i, c := range live {
			switch {
			case err != nil:
				c.reply <- reply[Res]{err: err}
			default:
				r := reply[Res]{res: res[i]}
				if errs != nil {
					r.err = errs[i]
				}
				c.reply <- r
			}
		}
	}
}
