package contacts_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
)

// openPool returns a contacts service on a fresh database, and a pool on it.
func openPool(t *testing.T) (*contacts.Service, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.DB(t, "contacts", migrate))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return contacts.New(postgres.New(pool), nil), pool
}

// prune makes one pass over table at now, keeping its rows for keep, in batches of 2.
func prune(t *testing.T, pool *pgxpool.Pool, table string, prune retention.PruneFunc, keep time.Duration) int {
	t.Helper()
	p := &retention.Pruner{DB: pool, Batch: 2, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Tables: []retention.Table{{Name: table, Keep: keep, Prune: prune}}}
	return p.Pass(t.Context())[table]
}

// TestPruneSMSKeywords: the records of keywords older than the retention go, the newer stay
// (and a replay of theirs is still refused); with no retention, none goes.
func TestPruneSMSKeywords(t *testing.T) {
	svc, pool := openPool(t)
	ctx := t.Context()
	const number = "+14155550100"
	for i, sid := range []string{"SM-old-1", "SM-old-2", "SM-old-3", "SM-new"} {
		if applied, err := svc.SMSKeyword(ctx, sid, number, i%2 == 0); err != nil || !applied {
			t.Fatalf("SMSKeyword(%s) = %v, %v", sid, applied, err)
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE contacts.sms_keywords SET received_at = now() - interval '100 days'
		WHERE message_sid LIKE 'SM-old-%'`); err != nil {
		t.Fatal(err)
	}
	if n := prune(t, pool, "contacts.sms_keywords", postgres.PruneSMSKeywords, 0); n != 0 {
		t.Errorf("with no retention, %d records pruned", n)
	}
	if n := prune(t, pool, "contacts.sms_keywords", postgres.PruneSMSKeywords, 90*24*time.Hour); n != 3 {
		t.Errorf("pruned %d records, want 3", n)
	}
	var left []string
	rows, err := pool.Query(ctx, `SELECT message_sid FROM contacts.sms_keywords`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sid string
		if err := rows.Scan(&sid); err != nil {
			t.Fatal(err)
		}
		left = append(left, sid)
	}
	if len(left) != 1 || left[0] != "SM-new" {
		t.Errorf("records left: %v, want SM-new", left)
	}
	if applied, err := svc.SMSKeyword(ctx, "SM-new", number, true); err != nil || applied {
		t.Errorf("a replay of a kept record: applied %v, %v; want refused", applied, err)
	}
}

// TestPruneChanges: the change feed keeps the last hour.
func TestPruneChanges(t *testing.T) {
	_, pool := openPool(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO contacts.changes (key, at)
		SELECT 'u:old-' || i, now() - interval '2 hours' FROM generate_series(1, 5) i UNION ALL SELECT 'u:new', now()`); err != nil {
		t.Fatal(err)
	}
	if n := prune(t, pool, postgres.ChangesTable, postgres.PruneChanges, time.Hour); n != 5 {
		t.Errorf("pruned %d changes, want 5", n)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM contacts.changes`).Scan(&left); err != nil || left != 1 {
		t.Errorf("%d changes left (%v), want the recent one", left, err)
	}
}

// TestPruneDevices: devices declared dead longer ago than the retention go, and their owners'
// cache entries with them; active devices, and dead ones declared since, stay. So does a dead
// token's suppression.
func TestPruneDevices(t *testing.T) {
	svc, pool := openPool(t)
	ctx := t.Context()
	const user = "u-devices"
	if _, err := svc.UpsertUser(ctx, &contacts.User{ID: user}); err != nil {
		t.Fatal(err)
	}
	token := func(i int) string { return fmt.Sprintf("%064x", i) }
	for i := range 5 {
		if _, err := svc.RegisterDevice(ctx, &contacts.Device{UserID: user, Platform: delivery.IOS, Token: token(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// 0-2 died long ago, 3 died lately, 4 lives (registered long ago).
	for i := range 4 {
		if err := svc.DeactivateToken(ctx, delivery.IOS, token(i), "Unregistered", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE contacts.devices SET deactivated_at = now() - interval '100 days'
		WHERE token = ANY($1)`, []string{token(0), token(1), token(2)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE contacts.devices SET created_at = now() - interval '1 year',
		updated_at = now() - interval '1 year' WHERE token = $1`, token(4)); err != nil {
		t.Fatal(err)
	}
	changes := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM contacts.changes WHERE key = $1`, contacts.UserKey(user)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := changes()

	if n := prune(t, pool, "contacts.devices", postgres.PruneDevices, 0); n != 0 {
		t.Errorf("with no retention, %d devices pruned", n)
	}
	if n := prune(t, pool, "contacts.devices", postgres.PruneDevices, 90*24*time.Hour); n != 3 {
		t.Errorf("pruned %d devices, want 3", n)
	}
	devices, err := svc.Store.Devices(ctx, user, true)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, d := range devices {
		left = append(left, d.Token)
	}
	if want := []string{token(4), token(3)}; !slices.Equal(left, want) { // listed by registration
		t.Errorf("devices left: %v, want %v", left, want)
	}
	if after := changes(); after <= before {
		t.Errorf("the user's cache entry was not evicted: %d changes of theirs before the prune, %d after", before, after)
	}
	var suppressed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM contacts.suppressions WHERE address = ANY($1) AND invalid`,
		[]string{token(0), token(1), token(2)}).Scan(&suppressed); err != nil || suppressed != 3 {
		t.Errorf("%d of the pruned tokens still suppressed (%v), want 3", suppressed, err)
	}
}
