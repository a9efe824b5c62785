package postgres_test

import (
	"context"
	"io/fs"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/deliverytest"
	"github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
)

// The migrations of the services that kept deliveries and attempts before the delivery schema
// took them over, as those services last had them, applied as they applied them.
const (
	notifierMigrations = "testdata/before/notifier"
	workersMigrations  = "testdata/before/workers"
)

// TestMigrateAdopts: a database that the notifier and the workers set up before the delivery
// schema existed keeps its deliveries and attempts; they move to the delivery schema, lose the
// foreign key to the notifier's notifications, and end up as a new database's.
func TestMigrateAdopts(t *testing.T) {
	tests := []struct {
		name string
		// notifier and workers are the last migrations of each that the database had; 0: none.
		notifier, workers int
	}{
		{"the last tables of both", 11, 2},
		{"the notifier's only", 11, 0},
		{"before re-drives, user ids and publish failures", 1, 1},
	}
	fresh := describe(t, open(t))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			pool := openEmpty(t)
			oldMigrate(t, pool, "notifier", notifierMigrations, tc.notifier)
			oldMigrate(t, pool, "workers", workersMigrations, tc.workers)
			now := time.Now().Truncate(time.Microsecond)
			n, queued, sent := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
			exec(t, pool, `INSERT INTO notifier.notifications (id, app_id, category, priority, send_at, expires_at, created_at)
				VALUES ($1, $2, 'account', 'normal', $3, $4, $3)`, n, uuid.Must(uuid.NewV7()), now, now.Add(time.Hour))
			// Only the columns of the first migration: every version has them.
			for _, d := range []struct {
				id                    uuid.UUID
				state, provider, pmid string
				attempts              int
				due, sentAt           *time.Time
			}{
				{queued, "queued", "", "", 0, ptr(now.Add(time.Minute)), nil},
				{sent, "sent", "fake", "pm-1", 1, nil, ptr(now)},
			} {
				exec(t, pool, `INSERT INTO notifier.deliveries (id, notification_id, channel, address, category, priority,
					state, content, attempts, provider, provider_message_id, publishes, due_at, expires_at, created_at,
					updated_at, sent_at)
					VALUES ($1, $2, 'sms', '+14155550123', 'account', 'normal', $3, '{"body":"hi"}', $4, $5, $6, 1, $7, $8, $9, $9, $10)`,
					d.id, n, d.state, d.attempts, d.provider, d.pmid, d.due, now.Add(time.Hour), now.Add(-time.Minute), d.sentAt)
			}
			if tc.workers > 0 {
				exec(t, pool, `INSERT INTO workers.attempts (delivery_id, attempt, worker, provider, outcome, provider_message_id,
					started_at, latency_us) VALUES ($1, 1, 'worker-a', 'fake', 'sent', 'pm-1', $2, 2500)`, sent, now)
			}

			if err := postgres.Migrate(ctx, pool, quiet); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			for _, old := range []string{"notifier.deliveries", "workers.attempts"} {
				var gone bool
				if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NULL`, old).Scan(&gone); err != nil || !gone {
					t.Errorf("%s is still there (%v)", old, err)
				}
			}
			if d := diffLines(describe(t, pool), fresh); d != "" {
				t.Errorf("the adopted schema differs from a new one:\n%s", d)
			}

			h := harness(postgres.New(pool), pool)
			got := h.Get(t, queued)
			want := deliverytest.Row{Delivery: delivery.Delivery{
				ID: queued, NotificationID: n, Channel: delivery.SMS, To: "+14155550123", Category: "account",
				Priority: delivery.Normal, DefaultOptIn: true, State: delivery.Queued, Content: delivery.Content{Body: "hi"},
				DueAt: ptr(now.Add(time.Minute)), ExpiresAt: now.Add(time.Hour), CreatedAt: now.Add(-time.Minute),
				UpdatedAt: now.Add(-time.Minute),
			}, Publishes: 1}
			if !reflect.DeepEqual(utc(got), utc(want)) {
				t.Errorf("the adopted queued delivery:\n got %+v\nwant %+v", utc(got), utc(want))
			}
			if got := h.Get(t, sent); got.State != delivery.Sent || got.ProviderMessageID != "pm-1" || got.SentAt == nil || !got.SentAt.Equal(now) {
				t.Errorf("the adopted sent delivery is %s as %q, sent %v", got.State, got.ProviderMessageID, got.SentAt)
			}
			if tc.workers > 0 {
				if log := h.Log(t, sent); len(log) != 1 || log[0].Worker != "worker-a" || log[0].Drive != 0 || log[0].Latency != 2500*time.Microsecond {
					t.Errorf("the adopted attempt log: %+v", log)
				}
			}

			// The store works on the adopted tables, and a delivery needs no notification in the
			// notifier's schema.
			s := postgres.New(pool)
			defer s.Close()
			orphan := delivery.Delivery{ID: uuid.Must(uuid.NewV7()), NotificationID: uuid.Must(uuid.NewV7()), Channel: delivery.Email,
				To: "ada@example.com", Category: "account", Priority: delivery.Normal, State: delivery.Queued,
				DueAt: ptr(now.Add(time.Minute)), ExpiresAt: now.Add(time.Hour), CreatedAt: now}
			if err := s.Create(ctx, []delivery.Delivery{orphan}); err != nil {
				t.Fatalf("Create without a notification: %v", err)
			}
			claimed, err := s.Claim(ctx, "worker-a", time.Minute, []uuid.UUID{queued, orphan.ID})
			if err != nil || len(claimed) != 2 {
				t.Fatalf("Claim = %d deliveries, %v; want 2", len(claimed), err)
			}
			var as []delivery.Attempt
			for _, d := range claimed {
				as = append(as, delivery.Attempt{DeliveryID: d.ID, Attempt: d.Attempts, Drive: d.Drive, State: delivery.Sent,
					Provider: "fake", ProviderMessageID: "pm-" + d.ID.String(), Started: now})
			}
			if err := s.Record(ctx, "worker-a", as); err != nil {
				t.Fatalf("Record: %v", err)
			}
			for _, id := range []uuid.UUID{queued, orphan.ID} {
				if got := h.Get(t, id); got.State != delivery.Sent || len(h.Log(t, id)) != 1 {
					t.Errorf("delivery %s is %s with %d attempts logged, want sent with 1", id, got.State, len(h.Log(t, id)))
				}
			}
		})
	}
}

// openEmpty returns a pool on a new, empty database.
func openEmpty(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgdb.Open(ctx, pgtest.DB(t, "empty", nil), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// oldMigrate applies the migrations in dir up to version last to schema, as the service that
// owned them did.
func oldMigrate(t *testing.T, pool *pgxpool.Pool, schema, dir string, last int) {
	t.Helper()
	if last == 0 {
		return
	}
	files := fstest.MapFS{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil || v > last {
			continue
		}
		b, err := fs.ReadFile(os.DirFS(dir), e.Name())
		if err != nil {
			t.Fatal(err)
		}
		files[path.Base(e.Name())] = &fstest.MapFile{Data: b}
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, files, quiet); err != nil {
		t.Fatalf("migrate %s to %d: %v", schema, last, err)
	}
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// describe lists the delivery schema's columns, indexes and constraints, one a line, in an
// order that does not depend on how they came to be (a column added to an adopted table comes
// last in it).
func describe(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT format('column %s.%s %s %s default %s', table_name, column_name, data_type,
			CASE WHEN is_nullable = 'YES' THEN 'null' ELSE 'not null' END, coalesce(column_default, '-'))
		FROM information_schema.columns WHERE table_schema = 'delivery'`,
		`SELECT format('index %s: %s', indexname, indexdef) FROM pg_indexes WHERE schemaname = 'delivery'`,
		`SELECT format('constraint %s on %s: %s', conname, conrelid::regclass, pg_get_constraintdef(oid))
		FROM pg_constraint WHERE connamespace = 'delivery'::regnamespace`,
	} {
		rows, err := pool.Query(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lines...)
	}
	slices.Sort(out)
	return out
}

// diffLines lists the lines only one of got and want has; "" if none.
func diffLines(got, want []string) string {
	var b strings.Builder
	for _, l := range got {
		if !slices.Contains(want, l) {
			b.WriteString("\t+ " + l + "\n")
		}
	}
	for _, l := range want {
		if !slices.Contains(got, l) {
			b.WriteString("\t- " + l + "\n")
		}
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

// utc is r with its times in UTC, for reflect.DeepEqual to compare instants.
func utc(r deliverytest.Row) deliverytest.Row {
	for _, p := range []**time.Time{&r.DueAt, &r.SentAt} {
		if *p != nil {
			*p = ptr((**p).UTC())
		}
	}
	r.ExpiresAt, r.CreatedAt, r.UpdatedAt = r.ExpiresAt.UTC(), r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return r
}
