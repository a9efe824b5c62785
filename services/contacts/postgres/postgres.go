// Package postgres stores the contacts service's users in PostgreSQL (schema "contacts") and
// applies the schema's embedded migrations.
package postgres

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/contacts"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema the contacts service owns.
const Schema = "contacts"

// Migrate brings the contacts schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// Store implements contacts.Store.
type Store struct {
	pool *pgxpool.Pool
}

var _ contacts.Store = (*Store)(nil)

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const userColumns = `id, email, phone, locale, timezone, created_at, updated_at`

func scanUser(r pgx.Row) (*contacts.User, error) {
	var u contacts.User
	err := r.Scan(&u.ID, &u.Email, &u.Phone, &u.Locale, &u.Timezone, &u.CreatedAt, &u.UpdatedAt)
	return &u, err
}

// UpsertUser implements contacts.Store.
func (s *Store) UpsertUser(ctx context.Context, u *contacts.User) (*contacts.User, error) {
	out, err := scanUser(s.pool.QueryRow(ctx, `
		INSERT INTO contacts.users (id, email, phone, locale, timezone) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET email = excluded.email, phone = excluded.phone,
			locale = excluded.locale, timezone = excluded.timezone, updated_at = now()
		RETURNING `+userColumns, u.ID, u.Email, u.Phone, u.Locale, u.Timezone))
	return out, pgdb.Err(err)
}

// User implements contacts.Store.
func (s *Store) User(ctx context.Context, id string) (*contacts.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM contacts.users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "user %q not found", id)
	}
	return u, pgdb.Err(err)
}

// DeleteUser implements contacts.Store.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM contacts.users WHERE id = $1`, id)
	return pgdb.Err(err)
}

// Users implements contacts.Store.
func (s *Store) Users(ctx context.Context, ids []string) ([]*contacts.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM contacts.users WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*contacts.User, error) { return scanUser(r) })
	return users, pgdb.Err(err)
}
