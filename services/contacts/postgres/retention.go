package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/contacts"
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

// PruneDevices deletes up to limit devices deactivated before cutoff (tokens a provider called
// dead), from the ones deactivated at from, and returns how many and when the last one was
// deactivated; the shape is retention.PruneFunc. Their owners' cache entries are evicted in the
// same transaction. A token registered again meanwhile is active and stays. The token's
// suppression stays too: a send to the raw token is still refused.
func PruneDevices(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	var n int
	var last time.Time
	var owners []string
	err := tx.QueryRow(ctx, `
		WITH gone AS (
			DELETE FROM contacts.devices WHERE (platform, token) IN (
				SELECT platform, token FROM contacts.devices
				WHERE NOT active AND deactivated_at >= $1 AND deactivated_at < $2
				ORDER BY deactivated_at
				LIMIT $3)
			AND NOT active AND deactivated_at < $2 -- checked again on a row registered again meanwhile
			RETURNING user_id, deactivated_at)
		SELECT count(*), coalesce(max(deactivated_at), $1), coalesce(array_agg(DISTINCT user_id), '{}') FROM gone`,
		from, cutoff, limit).Scan(&n, &last, &owners)
	if err != nil {
		return 0, from, pgdb.Err(err)
	}
	keys := make([]string, len(owners))
	for i, id := range owners {
		keys[i] = contacts.UserKey(id)
	}
	return n, last, pgdb.Touch(ctx, tx, ChangesTable, keys...)
}
