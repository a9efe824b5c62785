// Package pgdb opens Herald's PostgreSQL pools, applies each service's embedded migrations to
// that service's own schema, and translates driver errors in one place.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/heraldhq/herald/internal/errs"
)

// Open connects a pool to url and checks that the server answers, retrying until ctx ends so
// that a service started alongside its database waits for it. maxConns 0 keeps pgx's default.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	for {
		err = pool.Ping(ctx)
		if err == nil {
			return pool, nil
		}
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("database unreachable: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Migrate applies the migrations in fsys (goose SQL files at its root) to schema, creating the
// schema if needed; unqualified names in the migrations resolve to the schema. The version table lives in the schema, so services migrate independently;
// an advisory lock per schema lets several replicas start at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS, log *slog.Logger) error {
	if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	h := fnv.New64a()
	h.Write([]byte("herald-migrate-" + schema))
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64() >> 1)))
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	// Unqualified names in the migrations land in the service's schema.
	cfg := pool.Config().Copy()
	cfg.MaxConns = 2
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	mpool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("migration pool: %w", err)
	}
	defer mpool.Close()
	db := stdlib.OpenDBFromPool(mpool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(schema+".goose_db_version"),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrations of %s: %w", schema, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	for _, r := range results {
		log.Info("applied migration", "schema", schema, "version", r.Source.Version, "took", r.Duration)
	}
	return nil
}

// SQLSTATE codes Herald reacts to.
const (
	UniqueViolation     = "23505"
	ForeignKeyViolation = "23503"
)

// Code returns err's SQLSTATE, or "" when err did not come from the server.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// IsUniqueViolation reports whether err is a unique constraint violation, and of which
// constraint.
func IsUniqueViolation(err error) (constraint string, ok bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == UniqueViolation {
		return pgErr.ConstraintName, true
	}
	return "", false
}

// Err classifies a database error for the caller: connection failures, overload, shutdowns and
// serialization conflicts are Unavailable (retrying later may work); anything else the server
// refused is Internal (a bug). The cause stays attached for the logs. Err(nil) is nil.
func Err(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"),          // operator intervention (shutdown)
			pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
		default:
			return errs.Wrap(errs.Internal, err, "internal error")
		}
	}
	return errs.Wrap(errs.Unavailable, err, "the database is unavailable; try again")
}
