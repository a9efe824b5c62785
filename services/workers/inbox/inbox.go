// Package inbox delivers the inbox channel: it stores each message in the user's in-app inbox
// (internal/inbox) instead of calling a provider. The store is idempotent by delivery id, so a
// redelivered or retried delivery stores its message once, and the store's transaction tells
// the live feed of every notifier when it commits. Scheduling, quiet hours, fallback, retries
// and the reconciler work as for the other channels, because this is just another Sender.
package inbox

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/services/workers"
)

// Provider is the provider name the inbox channel's deliveries record.
const Provider = "inbox"

// Sender stores inbox messages.
type Sender struct {
	Store inbox.Deliverer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ workers.Sender = (*Sender)(nil)

// Provider implements workers.Sender.
func (s *Sender) Provider() string { return Provider }

// Send implements workers.Sender: it stores m in the inbox of the user m.To names. A message
// with no user is refused for good (the notifier creates inbox deliveries for users only);
// a database error is transient.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.To == "" {
		return workers.Result{}, workers.Permanent("no_user", errors.New("an inbox delivery needs a user id"))
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	msg := &inbox.Message{
		ID: m.DeliveryID, UserID: m.To, NotificationID: m.NotificationID, Category: m.Category,
		Title: m.Content.Title, Body: m.Content.Body, Data: m.Content.Data, CreatedAt: now(),
	}
	if _, err := s.Store.Deliver(ctx, msg); err != nil {
		return workers.Result{}, workers.Transient(0, err)
	}
	return workers.Result{ProviderMessageID: m.DeliveryID.String()}, nil
}
