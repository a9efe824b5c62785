// Package postgres keeps the in-app inbox in PostgreSQL (schema "inbox"): the messages the
// workers store for users, and each user's feed position. Every change that the live feed must
// show (a new message, a read, an archive) sends a NOTIFY on Channel in its own transaction, so
// it is sent only when the change commits and reaches every notifier that listens.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema of the inbox.
const Schema = "inbox"

// Channel is the NOTIFY channel of inbox changes; the payload is the user id whose inbox
// changed.
const Channel = "herald_inbox"

// Migrate brings the inbox schema up to date. The workers and the notifier both run it.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// Store is the inbox in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
}

var (
	_ inbox.Deliverer = (*Store)(nil)
	_ inbox.Reader    = (*Store)(nil)
	_ inbox.Marker    = (*Store)(nil)
)

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Deliver implements inbox.Deliverer.
func (s *Store) Deliver(ctx context.Context, m *inbox.Message) (bool, error) {
	var data []byte
	if m.Data != nil {
		var err error
		if data, err = json.Marshal(m.Data); err != nil {
			return false, fmt.Errorf("inbox message data: %w", err)
		}
	}
	stored := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM inbox.messages WHERE id = $1`, m.ID).Scan(&one)
		if err == nil {
			return nil // stored by an earlier attempt: a redelivery changes nothing
		}
		if err != pgx.ErrNoRows {
			return err
		}
		// The feed row's lock, held to commit, numbers this user's messages in commit order.
		err = tx.QueryRow(ctx, `
			WITH s AS (
				INSERT INTO inbox.feeds AS f (user_id, seq) VALUES ($2, 1)
				ON CONFLICT (user_id) DO UPDATE SET seq = f.seq + 1
				RETURNING seq
			)
			INSERT INTO inbox.messages (id, user_id, seq, notification_id, category, title, body, data, created_at)
			SELECT $1, $2, s.seq, $3, $4, $5, $6, $7, $8 FROM s
			ON CONFLICT (id) DO NOTHING
			RETURNING seq`,
			m.ID, m.UserID, m.NotificationID, m.Category, m.Title, m.Body, data, m.CreatedAt).Scan(&m.Seq)
		if err == pgx.ErrNoRows {
			return nil // a concurrent attempt stored it first
		}
		if err != nil {
			return err
		}
		stored = true
		return notify(ctx, tx, m.UserID)
	})
	if err != nil {
		return false, pgdb.Err(fmt.Errorf("store inbox message: %w", err))
	}
	return stored, nil
}

func notify(ctx context.Context, tx pgx.Tx, userID string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, userID)
	return err
}

const columns = `id, user_id, seq, notification_id, category, title, body, data, created_at, read_at, archived_at`

func scan(rows pgx.Rows) ([]inbox.Message, error) {
	defer rows.Close()
	var out []inbox.Message
	for rows.Next() {
		var m inbox.Message
		var data []byte
		if err := rows.Scan(&m.ID, &m.UserID, &m.Seq, &m.NotificationID, &m.Category, &m.Title, &m.Body,
			&data, &m.CreatedAt, &m.ReadAt, &m.ArchivedAt); err != nil {
			return nil, err
		}
		if len(data) > 0 {
			if err := json.Unmarshal(data, &m.Data); err != nil {
				return nil, fmt.Errorf("inbox message %s data: %w", m.ID, err)
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// List implements inbox.Reader.
func (s *Store) List(ctx context.Context, q inbox.Query) ([]inbox.Message, error) {
	limit := q.Limit
	if limit <= 0 || limit > inbox.MaxPage {
		limit = inbox.DefaultPage
	}
	// The read filter picks the partial index of unread rows; the others walk the user's seq.
	rows, err := s.pool.Query(ctx, `
		SELECT `+columns+` FROM inbox.messages
		WHERE user_id = $1 AND ($2 = 0 OR seq < $2)
		  AND ($3 OR archived_at IS NULL)
		  AND ($4 = 0 OR ($4 = 1 AND read_at IS NULL) OR ($4 = 2 AND read_at IS NOT NULL))
		  AND ($5 = '' OR category = $5)
		ORDER BY seq DESC
		LIMIT $6`,
		q.UserID, q.Before, q.IncludeArchived, int(q.Read), q.Category, limit)
	if err != nil {
		return nil, pgdb.Err(fmt.Errorf("list inbox: %w", err))
	}
	out, err := scan(rows)
	return out, pgdb.Err(err)
}

// unreadCountSQL counts user $1's unread, unarchived messages: what UnreadCount answers and
// what a change reports left.
const unreadCountSQL = `SELECT count(*) FROM inbox.messages
	WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL`

// UnreadCount implements inbox.Reader. It counts rows, not a counter kept beside them, so it is
// exact under any concurrency: one snapshot's count of the partial index.
func (s *Store) UnreadCount(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, unreadCountSQL, userID).Scan(&n)
	return n, pgdb.Err(err)
}

// After implements inbox.Reader.
func (s *Store) After(ctx context.Context, userID string, seq int64, limit int) ([]inbox.Message, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM inbox.messages
		WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, userID, seq, limit)
	if err != nil {
		return nil, pgdb.Err(fmt.Errorf("inbox feed: %w", err))
	}
	out, err := scan(rows)
	return out, pgdb.Err(err)
}

// Unread implements inbox.Reader.
func (s *Store) Unread(ctx context.Context, userID string, ids []uuid.UUID, category string, limit int) ([]inbox.Message, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM inbox.messages
		WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL
		  AND ($2::uuid[] IS NULL OR id = ANY($2)) AND ($3 = '' OR category = $3)
		ORDER BY seq LIMIT $4`, userID, ids, category, limit)
	if err != nil {
		return nil, pgdb.Err(fmt.Errorf("inbox unread: %w", err))
	}
	out, err := scan(rows)
	return out, pgdb.Err(err)
}

// Head answers the user's last seq, 0 when nothing was ever stored for them.
func (s *Store) Head(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM inbox.feeds WHERE user_id = $1`, userID).Scan(&n)
	return n, pgdb.Err(err)
}

// change runs one marking statement (its $1 the user id, returning columns) and counts what
// is left unread, in one transaction that tells the feed when something changed.
func (s *Store) change(ctx context.Context, what, userID, sql string, args ...any) (inbox.Change, error) {
	var c inbox.Change
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, append([]any{userID}, args...)...)
		if err != nil {
			return err
		}
		if c.Marked, err = scan(rows); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, unreadCountSQL, userID).Scan(&c.Unread); err != nil {
			return err
		}
		if len(c.Marked) == 0 {
			return nil
		}
		return notify(ctx, tx, userID)
	})
	if err != nil {
		return inbox.Change{}, pgdb.Err(fmt.Errorf("%s: %w", what, err))
	}
	return c, nil
}

// MarkRead implements inbox.Marker.
func (s *Store) MarkRead(ctx context.Context, userID string, ids []uuid.UUID, at time.Time) (inbox.Change, error) {
	return s.change(ctx, "mark inbox messages read", userID, `UPDATE inbox.messages SET read_at = $3
		WHERE user_id = $1 AND id = ANY($2) AND read_at IS NULL RETURNING `+columns, pgdb.UUIDs(ids), at)
}

// Archive implements inbox.Marker.
func (s *Store) Archive(ctx context.Context, userID string, ids []uuid.UUID, at time.Time) (inbox.Change, error) {
	return s.change(ctx, "archive inbox messages", userID, `UPDATE inbox.messages SET archived_at = $3
		WHERE user_id = $1 AND id = ANY($2) AND archived_at IS NULL RETURNING `+columns, pgdb.UUIDs(ids), at)
}

// EraseUser deletes a deleted user's messages. The feed row stays: a user id used again goes
// on numbering after the old messages, so no feed client resuming from an old position skips
// the new ones.
func (s *Store) EraseUser(ctx context.Context, userID string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM inbox.messages WHERE user_id = $1`, userID)
	return pgdb.Err(err)
}

const pruneMessagesSQL = `
	WITH gone AS (
		DELETE FROM inbox.messages WHERE id = ANY(ARRAY(
			SELECT id FROM inbox.messages WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3))
		RETURNING id)
	SELECT count(*), (SELECT id FROM gone ORDER BY id DESC LIMIT 1) FROM gone`

// PruneMessages deletes up to limit messages whose deliveries were accepted before cutoff
// (their ids are the deliveries' UUIDv7s), from the ones accepted at from, and returns how many
// and when the last one was accepted: a retention.PruneFunc. The users' feed positions stay,
// so feeds go on numbering after the messages that are gone.
func PruneMessages(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
	return retention.ByID(ctx, tx, pruneMessagesSQL, from, cutoff, limit)
}
