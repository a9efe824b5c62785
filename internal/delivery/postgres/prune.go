package postgres

import (
	"context"
	"time"

	"github.com/heraldhq/herald/internal/retention"
)

// Retention: deliveries and their attempt log are kept for a while after they are finished,
// then deleted a batch at a time (internal/retention runs the batches, each in its own
// transaction: call these on s.In(tx)). Both go through their rows in the order of the
// deliveries' ids, which are time-ordered (UUIDv7): "accepted before t" is a range of the
// primary key, and a batch goes on where the last one ended.
//
// Each statement picks its batch in a subquery read as an array, and deletes by it: whatever
// the planner thinks of the batch's size, it looks the rows up by key one by one (a join could
// be planned as a scan of the whole table).
const (
	// pruneDeliveriesSQL deletes up to $4 finished deliveries accepted at or after $1 and before
	// $2, last changed before $3. The state and time are tested again on the row the DELETE
	// finds: a dead letter re-driven since the subquery read it is no longer finished, and stays.
	// The states are those delivery.State.Terminal calls terminal (see unfinished).
	pruneDeliveriesSQL = `
		WITH gone AS (
			DELETE FROM delivery.deliveries
			WHERE id = ANY(ARRAY(
				SELECT id FROM delivery.deliveries
				WHERE id >= $1 AND id < $2 AND updated_at < $3
					AND state NOT IN ` + unfinished + `
				ORDER BY id
				LIMIT $4
				FOR UPDATE SKIP LOCKED))
			AND updated_at < $3 AND state NOT IN ` + unfinished + `
			RETURNING id)
		SELECT count(*), (SELECT id FROM gone ORDER BY id DESC LIMIT 1) FROM gone`
	// pruneAttemptsSQL deletes up to $4 entries of the attempt log of deliveries accepted at or
	// after $1 and before $2 that started before $3. Entries are never updated: their place
	// (ctid) read in the statement's snapshot is theirs until it ends.
	pruneAttemptsSQL = `
		WITH gone AS (
			DELETE FROM delivery.attempts
			WHERE ctid = ANY(ARRAY(
				SELECT ctid FROM delivery.attempts
				WHERE delivery_id >= $1 AND delivery_id < $2 AND started_at < $3
				ORDER BY delivery_id
				LIMIT $4))
			RETURNING delivery_id)
		SELECT count(*), (SELECT delivery_id FROM gone ORDER BY delivery_id DESC LIMIT 1) FROM gone`
	// pruneDigestsSQL deletes up to $4 closed digests opened at or after $1 and before $2, closed
	// before $3. An open digest is never deleted: items wait in it.
	pruneDigestsSQL = `
		WITH gone AS (
			DELETE FROM delivery.digests
			WHERE id = ANY(ARRAY(
				SELECT id FROM delivery.digests
				WHERE id >= $1 AND id < $2 AND closed AND closed_at < $3
				ORDER BY id
				LIMIT $4
				FOR UPDATE SKIP LOCKED))
			AND closed
			RETURNING id)
		SELECT count(*), (SELECT id FROM gone ORDER BY id DESC LIMIT 1) FROM gone`
)

// PruneDeliveries deletes up to limit finished deliveries (of any terminal state, dead letters
// included) that were accepted and last changed before cutoff, oldest first from the ones
// accepted at from, and returns how many and when the last one was accepted. A delivery that is
// not finished is never deleted, however old. Their attempt log goes with PruneAttempts.
func (s *Store) PruneDeliveries(ctx context.Context, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, s.db, pruneDeliveriesSQL, from, cutoff, cutoff, limit)
}

// PruneAttempts deletes up to limit entries of the attempt log that started before cutoff, of
// deliveries accepted before cutoff, oldest delivery first from the ones accepted at from, and
// returns how many and when the last one's delivery was accepted. With the same cutoff, it
// deletes at least the attempts of the deliveries PruneDeliveries deletes: those finished before
// it.
func (s *Store) PruneAttempts(ctx context.Context, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, s.db, pruneAttemptsSQL, from, cutoff, cutoff, limit)
}

// PruneDigests deletes up to limit closed digests that were opened and closed before cutoff,
// oldest first from the ones opened at from, and returns how many and when the last one was
// opened. Their items and delivery go with PruneDeliveries (an item whose digest is gone lists
// no digest delivery).
func (s *Store) PruneDigests(ctx context.Context, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, s.db, pruneDigestsSQL, from, cutoff, cutoff, limit)
}
