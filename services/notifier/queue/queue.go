// Package queue publishes the notifier's deliveries to their channels' JetStream streams.
package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/notifier"
)

// Publisher implements notifier.Publisher with asynchronous JetStream publishes: a call costs
// one round of acknowledgements, however many messages it puts on the queues.
type Publisher struct {
	js jetstream.JetStream
	// timeout bounds the wait for the broker's acknowledgements.
	timeout time.Duration
}

var (
	_ notifier.Publisher = (*Publisher)(nil)
	_ notifier.Backlog   = (*Publisher)(nil)
)

// NewPublisher returns a Publisher on nc that waits up to timeout for the broker's
// acknowledgements. It makes a JetStream handle of its own, whose asynchronous publishes give an
// acknowledgement up after timeout too: without that, an acknowledgement that never comes (a
// stream leader that died with the message) holds its place among the client's pending
// publishes for good, and once those places are all held, every publish stalls and fails.
func NewPublisher(nc *nats.Conn, timeout time.Duration) (*Publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Publisher{js: js, timeout: timeout}, nil
}

// Publish implements notifier.Publisher: each channel's deliveries go out as messages of up to
// queue.MaxBatch ids. Each message's Nats-Msg-Id is an id of its own, so the broker stores a
// message the client publishes twice (after a lost acknowledgement) once, while a deliberate
// re-publish of the same deliveries (the reconciler's) is a new message.
func (p *Publisher) Publish(ctx context.Context, byChannel map[delivery.Channel][]uuid.UUID) error {
	// The deliveries are committed: finish publishing even if the caller has gone away.
	// ctx keeps the caller's values, its trace among them.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	var futures []jetstream.PubAckFuture
	var first error
publish:
	for ch, ids := range byChannel {
		for start := 0; start < len(ids); start += queue.MaxBatch {
			msg := &nats.Msg{Subject: queue.Subject(ch), Data: queue.EncodeBatch(ids[start:min(start+queue.MaxBatch, len(ids))])}
			tracing.Inject(ctx, msg) // the workers' spans join the trace of the commit
			f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(uuid.Must(uuid.NewV7()).String()),
				jetstream.WithStallWait(p.timeout))
			if err != nil {
				first = fmt.Errorf("publish %d %s deliveries: %w", len(ids), ch, err)
				break publish
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if first == nil {
				first = fmt.Errorf("publish: %w", err)
			}
		case <-ctx.Done():
			if first == nil {
				first = fmt.Errorf("publish: waiting for acknowledgements: %w", ctx.Err())
			}
			return first
		}
	}
	return first
}

// OldestWaiting implements notifier.Backlog (see queue.ReadBacklog).
func (p *Publisher) OldestWaiting(ctx context.Context, ch delivery.Channel) (time.Time, bool, error) {
	b, err := queue.ReadBacklog(ctx, p.js, ch)
	return b.Oldest, !b.Oldest.IsZero(), err
}
