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
	n, err := strconv.ParseUint(next, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("parse snapshot xmin %q: %w", next, err)
	}
	return keys, n, nil
}

// PruneChanges deletes change-feed rows older than age. Caches that have not read the feed for
// longer than that must forget everything instead (see coherent.New).
func PruneChanges(ctx context.Context, pool *pgxpool.Pool, table string, age time.Duration) error {
	_, err := pool.Exec(ctx, `DELETE FROM `+table+` WHERE at < now() - $1::interval`, age)
	return Err(err)
}
