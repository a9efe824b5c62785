package pgdb

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A change feed is a table (key text, xid xid8 DEFAULT pg_current_xact_id(), at timestamptz
// DEFAULT now()) that writers append the keys they changed to, in the same transaction as the
// change; readers use it to keep caches exact (see internal/coherent).

// Touch appends keys to the change feed table, inside the writer's transaction.
func Touch(ctx context.Context, tx pgx.Tx, table string, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+table+` (key) SELECT unnest($1::text[])`, keys)
	return err
}

// Changes reads the keys appended to the change feed table by transactions at or after horizon,
// and the horizon to read from next time. The horizon is a transaction id: every transaction
// below the snapshot's xmin has finished, so what it wrote is either in this answer or in an
// earlier one. Keys may repeat across calls.
func Changes(ctx context.Context, pool *pgxpool.Pool, table string, horizon uint64) ([]string, uint64, error) {
	var keys []string
	var next string
	err := pool.QueryRow(ctx, `
		SELECT coalesce((SELECT array_agg(key) FROM `+table+` WHERE xid >= $1::text::xid8), '{}'),
			pg_snapshot_xmin(pg_current_snapshot())::text`, strconv.FormatUint(horizon, 10)).Scan(&keys, &next)
	if err != nil {
		return nil, 0, Err(err)
	}
	n, err := parseXID(next)
	if err != nil {
		return nil, 0, err
	}
	return keys, n, nil
}

// Horizon returns where a reader of a change feed that holds nothing yet starts: what Changes
// would answer as next, without reading any key.
func Horizon(ctx context.Context, pool *pgxpool.Pool) (uint64, error) {
	var next string
	if err := pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&next); err != nil {
		return 0, Err(err)
	}
	return parseXID(next)
}

// FeedPosition is where a page of a change feed ends: the last row's transaction id and row id.
type FeedPosition struct {
	XID uint64
	ID  int64
}

// ChangesPage reads one page of the keys Changes would answer: those of transactions at or
// after horizon, after position from (zero: from the start), in (transaction, row) order, at
// most maxKeys of them and no more than about maxBytes (at least one). It returns them, the
// last one's position when there may be more (nil when not), and the horizon to read from
// next. Later pages read later snapshots, so the pages together hold every key the first
// page's snapshot could see: a reader that goes on from the first page's next horizon misses
// nothing.
func ChangesPage(ctx context.Context, pool *pgxpool.Pool, table string, horizon uint64, from FeedPosition, maxKeys, maxBytes int) (keys []string, more *FeedPosition, next uint64, err error) {
	var xids []string
	var ids []int64
	var xmin string
	err = pool.QueryRow(ctx, `
		WITH page AS (
			SELECT xid, id, key FROM `+table+`
			WHERE xid >= $1::text::xid8 AND (xid, id) > ($2::text::xid8, $3)
			ORDER BY xid, id LIMIT $4
		)
		SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
			coalesce((SELECT array_agg(xid::text ORDER BY xid, id) FROM page), '{}'),
			coalesce((SELECT array_agg(id ORDER BY xid, id) FROM page), '{}'),
			coalesce((SELECT array_agg(key ORDER BY xid, id) FROM page), '{}')`,
		strconv.FormatUint(horizon, 10), strconv.FormatUint(from.XID, 10), from.ID, maxKeys).Scan(&xmin, &xids, &ids, &keys)
	if err != nil {
		return nil, nil, 0, Err(err)
	}
	if next, err = parseXID(xmin); err != nil {
		return nil, nil, 0, err
	}
	n, size := 0, 0
	for n < len(keys) && (n == 0 || size+len(keys[n]) <= maxBytes) {
		size += len(keys[n])
		n++
	}
	if n == 0 || (n == len(keys) && n < maxKeys) {
		return keys, nil, next, nil
	}
	xid, err := parseXID(xids[n-1])
	if err != nil {
		return nil, nil, 0, err
	}
	return keys[:n], &FeedPosition{XID: xid, ID: ids[n-1]}, next, nil
}

func parseXID(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse transaction id %q: %w", s, err)
	}
	return n, nil
}

// PruneChanges returns the statement that prunes the change feed table, of the shape of
// retention.PruneFunc: in tx, it deletes up to limit rows written at or after from and before
// cutoff, oldest first, and returns how many and when the last was written. Caches that have
// not read the feed since cutoff must forget everything instead (see coherent.New).
func PruneChanges(table string) func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
		var n int
		var last time.Time
		err := tx.QueryRow(ctx, `
			WITH gone AS (
				DELETE FROM `+table+` WHERE id = ANY(ARRAY(
					SELECT id FROM `+table+` WHERE at >= $1 AND at < $2 ORDER BY at LIMIT $3))
				RETURNING at)
			SELECT count(*), coalesce(max(at), $1) FROM gone`, from, cutoff, limit).Scan(&n, &last)
		return n, last, Err(err)
	}
}
