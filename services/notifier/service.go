package notifier

import (
	"context"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
)

// GetNotification returns a notification the calling app sent, with its deliveries.
// Errors: NotFound (also for another app's notification).
func (s *Service) GetNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	return s.Store.Notification(ctx, caller.AppID, id)
}
