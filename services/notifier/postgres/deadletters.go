package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// deadFilter is the WHERE clause shared by listing and re-driving: $1 ids (empty: any),
// $2 channel ("" any), $3 reason ("" any).
const deadFilter = `state = 'dead' AND (cardinality($1::uuid[]) = 0 OR id = ANY($1))
	AND ($2 = '' OR channel = $2) AND ($3 = '' OR reason = $3)`

func filterArgs(f notifier.DeadLetterFilter) []any {
	ids := f.IDs
	if ids == nil {
		ids = []uuid.UUID{}
	}
	return []any{ids, string(f.Channel), f.Reason}
}

// DeadLetters implements notifier.Store.
func (s *Store) DeadLetters(ctx context.Context, f notifier.DeadLetterFilter, after uuid.UUID, limit int) ([]notifier.DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, notification_id, category, channel, reason, attempts, last_error, provider,
			provider_message_id, created_at, updated_at
		FROM notifier.deliveries WHERE `+deadFilter+` AND id > $4 ORDER BY id LIMIT $5`,
		append(filterArgs(f), after, limit)...)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.DeadLetter, error) {
		var d notifier.DeadLetter
		var ch string
		err := r.Scan(&d.ID, &d.NotificationID, &d.Category, &ch, &d.Reason, &d.Attempts, &d.LastError,
			&d.Provider, &d.ProviderMessageID, &d.CreatedAt, &d.UpdatedAt)
		d.Channel, d.State = delivery.Channel(ch), delivery.Dead
		return d, err
	})
	return list, pgdb.Err(err)
}

// Redrive implements notifier.Store. The delivery gets a new drive (a fresh attempt budget; the
// attempt log keeps the old drives) and, if its ttl ran out while it was dead, a fresh ttl.
func (s *Store) Redrive(ctx context.Context, f notifier.DeadLetterFilter, now time.Time, republishAfter time.Duration) ([]notifier.Publication, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE notifier.deliveries SET state = 'queued', attempts = 0, drive = drive + 1, reason = '',
			publishes = publishes + 1, due_at = $4::timestamptz + $5::interval,
			expires_at = greatest(expires_at, $4::timestamptz + $6::interval), updated_at = $4
		WHERE `+deadFilter+`
		RETURNING id, channel, publishes`,
		append(filterArgs(f), now, republishAfter, delivery.DefaultTTL)...)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	pubs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.Publication, error) {
		var p notifier.Publication
		var ch string
		err := r.Scan(&p.DeliveryID, &ch, &p.Generation)
		p.Channel = delivery.Channel(ch)
		return p, err
	})
	return pubs, pgdb.Err(err)
}
