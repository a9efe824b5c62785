package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
)

// Backlog is what a channel's queue holds.
type Backlog struct {
	// Pending counts the messages no worker has received yet; InFlight those received and not
	// yet acknowledged.
	Pending, InFlight int64
	// Oldest is when the oldest pending message was published; zero when none is pending.
	Oldest time.Time
}

// ReadBacklog reads ch's queue: its consumer's pending and in-flight counts and the publish time
// of the first message after the last one the consumer delivered. Before any worker created the
// consumer, everything in the stream is pending.
func ReadBacklog(ctx context.Context, js jetstream.JetStream, ch delivery.Channel) (Backlog, error) {
	// One request when nothing is pending, which is the common case: the consumer's info. The
	// stream is asked only for what that cannot tell.
	var b Backlog
	from := uint64(1)
	c, err := js.Consumer(ctx, Stream(ch), Consumer(ch))
	noConsumer := errors.Is(err, jetstream.ErrConsumerNotFound)
	switch {
	case noConsumer: // every message in the stream is pending, counted below
	case err != nil:
		return b, fmt.Errorf("consumer %s: %w", Consumer(ch), err)
	default:
		info := c.CachedInfo() // fetched by Consumer just now
		b.Pending, b.InFlight = int64(info.NumPending), int64(info.NumAckPending)
		if b.Pending == 0 {
			return b, nil
		}
		from = info.Delivered.Stream + 1
	}
	s, err := js.Stream(ctx, Stream(ch))
	if err != nil {
		return Backlog{}, fmt.Errorf("stream %s: %w", Stream(ch), err)
	}
	if noConsumer {
		if b.Pending = int64(s.CachedInfo().State.Msgs); b.Pending == 0 {
			return b, nil
		}
	}
	m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(Subject(ch)))
	if errors.Is(err, jetstream.ErrMsgNotFound) { // received in the meantime
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("stream %s: message at %d: %w", Stream(ch), from, err)
	}
	b.Oldest = m.Time
	return b, nil
}
