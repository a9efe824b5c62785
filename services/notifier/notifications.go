package notifier

import (
	"context"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
)

// GetNotification returns a notification the calling app sent, with its deliveries.
// Errors: NotFound (also for another app's notification).
func (s *Sender) GetNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	return s.Store.Notification(ctx, caller.AppID, id)
}

// CancelNotification cancels the deliveries of the app's notification that no worker has
// started sending; the others are unaffected. A queued message whose delivery is canceled
// finds nothing to do when a worker claims it. Errors: NotFound.
func (s *Sender) CancelNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	n, err := s.Store.Cancel(ctx, caller.AppID, id, s.now())
	if err == nil {
		s.Log.Info("canceled notification", "notification_id", id, "app", caller.AppName)
	}
	return n, err
}
