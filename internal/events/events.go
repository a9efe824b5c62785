// Package events carries facts between Herald's services over JetStream: what a provider said
// about an address (a dead token, an invalid number, an opt-out), a user's deletion, a dead
// letter. The stream is durable and each consumer is a durable that acks after applying, so
// a fact is applied at least once; every handler is idempotent.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
)

// Stream is the name of the events stream.
const Stream = "HERALD_EVENTS"

// Subjects of the events.
const (
	// TokenInvalid: a provider said a device token is no longer valid.
	TokenInvalid = "events.address.token_invalid"
	// NumberInvalid: a provider said a phone number cannot receive SMS.
	NumberInvalid = "events.address.number_invalid"
	// OptedOut: the recipient opted out at the provider (an SMS STOP Twilio enforces).
	OptedOut = "events.address.opted_out"
	// UserDeleted: the contacts service erased a user; delivery history keeps only the id.
	UserDeleted = "events.user.deleted"
	// Dead: a delivery used up its attempts.
	Dead = "events.delivery.dead"
	// EmailInvalid: a provider said an email address cannot receive mail (a hard bounce).
	EmailInvalid = "events.address.email_invalid"
)

// Event is one fact. Which fields are set depends on the subject.
type Event struct {
	ID         uuid.UUID        `json:"id"`
	At         time.Time        `json:"at"`
	DeliveryID uuid.UUID        `json:"delivery_id,omitzero"`
	UserID     string           `json:"user_id,omitempty"`
	Channel    delivery.Channel `json:"channel,omitempty"`
	// Address is the address the fact is about. Events are data, never logged.
	Address  string `json:"address,omitempty"`
	Category string `json:"category,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Since is when the provider learned the fact (APNs gives it for unregistered tokens).
	Since time.Time `json:"since,omitzero"`
}

// Ensure creates or updates the events stream. Events are kept for a week: long enough for a
// consumer that was down to catch up.
func Ensure(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas == 0 {
		replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Herald facts between services",
		Subjects:    []string{"events.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  2 * time.Minute,
		Replicas:    replicas,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", Stream, err)
	}
	return nil
}

// Publish publishes e on subject and waits for the stream to store it. e.ID de-duplicates a
// retried publish.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, e Event) error {
	if e.ID == uuid.Nil {
		e.ID = uuid.Must(uuid.NewV7())
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: b}, jetstream.WithMsgID(e.ID.String()))
	if err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Limits on an event, in bytes. Events are a few hundred bytes; the text fields hold ids,
// addresses (an FCM token is the longest) and short words.
const (
	maxEvent    = 64 << 10
	maxUserID   = 128
	maxAddress  = 4096
	maxCategory = 64
	maxReason   = 64
)

// ErrMalformed marks an event that can never be applied. Consume terminates such an event
// instead of asking for it again: otherwise one bad event would come back every few seconds,
// forever.
var ErrMalformed = errors.New("malformed event")

// Decode reads an event as Publish writes it. It returns an error wrapping ErrMalformed for
// data that is not such an event, or whose text fields are over their limits or hold what
// PostgreSQL cannot store (NUL).
func Decode(data []byte) (Event, error) {
	var e Event
	if len(data) > maxEvent {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(data))
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{{"user_id", e.UserID, maxUserID}, {"channel", string(e.Channel), len("android")},
		{"address", e.Address, maxAddress}, {"category", e.Category, maxCategory}, {"reason", e.Reason, maxReason}} {
		if len(f.value) > f.max || !pgtext.Valid(f.value) {
			return Event{}, fmt.Errorf("%w: %s is not text of at most %d bytes", ErrMalformed, f.name, f.max)
		}
	}
	if e.Channel != "" {
		if _, err := delivery.ParseChannel(string(e.Channel)); err != nil {
			return Event{}, fmt.Errorf("%w: unknown channel", ErrMalformed)
		}
	}
	return e, nil
}

// Handler applies one event; an error makes the event come back later, unless it wraps
// ErrMalformed.
type Handler func(ctx context.Context, subject string, e Event) error

// Consume runs a durable consumer named durable over the subjects and calls h for each event,
// acking after h succeeds. An event that does not decode, or that h finds malformed, is
// terminated. Stop the returned context to stop consuming.
func Consume(ctx context.Context, js jetstream.JetStream, durable string, subjects []string, h Handler) (jetstream.ConsumeContext, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", durable, err)
	}
	return c.Consume(func(msg jetstream.Msg) {
		e, err := Decode(msg.Data())
		if err != nil {
			msg.TermWithReason("malformed event")
			return
		}
		hctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h(hctx, msg.Subject(), e); errors.Is(err, ErrMalformed) {
			msg.TermWithReason("malformed event")
			return
		} else if err != nil {
			msg.NakWithDelay(5 * time.Second)
			return
		}
		msg.Ack()
	})
}
