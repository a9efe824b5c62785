package postgres_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/deliverytest"
	"github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var quiet = slog.New(slog.DiscardHandler)

// migrate sets up the template database that every test's database is a copy of.
func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return postgres.Migrate(ctx, pool, quiet)
}

// open returns a pool on a new, migrated database of the test's own.
func open(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := pgtest.DB(t, "delivery", migrate)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgdb.Open(ctx, url, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a store on a new database, and a pool on it to look around the store with.
func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool := open(t)
	s := postgres.New(pool)
	t.Cleanup(s.Close)
	return s, pool
}

func TestContract(t *testing.T) {
	deliverytest.Run(t, func(t *testing.T) deliverytest.Harness {
		s, pool := newStore(t)
		s.ReleaseGrace = 7 * time.Minute
		return harness(s, pool)
	})
}

// harness is the contract's way around s, in SQL on pool.
func harness(s *postgres.Store, pool *pgxpool.Pool) deliverytest.Harness {
	return deliverytest.Harness{
		Store:        s,
		ReleaseGrace: s.ReleaseGrace,
		Now: func(t *testing.T) time.Time {
			t.Helper()
			var now time.Time
			if err := pool.QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
				t.Fatal(err)
			}
			return now
		},
		Seed: func(t *testing.T, r deliverytest.Row) {
			t.Helper()
			if err := seed(t.Context(), pool, r); err != nil {
				t.Fatalf("seed delivery %s: %v", r.ID, err)
			}
		},
		Get: func(t *testing.T, id uuid.UUID) deliverytest.Row {
			t.Helper()
			r, err := get(t.Context(), pool, id)
			if err != nil {
				t.Fatalf("read delivery %s: %v", id, err)
			}
			return r
		},
		Log: func(t *testing.T, id uuid.UUID) []deliverytest.Logged {
			t.Helper()
			rows, err := pool.Query(t.Context(), `
				SELECT drive, attempt, worker, provider, outcome, reason, error, provider_message_id, started_at, latency_us
				FROM delivery.attempts WHERE delivery_id = $1 ORDER BY drive, attempt`, id)
			if err != nil {
				t.Fatal(err)
			}
			log, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (deliverytest.Logged, error) {
				var l deliverytest.Logged
				var us int64
				err := r.Scan(&l.Drive, &l.Attempt, &l.Worker, &l.Provider, &l.Outcome, &l.Reason, &l.Error,
					&l.ProviderMessageID, &l.Started, &us)
				l.Latency = time.Duration(us) * time.Microsecond
				return l, err
			})
			if err != nil {
				t.Fatalf("read the attempt log of %s: %v", id, err)
			}
			return log
		},
	}
}

// columns are the columns of delivery.deliveries, in the order of values.
const columns = `id, notification_id, user_id, channel, address, category, priority, critical, default_opt_in,
	state, reason, content, attempts, drive, last_error, provider, provider_message_id, lease_owner, publishes,
	published, due_at, expires_at, created_at, updated_at, sent_at, app_id, step, step_timeout, digest_id`

func seed(ctx context.Context, db postgres.DB, r deliverytest.Row) error {
	c, err := json.Marshal(r.Content)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `INSERT INTO delivery.deliveries (`+columns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)`,
		r.ID, r.NotificationID, nullIfEmpty(r.UserID), string(r.Channel), r.To, r.Category, string(r.Priority), r.Critical,
		r.DefaultOptIn, string(r.State), r.Reason, c, r.Attempts, r.Drive, r.LastError, r.Provider, r.ProviderMessageID,
		nullIfEmpty(r.LeaseOwner), r.Publishes, !r.Unpublished, r.DueAt, r.ExpiresAt, r.CreatedAt, r.UpdatedAt, r.SentAt,
		pgtype.UUID{Bytes: r.AppID, Valid: r.AppID != uuid.Nil}, r.Step, r.StepTimeout,
		pgtype.UUID{Bytes: r.DigestID, Valid: r.DigestID != uuid.Nil})
	return err
}

func get(ctx context.Context, db postgres.DB, id uuid.UUID) (deliverytest.Row, error) {
	var r deliverytest.Row
	var user, owner *string
	var ch, priority, state string
	var c []byte
	var published bool
	var app, digest pgtype.UUID
	err := db.QueryRow(ctx, `SELECT `+columns+` FROM delivery.deliveries WHERE id = $1`, id).Scan(
		&r.ID, &r.NotificationID, &user, &ch, &r.To, &r.Category, &priority, &r.Critical, &r.DefaultOptIn,
		&state, &r.Reason, &c, &r.Attempts, &r.Drive, &r.LastError, &r.Provider, &r.ProviderMessageID, &owner,
		&r.Publishes, &published, &r.DueAt, &r.ExpiresAt, &r.CreatedAt, &r.UpdatedAt, &r.SentAt, &app, &r.Step, &r.StepTimeout, &digest)
	if err != nil {
		return r, err
	}
	r.AppID, r.DigestID = uuid.UUID(app.Bytes), uuid.UUID(digest.Bytes)
	r.Channel, r.Priority, r.State = delivery.Channel(ch), delivery.Priority(priority), delivery.State(state)
	r.Unpublished = !published
	if user != nil {
		r.UserID = *user
	}
	if owner != nil {
		r.LeaseOwner = *owner
	}
	return r, json.Unmarshal(c, &r.Content)
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
