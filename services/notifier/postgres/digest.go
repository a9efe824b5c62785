package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

var _ notifier.DigestStore = (*Store)(nil)

// DueDigests implements notifier.DigestStore.
func (s *Store) DueDigests(ctx context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error) {
	return s.deliveries.DueDigests(ctx, now, limit)
}

// CloseDigest implements notifier.DigestStore: the digest's close (internal/delivery's
// CloseDigest, in a savepoint) and the notification that holds its delivery commit together,
// so a digest is never closed without its notification, nor sent twice.
func (s *Store) CloseDigest(ctx context.Context, id uuid.UUID, now time.Time,
	build func(g delivery.DigestRecord, items []delivery.Delivery) (*notifier.Notification, error)) (*notifier.Delivery, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	defer tx.Rollback(ctx)
	var n *notifier.Notification
	made, err := s.deliveries.In(tx).CloseDigest(ctx, id, now, func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error) {
		var err error
		if n, err = build(g, items); err != nil {
			return nil, err
		}
		if len(n.Deliveries) != 1 {
			return nil, fmt.Errorf("a digest's notification has %d deliveries, want 1", len(n.Deliveries))
		}
		return n.Deliveries[0], nil
	})
	if err != nil || made == nil {
		return nil, err
	}
	created, err := insertNotifications(ctx, tx, []*notifier.Notification{n})
	if err != nil {
		return nil, err
	}
	if !created[0] {
		return nil, fmt.Errorf("close digest %s: its notification exists already", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, pgdb.Err(err)
	}
	return made, nil
}
