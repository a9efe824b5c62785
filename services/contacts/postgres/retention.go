package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
)

// ChangesTable is the contacts service's change feed.
const ChangesTable = "contacts.changes"

// PruneChanges prunes the change feed (see pgdb.PruneChanges). Caches that have not read it for
// longer than it keeps changes forget everything instead (see contacts.New).
func PruneChanges(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return pgdb.PruneChanges(ChangesTable)(ctx, tx, from, cutoff, limit)
}

// PruneSMSKeywords deletes up to limit records of SMS keywords received before cutoff, from the
// ones received at from, and returns how many and when the last one was received. A message
// whose record is gone is applied again if its request is posted again (see SMSKeyword); the
// shape is retention.PruneFunc.
func PruneSMSKeywords(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByTime(ctx, tx, `
		WITH gone AS (
			DELETE FROM contacts.sms_keywords WHERE message_sid = ANY(ARRAY(
				SELECT message_sid FROM contacts.sms_keywords
				WHERE received_at >= $1 AND received_at < $2
				ORDER BY received_at
				LIMIT $3))
			RETURNING received_at)
		SELECT count(*), coalesce(max(received_at), $1) FROM gone`, from, cutoff, limit)
}
