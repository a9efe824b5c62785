package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/notifier"
)

var _ notifier.TopicStore = (*Store)(nil)

// topicRequest is a topic send's request as topic_sends.request stores it: the send each
// subscriber gets, and the app's scope when it was accepted.
type topicRequest struct {
	Request *notifier.SendRequest `json:"request"`
	App     struct {
		ID                uuid.UUID          `json:"id"`
		Name              string             `json:"name"`
		AllowedCategories []string           `json:"allowed_categories,omitempty"`
		AllowedChannels   []delivery.Channel `json:"allowed_channels,omitempty"`
	} `json:"app"`
}

// CreateTopicSend implements notifier.TopicStore.
func (s *Store) CreateTopicSend(ctx context.Context, n *notifier.Notification, ts *notifier.TopicSend) (bool, error) {
	var rec topicRequest
	rec.Request = ts.Request
	rec.App.ID, rec.App.Name = ts.Caller.AppID, ts.Caller.AppName
	rec.App.AllowedCategories, rec.App.AllowedChannels = ts.Caller.AllowedCategories, ts.Caller.AllowedChannels
	raw, err := json.Marshal(rec)
	if err != nil {
		return false, errs.Wrap(errs.Internal, err, "encode the topic send")
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, pgdb.Err(err)
	}
	defer tx.Rollback(ctx)
	created, err := insertNotifications(ctx, tx, []*notifier.Notification{n})
	if err != nil {
		return false, err
	}
	if !created[0] {
		return false, nil
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO notifier.topic_sends (id, app_id, topic, request, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, ts.ID, ts.AppID, ts.Topic, raw, string(ts.State), ts.CreatedAt); err != nil {
		return false, pgdb.Err(err)
	}
	return true, pgdb.Err(tx.Commit(ctx))
}

const topicSendColumns = `id, app_id, topic, request, state, cursor, recipients, skipped, failed, created_at, done_at`

func scanTopicSend(row pgx.Row) (*notifier.TopicSend, error) {
	var ts notifier.TopicSend
	var raw []byte
	var state string
	var done pgtype.Timestamptz
	if err := row.Scan(&ts.ID, &ts.AppID, &ts.Topic, &raw, &state, &ts.Cursor, &ts.Recipients, &ts.Skipped,
		&ts.Failed, &ts.CreatedAt, &done); err != nil {
		return nil, err
	}
	ts.State = notifier.TopicState(state)
	if done.Valid {
		ts.DoneAt = &done.Time
	}
	var rec topicRequest
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("decode topic send %s: %w", ts.ID, err)
	}
	ts.Request = rec.Request
	ts.Caller = appkey.Caller{AppID: rec.App.ID, AppName: rec.App.Name,
		AllowedCategories: rec.App.AllowedCategories, AllowedChannels: rec.App.AllowedChannels}
	return &ts, nil
}

// TopicSend implements notifier.TopicStore. The deliveries are counted through the index of
// notifications by topic send and that of deliveries by notification: one index range each, a
// few hundred milliseconds for 100,000 recipients.
func (s *Store) TopicSend(ctx context.Context, id uuid.UUID, counts bool) (*notifier.TopicSend, error) {
	ts, err := scanTopicSend(s.pool.QueryRow(ctx, `SELECT `+topicSendColumns+` FROM notifier.topic_sends WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "topic send not found")
	}
	if err != nil || !counts {
		return ts, pgdb.Err(err)
	}
	rows, _ := s.pool.Query(ctx, `
		SELECT d.state, count(*) FROM notifier.notifications n
		JOIN delivery.deliveries d ON d.notification_id = n.id
		WHERE n.topic_send_id = $1 AND n.id <> $1
		GROUP BY d.state`, id)
	ts.Deliveries = map[delivery.State]int64{}
	var state string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		ts.Deliveries[delivery.State(state)] = n
		return nil
	}); err != nil {
		return nil, pgdb.Err(err)
	}
	return ts, nil
}

// ClaimTopicSend implements notifier.TopicStore. Leases are measured on the database's clock,
// so replicas whose clocks disagree still agree on when one expired.
func (s *Store) ClaimTopicSend(ctx context.Context, owner string, lease time.Duration) (*notifier.TopicSend, error) {
	ts, err := scanTopicSend(s.pool.QueryRow(ctx, `
		UPDATE notifier.topic_sends SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
		WHERE id = (
			SELECT id FROM notifier.topic_sends
			WHERE state = 'fanning_out' AND (lease_until IS NULL OR lease_until < now())
			ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+topicSendColumns, owner, lease.Seconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return ts, pgdb.Err(err)
}

// AdvanceTopicSend implements notifier.TopicStore.
func (s *Store) AdvanceTopicSend(ctx context.Context, ts *notifier.TopicSend, owner, next string, add notifier.TopicCounts, done bool, lease time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE notifier.topic_sends SET cursor = $4, recipients = recipients + $5, skipped = skipped + $6,
			failed = failed + $7,
			state = CASE WHEN $8 THEN 'done' ELSE state END,
			done_at = CASE WHEN $8 THEN now() END,
			lease_owner = CASE WHEN $8 THEN NULL ELSE lease_owner END,
			lease_until = CASE WHEN $8 THEN NULL ELSE now() + make_interval(secs => $9) END
		WHERE id = $1 AND lease_owner = $2 AND cursor = $3 AND state = 'fanning_out'`,
		ts.ID, owner, ts.Cursor, next, add.Recipients, add.Skipped, add.Failed, done, lease.Seconds())
	if err != nil {
		return false, pgdb.Err(err)
	}
	return tag.RowsAffected() == 1, nil
}

// CancelTopicSend implements notifier.TopicStore. The update takes the topic send's row lock, as
// AdvanceTopicSend's does: an advance that comes after it finds the state changed and fails,
// and one that came before has its page committed before the cancel commits, so the cancel's
// paging through the recipients, which starts after, sees that page.
func (s *Store) CancelTopicSend(ctx context.Context, id uuid.UUID, at time.Time) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.topic_sends SET state = 'canceled', lease_owner = NULL, lease_until = NULL,
			done_at = CASE WHEN state = 'fanning_out' THEN $2 ELSE done_at END
		WHERE id = $1 AND state <> 'canceled'`, id, at)
	return pgdb.Err(err)
}

// TopicRecipients implements notifier.TopicStore, through the index of notifications by topic
// send and id: one index range per page.
func (s *Store) TopicRecipients(ctx context.Context, id, after uuid.UUID, limit int) ([]uuid.UUID, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT id FROM notifier.notifications
		WHERE topic_send_id = $1 AND id > $2 AND id <> $1
		ORDER BY id LIMIT $3`, id, after, limit)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	return ids, pgdb.Err(err)
}

// CancelNotifications implements notifier.TopicStore with the statement Cancel uses for one
// notification.
func (s *Store) CancelNotifications(ctx context.Context, ids []uuid.UUID, at time.Time) (int, error) {
	return s.deliveries.CancelAll(ctx, ids, at)
}

// pruneTopicSendsSQL deletes a batch of done (or canceled) topic sends whose own notification retention
// pruned (it has no deliveries, so it goes once it is older than the cutoff); a topic send
// still fanning out stays, whatever its age. As in retention.go, whether the notification is
// gone is asked of each row in a LATERAL subquery with a LIMIT, so that the batch is read
// through the primary keys and no table is scanned.
const pruneTopicSendsSQL = `
	WITH gone AS (
		DELETE FROM notifier.topic_sends WHERE id = ANY(ARRAY(
			SELECT t.id FROM notifier.topic_sends t
			LEFT JOIN LATERAL (
				SELECT true AS kept FROM notifier.notifications n WHERE n.id = t.id LIMIT 1
			) n ON true
			WHERE t.id >= $1 AND t.id < $2 AND t.state IN ('done', 'canceled') AND n.kept IS NULL
			ORDER BY t.id
			LIMIT $3))
		RETURNING id)
	SELECT count(*), (SELECT id FROM gone ORDER BY id DESC LIMIT 1) FROM gone`

// PruneTopicSends deletes up to limit done or canceled topic sends accepted before cutoff, from the ones
// accepted at from, whose own notification is gone (see PruneNotifications), and returns how
// many and when the last one was accepted. A recipient's notification kept longer answers
// GetNotification without its topic send.
func PruneTopicSends(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, tx, pruneTopicSendsSQL, from, cutoff, limit)
}
