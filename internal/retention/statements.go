package retention

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/internal/pgdb"
)

// Querier runs a prune statement: the batch's transaction, or a store bound to it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ByID runs sql, a statement that deletes a batch of rows keyed by UUIDv7 ids, and returns
// what a PruneFunc returns. $1 and $2 are the first ids of the milliseconds of from and cutoff,
// args are $3 on; the statement answers how many rows it deleted and the last one's id (NULL
// when none).
func ByID(ctx context.Context, q Querier, sql string, from, cutoff time.Time, args ...any) (int, time.Time, error) {
	var n int
	var last pgtype.UUID
	err := q.QueryRow(ctx, sql, append([]any{pgdb.UUID(ids.FirstV7(from)), pgdb.UUID(ids.FirstV7(cutoff))}, args...)...).
		Scan(&n, &last)
	if err != nil || !last.Valid {
		return 0, from, pgdb.Err(err)
	}
	return n, ids.V7Time(last.Bytes), nil
}

// ByTime runs sql, a statement that deletes a batch of rows in the order of a timestamp, and
// returns what a PruneFunc returns. $1 and $2 are from and cutoff, args are $3 on; the
// statement answers how many rows it deleted and the last one's time ($1 when none).
func ByTime(ctx context.Context, q Querier, sql string, from, cutoff time.Time, args ...any) (int, time.Time, error) {
	var n int
	var last time.Time
	if err := q.QueryRow(ctx, sql, append([]any{from, cutoff}, args...)...).Scan(&n, &last); err != nil {
		return 0, from, pgdb.Err(err)
	}
	return n, last, nil
}
