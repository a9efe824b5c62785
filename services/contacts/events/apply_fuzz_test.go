package events

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/contactstest"
)

var subjects = []string{events.TokenInvalid, events.NumberInvalid, events.EmailInvalid, events.OptedOut, events.UserDeleted}

// FuzzApply feeds the contacts service facts as they come off the events stream: encoded, then
// decoded as Consume decodes them. A fact is applied, or refused as malformed (terminated, never
// asked for again); it never reaches the store with an address that is not normalised for its
// channel or with text PostgreSQL refuses. A fact about a valid address is applied.
func FuzzApply(f *testing.F) {
	for _, s := range []struct {
		pick                               uint8
		channel, address, reason, category string
	}{
		{0, "ios", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "unregistered", ""},
		{0, "android", "fcm:token", "unregistered", ""},
		{0, "ios", "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF", "unregistered", ""},
		{1, "sms", "+14155550123", "invalid_number", ""},
		{1, "", "+1 415 555 0123", "invalid_number", ""},
		{2, "email", "ada@example.com", "hard_bounce", ""},
		{3, "email", "ada@example.com", "unsubscribed", "marketing"},
		{3, "sms", "+14155550123\x00", "stop", ""},
		{3, "push", "x", "stop", ""},
		{4, "", "ada@example.com", "", ""},
	} {
		f.Add(s.pick, s.channel, s.address, s.reason, s.category)
	}
	f.Fuzz(func(t *testing.T, pick uint8, channel, address, reason, category string) {
		subject := subjects[int(pick)%len(subjects)]
		raw, err := json.Marshal(events.Event{At: time.Now(), Channel: delivery.Channel(channel), Address: address,
			Reason: reason, Category: category, Since: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		e, err := events.Decode(raw)
		if err != nil {
			return // terminated by Consume
		}
		store := contactstest.New()
		err = apply(t.Context(), contacts.New(store, store), subject, e)
		if err != nil && !errors.Is(err, events.ErrMalformed) {
			t.Fatalf("apply(%s, %+v) = %v: asked for again, forever", subject, e, err)
		}
		if p := store.Problems(); len(p) > 0 {
			t.Fatalf("apply(%s, %+v) reached the store: %q", subject, e, p)
		}
		if subject == events.NumberInvalid && normalised(delivery.SMS, address) {
			if sups := store.Suppressions(); err != nil || len(sups) != 1 || !sups[0].Invalid || sups[0].Address != address {
				t.Fatalf("invalid number %q: %v, suppressions %v", address, err, sups)
			}
		}
	})
}
