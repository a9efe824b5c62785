// Package events connects the contacts service to Herald's events stream: it announces erased
// users, and applies what providers said about addresses (dead tokens, invalid numbers,
// opt-outs at the provider), which the workers publish.
package events

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
)

// Publisher implements contacts.Publisher on JetStream.
type Publisher struct {
	JS jetstream.JetStream
}

var _ contacts.Publisher = (*Publisher)(nil)

// UserDeleted implements contacts.Publisher.
func (p *Publisher) UserDeleted(ctx context.Context, userID string) error {
	return events.Publish(ctx, p.JS, events.UserDeleted, events.Event{UserID: userID})
}

// Durable is the name of the contacts service's consumer of the events stream.
const Durable = "contacts"

// Apply consumes address facts and applies them to svc until the returned context is stopped.
// Each handler is idempotent, so a fact delivered twice does no harm.
func Apply(ctx context.Context, js jetstream.JetStream, svc *contacts.Service) (jetstream.ConsumeContext, error) {
	return events.Consume(ctx, js, Durable,
		[]string{events.TokenInvalid, events.NumberInvalid, events.EmailInvalid, events.OptedOut},
		func(ctx context.Context, subject string, e events.Event) error {
			return apply(ctx, svc, subject, e)
		})
}

// apply applies one fact. A fact whose address is not one the services store (normalised, for
// its channel) is malformed: it could only suppress an address nothing is ever sent to.
func apply(ctx context.Context, svc *contacts.Service, subject string, e events.Event) error {
	if e.Address == "" {
		return nil // nothing to apply it to
	}
	ch := map[string]delivery.Channel{events.NumberInvalid: delivery.SMS, events.EmailInvalid: delivery.Email}[subject]
	if ch == "" {
		ch = e.Channel
	}
	if !normalised(ch, e.Address) {
		return fmt.Errorf("%w: %s fact about a %q address that is not one", events.ErrMalformed, subject, ch)
	}
	switch subject {
	case events.TokenInvalid:
		if e.Channel != delivery.IOS && e.Channel != delivery.Android {
			return nil
		}
		return svc.DeactivateToken(ctx, e.Channel, e.Address, e.Reason, e.Since)
	case events.NumberInvalid:
		return svc.Suppress(ctx, preference.Suppression{Channel: delivery.SMS, Address: e.Address,
			Reason: e.Reason, Invalid: true})
	case events.EmailInvalid:
		return svc.Suppress(ctx, preference.Suppression{Channel: delivery.Email, Address: e.Address,
			Reason: e.Reason, Invalid: true})
	case events.OptedOut:
		return svc.Suppress(ctx, preference.Suppression{Channel: e.Channel, Address: e.Address,
			Reason: e.Reason})
	}
	return fmt.Errorf("%w: unexpected subject %s", events.ErrMalformed, subject)
}

// normalised reports whether a is an address of channel ch in the form the services store it.
func normalised(ch delivery.Channel, a string) bool {
	parse := map[delivery.Channel]func(string) (string, error){
		delivery.Email: address.Email, delivery.SMS: address.Phone,
		delivery.IOS: address.APNsToken, delivery.Android: address.FCMToken,
	}[ch]
	if parse == nil {
		return false
	}
	norm, err := parse(a)
	return err == nil && norm == a
}
