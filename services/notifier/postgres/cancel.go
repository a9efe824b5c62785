package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// ReleaseKey implements notifier.Notifications.
func (s *Store) ReleaseKey(ctx context.Context, appID uuid.UUID, key string, olderThan time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifier.notifications SET idempotency_key = NULL
		WHERE app_id = $1 AND idempotency_key = $2 AND created_at < $3`, appID, key, olderThan)
	return pgdb.Err(err)
}

// Cancel implements notifier.Notifications. The notification is read first: only the app's
// own may be canceled, and a notification never changes app.
func (s *Store) Cancel(ctx context.Context, appID, id uuid.UUID, at time.Time) (*notifier.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, notificationByID, id, appID))
	if err == nil {
		if _, err := s.deliveries.Cancel(ctx, id, at); err != nil {
			return nil, err
		}
	}
	return s.withDeliveries(ctx, n, err)
}
