package notifier

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// ProviderEvent is one thing a provider reported, through its status webhook, about a message it
// accepted: delivered, bounced, opened, unsubscribed. The webhooks package translates the
// provider's payload into it; StatsStore.RecordProviderEvents records it once and applies it to
// its delivery.
type ProviderEvent struct {
	// Provider is the provider's name as the workers record it on a delivery ("sendgrid",
	// "twilio").
	Provider string
	// ID is the provider's id for the event, unique per provider; a repeated ID is a repeated
	// webhook delivery.
	ID   string
	Kind ProviderEventKind
	// DeliveryID is the delivery when the provider echoes Herald's id back (SendGrid custom
	// args). When it is uuid.Nil, the delivery is the one with Provider and ProviderMessageID.
	DeliveryID        uuid.UUID
	ProviderMessageID string
	// Reason is recorded as the delivery's reason when the event bounces it: a status or error
	// code, never provider free text that could carry an address.
	Reason string
	// Effect is what the event says about the recipient's address beyond this message.
	Effect     AddressEffect
	OccurredAt time.Time
	// Details is a JSON object of the provider's fields worth keeping for operators. It never
	// holds an address, a phone number or message content.
	Details json.RawMessage

	// RecordProviderEvents sets these on the events it returns, from the event's delivery; they
	// stay zero when the delivery is unknown. DeliveryID is set too.
	Channel  delivery.Channel
	Address  string // never logged
	UserID   string
	Category string
}

// ProviderEventKind is what happened to a message at the provider or after it.
type ProviderEventKind string

// The kinds of provider events.
const (
	// EventAccepted: the provider is working on the message (SendGrid processed; Twilio queued,
	// sending, sent).
	EventAccepted ProviderEventKind = "accepted"
	// EventDeferred: the receiving side asked to wait; the provider retries on its own.
	EventDeferred ProviderEventKind = "deferred"
	// EventDelivered: the receiving side took the message.
	EventDelivered ProviderEventKind = "delivered"
	// EventBounced: the receiving side refused the message (SendGrid bounce and blocked, Twilio
	// undelivered).
	EventBounced ProviderEventKind = "bounced"
	// EventDropped: the provider gave up on the message without delivering it (SendGrid dropped,
	// Twilio failed).
	EventDropped      ProviderEventKind = "dropped"
	EventOpened       ProviderEventKind = "opened"
	EventClicked      ProviderEventKind = "clicked"
	EventSpamReport   ProviderEventKind = "spam_report"
	EventUnsubscribed ProviderEventKind = "unsubscribed"
	// EventOther is any event Herald does not act on; it is stored all the same.
	EventOther ProviderEventKind = "other"
)

// DeliveryState returns the state that an event of kind k moves its delivery to, or "" when the
// event leaves the state as it is (progress events, and other engagement). An open or a click
// (a provider's tracking, or the app's TrackEvent) proves the message arrived, though no
// delivery report came: a push has none. It ends a fallback chain as a delivery report does.
func (k ProviderEventKind) DeliveryState() delivery.State {
	switch k {
	case EventDelivered, EventOpened, EventClicked:
		return delivery.Delivered
	case EventBounced, EventDropped:
		return delivery.Bounced
	}
	return ""
}

// ProviderEventFrom are the states a provider event may move a delivery out of. Besides sent,
// they are the states of a delivery whose send the worker has not recorded (yet): a webhook can
// overtake the worker's write, and a provider call that timed out on Herald's side may still have
// been accepted. The provider's report is the better evidence, and it stops a needless resend.
// Delivered and bounced are final: a late or re-ordered event does not move them again.
var ProviderEventFrom = []delivery.State{delivery.Queued, delivery.Sending, delivery.Retrying, delivery.Sent}

// AddressEffect is what a provider event says about the recipient's address. The webhooks publish
// it as a fact on the events stream for the contacts service.
type AddressEffect string

// The effects of provider events.
const (
	NoAddressEffect AddressEffect = ""
	// AddressInvalid: the address cannot receive messages (an email hard bounce; an unreachable,
	// unknown or landline number).
	AddressInvalid AddressEffect = "invalid"
	// AddressOptedOut: the recipient opted out at the provider (an unsubscribe, a spam report,
	// an SMS STOP).
	AddressOptedOut AddressEffect = "opted_out"
)
