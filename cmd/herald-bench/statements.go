package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
)

// With --pg-statements N, PostgreSQL loads pg_stat_statements, and each measured run reports the
// N statements that took the most of the database's time, so that a figure comes with where the
// database spent it.

// statementSettings are the server settings --pg-statements needs.
var statementSettings = []string{"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all"}

// resetStatements clears the statistics before a measured run, creating the extension the first
// time.
func resetStatements(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return fmt.Errorf("pg_stat_statements: %w", err)
	}
	_, err = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	return err
}

// printStatements writes the n statements that took the most time since the last reset: their
// share of the time, calls, rows, time per call and per row (the rows a statement returned or
// changed; a delivery is about one row of each statement of the path), and the WAL bytes and
// full-page images it wrote per row.
func printStatements(ctx context.Context, url string, n int, out io.Writer) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `
		SELECT total_exec_time / nullif(sum(total_exec_time) OVER (), 0), calls, rows,
			total_exec_time / nullif(calls, 0), total_exec_time / nullif(rows, 0),
			wal_bytes / nullif(rows, 0), wal_fpi::float8 / nullif(rows, 0), query
		FROM pg_stat_statements
		ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  postgres statements by time (pg_stat_statements):\n")
	fmt.Fprintf(out, "  %6s %9s %10s %9s %9s %9s %7s  %s\n", "share", "calls", "rows", "ms/call", "ms/row", "WAL B/row",
		"FPI/row", "statement")
	var share, perCall, perRow, walPerRow, fpiPerRow *float64
	var calls, count int64
	var query string
	_, err = pgx.ForEachRow(rows, []any{&share, &calls, &count, &perCall, &perRow, &walPerRow, &fpiPerRow, &query}, func() error {
		fmt.Fprintf(out, "  %5.1f%% %9d %10d %9.3f %9.4f %9.0f %7.3f  %s\n", 100*orZero(share), calls, count,
			orZero(perCall), orZero(perRow), orZero(walPerRow), orZero(fpiPerRow), oneLine(query, 90))
		return nil
	})
	return err
}

func orZero(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// oneLine squeezes a statement's whitespace and cuts it to max bytes.
func oneLine(q string, max int) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > max {
		q = q[:max] + "…"
	}
	return q
}
