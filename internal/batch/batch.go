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

// call is one caller's requests (one for Do, up to max for DoAll), which run in one batch.
type call[Req, Res any] struct {
	ctx   context.Context
	reqs  []Req
	reply chan []reply[Res]
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
	r := b.do(ctx, []Req{req})
	return r[0].res, r[0].err
}

// DoAll runs reqs in batches with whatever other calls are waiting, as one caller handing in
// several requests at once: up to max of them share one batch. It returns each request's result
// and error.
func (b *Batcher[Req, Res]) DoAll(ctx context.Context, reqs []Req) ([]Res, []error) {
	res, errs := make([]Res, len(reqs)), make([]error, len(reqs))
	replies := make([]chan []reply[Res], 0, (len(reqs)+b.max-1)/b.max)
	for start := 0; start < len(reqs); start += b.max {
		replies = append(replies, b.enqueue(ctx, reqs[start:min(start+b.max, len(reqs))]))
	}
	for i, ch := range replies {
		for j, r := range b.wait(ctx, ch, min(b.max, len(reqs)-i*b.max)) {
			res[i*b.max+j], errs[i*b.max+j] = r.res, r.err
		}
	}
	return res, errs
}

func (b *Batcher[Req, Res]) do(ctx context.Context, reqs []Req) []reply[Res] {
	return b.wait(ctx, b.enqueue(ctx, reqs), len(reqs))
}

// enqueue hands reqs to the runners and returns where their replies will come, or a channel
// that already holds the error when they could not be handed in.
func (b *Batcher[Req, Res]) enqueue(ctx context.Context, reqs []Req) chan []reply[Res] {
	c := call[Req, Res]{ctx: ctx, reqs: reqs, reply: make(chan []reply[Res], 1)}
	select {
	case b.queue <- c:
		return c.reply
	case <-ctx.Done():
		c.reply <- failed[Res](len(reqs), ctx.Err())
	case <-b.done:
		c.reply <- failed[Res](len(reqs), ErrClosed)
	}
	return c.reply
}

// wait returns the n replies that come on ch, or ctx's error for each.
func (b *Batcher[Req, Res]) wait(ctx context.Context, ch chan []reply[Res], n int) []reply[Res] {
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		// The batch may still run the requests; their results are dropped.
		return failed[Res](n, ctx.Err())
	}
}

func failed[Res any](n int, err error) []reply[Res] {
	out := make([]reply[Res], n)
	for i := range out {
		out[i].err = err
	}
	return out
}

// Close stops the runners once the queued calls are answered with ErrClosed. Closing again does
// nothing.
func (b *Batcher[Req, Res]) Close() { b.closeOnce.Do(func() { close(b.done) }) }

func (b *Batcher[Req, Res]) loop() {
	var calls []call[Req, Res]
	var held *call[Req, Res] // taken from the queue, too many for the last batch: the next one's
	reqs := make([]Req, 0, b.max)
	for {
		calls, reqs = calls[:0], reqs[:0]
		if held != nil {
			calls, held = append(calls, *held), nil
		} else {
			select {
			case c := <-b.queue:
				calls = append(calls, c)
			case <-b.done:
				return
			}
		}
		n := len(calls[0].reqs)
	more:
		for n < b.max {
			select {
			case c := <-b.queue:
				if n+len(c.reqs) > b.max {
					held = &c
					break more
				}
				calls, n = append(calls, c), n+len(c.reqs)
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
				c.reply <- failed[Res](len(c.reqs), c.ctx.Err())
				continue
			}
			live = append(live, c)
			reqs = append(reqs, c.reqs...)
		}
		if len(live) == 0 {
			continue
		}
		res, errs, err := b.run(ctx, reqs)
		at := 0
		for _, c := range live {
			out := make([]reply[Res], len(c.reqs))
			for j := range out {
				switch {
				case err != nil:
					out[j].err = err
				default:
					out[j].res = res[at+j]
					if errs != nil {
						out[j].err = errs[at+j]
					}
				}
			}
			at += len(c.reqs)
			c.reply <- out
		}
	}
}
