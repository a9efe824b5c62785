package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// ReleaseKey implements notifier.Store.
func (s *Store) ReleaseKey(ctx context.Context, appID uuid.UUID, key string, olderThan time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifier.notifications SET idempotency_key = NULL
		WHERE app_id = $1 AND idempotency_key = $2 AND created_at < $3`, appID, key, olderThan)
	return pgdb.Err(err)
}

// Cancel implements notifier.Store. A delivery a worker holds ('sending') is past cancelling:
// the provider call may already be made.
func (s *Store) Cancel(ctx context.Context, appID, id uuid.UUID, at time.Time) (*notifier.Notification, error) {
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.deliveries d SET state = 'canceled', reason = 'canceled', due_at = NULL, updated_at = $3
		FROM notifier.notifications n
		WHERE n.id = $2 AND n.app_id = $1 AND d.notification_id = n.id
			AND d.state IN ('scheduled', 'queued', 'retrying')`, appID, id, at)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	return s.Notification(ctx, appID, id)
}
