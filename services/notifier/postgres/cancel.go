package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// ReleaseKey implements notifier.Notifications.
func (s *Store) ReleaseKey(ctx context.Context, appID uuid.UUID, key string, olderThan time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifier.notifications SET idempotency_key = NULL
		WHERE app_id = $1 AND idempotency_key = $2 AND created_at < $3`, appID, key, olderThan)
	return pgdb.Err(err)
}

// Cancel implements notifier.Notifications.
func (s *Store) Cancel(ctx context.Context, appID, id uuid.UUID, at time.Time) (*notifier.Notification, error) {
	// The notification must be the app's before anything changes; a notification never
	// changes app.
	var owned bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM notifier.notifications WHERE id = $1 AND app_id = $2)`,
		id, appID).Scan(&owned)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	if !owned {
		return nil, errs.E(errs.NotFound, "notification not found")
	}
	if _, err := s.deliveries.Cancel(ctx, id, at); err != nil {
		return nil, err
	}
	return s.Notification(ctx, appID, id)
}
