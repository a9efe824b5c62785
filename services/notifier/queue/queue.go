// Package queue publishes the notifier's deliveries to their channels' JetStream streams.
package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/notifier"
)

// Publisher implements notifier.Publisher with asynchronous JetStream publishes: a batch costs
// one round of acknowledgements, not one round trip per message.
type Publisher struct {
	js jetstream.JetStream
	// Timeout bounds the wait for the broker's acknowledgements.
	Timeout time.Duration
}

var (
	_ notifier.Publisher = (*Publisher)(nil)
	_ notifier.Backlog   = (*Publisher)(nil)
)

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: js, Timeout: 5 * time.Second}
}

// Publish implements notifier.Publisher. Each message's Nats-Msg-Id is derived from the delivery
// id and its generation, so the broker stores a retried publish once.
func (p *Publisher) Publish(ctx context.Context, pubs []notifier.Publication) error {
	// The deliveries are committed: finish publishing even if the caller has gone away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.Timeout)
	// ctx keeps the caller's values, its trace among them.
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(pubs))
	var first error
	for _, pub := range pubs {
		msg := &nats.Msg{Subject: queue.Subject(pub.Channel), Data: []byte(pub.DeliveryID.String())}
		tracing.Inject(ctx, msg) // the worker's span joins the Send's trace
		f, err := p.js.PublishMsgAsync(msg,
			jetstream.WithMsgID(queue.MsgID(pub.DeliveryID, pub.Generation)),
			jetstream.WithStallWait(p.Timeout))
		if err != nil {
			first = fmt.Errorf("publish delivery %s: %w", pub.DeliveryID, err)
			break
		}
		futures = append(futures, f)
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
