// Package queue publishes the notifier's deliveries to their channels' JetStream streams.
package queue

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/notifier"
)

// Publisher implements notifier.Publisher with asynchronous JetStream publishes. Publish hands
// the messages to the client and returns; the broker's acknowledgements are awaited in the
// background, and a message it did not take is logged. Waiting for them would add the broker's
// write (an fsync per message with sync_interval: always) to every Send and gain nothing: the
// delivery is committed in PostgreSQL with its deadline, and the reconciler publishes again
// what the queue did not take.
type Publisher struct {
	js  jetstream.JetStream
	log *slog.Logger
	// Timeout bounds the wait for the broker's acknowledgements, and for room in the client's
	// window of unacknowledged publishes.
	Timeout time.Duration
}

var (
	_ notifier.Publisher = (*Publisher)(nil)
	_ notifier.Backlog   = (*Publisher)(nil)
)

// NewPublisher returns a Publisher on js that logs unacknowledged publishes to log.
func NewPublisher(js jetstream.JetStream, log *slog.Logger) *Publisher {
	return &Publisher{js: js, log: log, Timeout: 5 * time.Second}
}

// Publish implements notifier.Publisher. Each message's Nats-Msg-Id is derived from the delivery
// id and its generation, so the broker stores a retried publish once. It fails only when the
// client cannot take the messages (closed, or its window stayed full for Timeout).
func (p *Publisher) Publish(ctx context.Context, pubs []notifier.Publication) error {
	// The deliveries are committed: finish publishing even if the caller has gone away. ctx
	// keeps the caller's values, its trace among them.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.Timeout)
	futures := make([]jetstream.PubAckFuture, 0, len(pubs))
	var err error
	for _, pub := range pubs {
		msg := &nats.Msg{Subject: queue.Subject(pub.Channel), Data: []byte(pub.DeliveryID.String())}
		tracing.Inject(ctx, msg) // the worker's span joins the Send's trace
		var f jetstream.PubAckFuture
		f, err = p.js.PublishMsgAsync(msg,
			jetstream.WithMsgID(queue.MsgID(pub.DeliveryID, pub.Generation)),
			jetstream.WithStallWait(p.Timeout))
		if err != nil {
			err = fmt.Errorf("publish delivery %s: %w", pub.DeliveryID, err)
			break
		}
		futures = append(futures, f)
	}
	go p.awaitAcks(ctx, cancel, futures)
	return err
}

// awaitAcks waits for the broker's acknowledgements and logs those that fail or do not come.
func (p *Publisher) awaitAcks(ctx context.Context, cancel context.CancelFunc, futures []jetstream.PubAckFuture) {
	defer cancel()
	failed := 0
	var first error
	for _, f := range futures {
		select {
		case <-f.Ok():
			continue
		case err := <-f.Err():
			first = cmp.Or(first, err)
		case <-ctx.Done():
			first = cmp.Or(first, fmt.Errorf("waiting for acknowledgements: %w", ctx.Err()))
		}
		failed++
	}
	if failed > 0 {
		p.log.Warn("publish failed; the reconciler will publish again", "deliveries", failed, "err", first)
	}
}

// OldestWaiting implements notifier.Backlog (see queue.ReadBacklog).
func (p *Publisher) OldestWaiting(ctx context.Context, ch delivery.Channel) (time.Time, bool, error) {
	b, err := queue.ReadBacklog(ctx, p.js, ch)
	return b.Oldest, !b.Oldest.IsZero(), err
}
