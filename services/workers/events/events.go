// Package events publishes what provider answers mean for addresses to Herald's events stream,
// where the contacts service picks them up.
package events

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/services/workers"
)

// Announcer implements workers.Announcer on JetStream.
type Announcer struct {
	JS jetstream.JetStream
}

var _ workers.Announcer = (*Announcer)(nil)

var subjects = map[workers.Effect]string{
	workers.DeactivateToken: events.TokenInvalid,
	workers.InvalidNumber:   events.NumberInvalid,
	workers.OptOut:          events.OptedOut,
}

// Announce implements workers.Announcer.
func (a *Announcer) Announce(ctx context.Context, at workers.Attempt) error {
	subject, ok := subjects[at.Effect]
	if !ok {
		return fmt.Errorf("no event for effect %q", at.Effect)
	}
	m := at.Message
	return events.Publish(ctx, a.JS, subject, events.Event{
		DeliveryID: m.DeliveryID, UserID: m.UserID, Channel: m.Channel, Address: m.To,
		Category: m.Category, Reason: at.Reason, Since: at.Since,
	})
}

// deadLetters is the namespace of dead-letter event ids.
var deadLetters = uuid.MustParse("6f1c1c7e-2b8e-4f4b-9a57-0d3c5e2a9b41")

// DeadLetter implements workers.Announcer. The event's id is derived from the attempt, so a
// publish retried after a lost answer is dropped by the stream as a duplicate.
func (a *Announcer) DeadLetter(ctx context.Context, at workers.Attempt) error {
	m := at.Message
	return events.Publish(ctx, a.JS, events.Dead, events.Event{
		ID:         uuid.NewSHA1(deadLetters, fmt.Appendf(nil, "%s/%d/%d", m.DeliveryID, m.Attempt, at.Started.UnixNano())),
		DeliveryID: m.DeliveryID, UserID: m.UserID, Channel: m.Channel, Category: m.Category, Reason: at.Reason,
	})
}
