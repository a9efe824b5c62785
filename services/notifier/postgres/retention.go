package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/notifier/links"
)

// Retention: the notifier's tables that grow with every notification are pruned a batch at a
// time by internal/retention, which runs each of these in a transaction of its own. Each goes
// through its table in the order of a time its rows carry (a time-ordered id, or when they
// arrived), from where the last batch ended, and picks its batch in a subquery read as an
// array, so that the rows are deleted by key whatever the planner thinks of the batch's size.
// The shape of each is retention.PruneFunc.

// The statements: $1 and $2 bound the time (as the table's key), $3 is the limit. Whether a row's
// deliveries are gone is asked of each row in a LATERAL subquery with a LIMIT, which the planner
// cannot turn into a join over the whole deliveries table (a hash or merge anti-join would read
// all of it for a batch).
const (
	pruneNotificationsSQL = `
		WITH gone AS (
			DELETE FROM notifier.notifications WHERE id = ANY(ARRAY(
				SELECT n.id FROM notifier.notifications n
				LEFT JOIN LATERAL (
					SELECT true AS kept FROM delivery.deliveries d WHERE d.notification_id = n.id LIMIT 1
				) d ON true
				WHERE n.id >= $1 AND n.id < $2 AND d.kept IS NULL
				ORDER BY n.id
				LIMIT $3))
			RETURNING id)
		SELECT count(*), (SELECT id FROM gone ORDER BY id DESC LIMIT 1) FROM gone`
	pruneClicksSQL = `
		WITH gone AS (
			DELETE FROM notifier.link_clicks WHERE ctid = ANY(ARRAY(
				SELECT ctid FROM notifier.link_clicks
				WHERE delivery_id >= $1 AND delivery_id < $2
				ORDER BY delivery_id
				LIMIT $3))
			RETURNING delivery_id)
		SELECT count(*), (SELECT delivery_id FROM gone ORDER BY delivery_id DESC LIMIT 1) FROM gone`
	pruneLinksSQL = `
		WITH gone AS (
			DELETE FROM notifier.links WHERE id = ANY(ARRAY(
				SELECT id FROM notifier.links WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3))
			RETURNING id)
		SELECT count(*), coalesce(max(id), $1) FROM gone`
	pruneProviderEventsSQL = `
		WITH gone AS (
			DELETE FROM notifier.provider_events WHERE ctid = ANY(ARRAY(
				SELECT e.ctid FROM notifier.provider_events e
				LEFT JOIN LATERAL (
					SELECT true AS kept FROM delivery.deliveries d WHERE d.id = e.delivery_id LIMIT 1
				) d ON true
				WHERE e.received_at >= $1 AND e.received_at < $2 AND d.kept IS NULL
				ORDER BY e.received_at
				LIMIT $3))
			RETURNING received_at)
		SELECT count(*), coalesce(max(received_at), $1) FROM gone`
)

// PruneNotifications deletes up to limit notifications accepted before cutoff, from the ones
// accepted at from, whose deliveries are all gone (see delivery/postgres's PruneDeliveries), and
// returns how many and when the last one was accepted. Until then GetNotification answers as
// ever, and the idempotency key stands.
func PruneNotifications(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, tx, pruneNotificationsSQL, from, cutoff, limit)
}

// PruneClicks deletes up to limit clicks on the links of deliveries accepted before cutoff, from
// the deliveries accepted at from, and returns how many and when the last one's delivery was
// accepted. Clicks are never updated: their place (ctid) read in the statement's snapshot is
// theirs until it ends.
func PruneClicks(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, tx, pruneClicksSQL, from, cutoff, limit)
}

// PruneLinks deletes up to limit short links whose delivery went out before cutoff (they have
// expired: see --link-retention), from the ones that went out at from, and returns how many and
// when the last one's went out.
func PruneLinks(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	var n int
	var last int64
	err := tx.QueryRow(ctx, pruneLinksSQL, links.FirstID(from), links.FirstID(cutoff), limit).Scan(&n, &last)
	if err != nil {
		return 0, from, pgdb.Err(err)
	}
	return n, links.IDTime(last), nil
}

// PruneProviderEvents deletes up to limit provider events received before cutoff, from the ones
// received at from, and returns how many and when the last one was received. An event whose
// delivery is still kept stays with it: a provider's webhook replayed while its delivery is kept
// finds the event and is not applied twice, and once the delivery is gone it has nothing to
// apply to. An event announced while the statement ran has moved (its ctid is another): it is
// left for the next pass.
func PruneProviderEvents(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByTime(ctx, tx, pruneProviderEventsSQL, from, cutoff, limit)
}
