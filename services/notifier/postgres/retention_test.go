package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/links"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

const day = 24 * time.Hour

// pruneAll prunes with prune, before cutoff, in batches of limit until none is left, as
// retention.Pruner does, checking each batch against its limit. It returns how many rows went.
func pruneAll(t *testing.T, pool *pgxpool.Pool, prune retention.PruneFunc, cutoff time.Time, limit int) int {
	t.Helper()
	ctx := t.Context()
	total := 0
	var from time.Time
	for {
		var n int
		var last time.Time
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			n, last, err = prune(ctx, tx, from, cutoff, limit)
			return err
		})
		if err != nil {
			t.Fatalf("prune: %v", err)
		}
		if n > limit {
			t.Fatalf("a batch of %d rows, over its limit of %d", n, limit)
		}
		total += n
		if n < limit {
			return total
		}
		from = last
	}
}

// pruneDeliveries is the delivery store's PruneDeliveries, as the notifier runs it.
func pruneDeliveries(d *deliverypg.Store) retention.PruneFunc {
	return func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
		return d.In(tx).PruneDeliveries(ctx, from, cutoff, limit)
	}
}

// accepted returns a notification of app accepted at, with a delivery per state, each last
// changed then.
func accepted(t *testing.T, app uuid.UUID, key string, at time.Time, states ...delivery.State) *notifier.Notification {
	n := notification(t, app, key, states...)
	n.ID, n.CreatedAt, n.SendAt, n.ExpiresAt = ids.NewV7At(at), at, at, at.Add(day)
	for _, d := range n.Deliveries {
		d.ID, d.NotificationID, d.CreatedAt, d.UpdatedAt = ids.NewV7At(at), n.ID, at, at
		if d.DueAt != nil {
			d.DueAt = ptr(at.Add(time.Hour))
		}
	}
	return n
}

// TestPruneNotifications: a notification goes once its deliveries have all gone, not before;
// until then GetNotification answers, and so does its idempotency key.
func TestPruneNotifications(t *testing.T) {
	s, pool := open(t)
	ctx := t.Context()
	d := deliverypg.New(pool)
	t.Cleanup(d.Close)
	app := newID(t)
	now := time.Now()
	old, cutoff := now.Add(-100*day), now.Add(-90*day)
	done := create(t, s, accepted(t, app, "done", old, delivery.Sent, delivery.Failed))
	kept := create(t, s, accepted(t, app, "kept", old, delivery.Sent, delivery.Dead))
	if _, err := pool.Exec(ctx, `UPDATE delivery.deliveries SET updated_at = $2 WHERE id = $1`,
		kept.Deliveries[1].ID, now.Add(-time.Hour)); err != nil { // re-driven lately, and dead again
		t.Fatal(err)
	}
	young := create(t, s, accepted(t, app, "young", now.Add(-day), delivery.Sent))

	if n := pruneAll(t, pool, pruneDeliveries(d), cutoff, 1); n != 3 {
		t.Errorf("pruned %d deliveries, want 3", n)
	}
	if n := pruneAll(t, pool, postgres.PruneNotifications, cutoff, 1); n != 1 {
		t.Errorf("pruned %d notifications, want 1", n)
	}
	if _, err := s.Notification(ctx, app, done.ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("a notification whose deliveries are gone: err = %v, want NotFound", err)
	}
	if _, err := s.NotificationByKey(ctx, app, "done"); !errs.Is(err, errs.NotFound) {
		t.Errorf("its idempotency key: err = %v, want NotFound", err)
	}
	got, err := s.Notification(ctx, app, kept.ID)
	if err != nil || len(got.Deliveries) != 1 || got.Deliveries[0].ID != kept.Deliveries[1].ID {
		t.Errorf("a notification with a delivery kept: %+v, %v; want it with that delivery", got, err)
	}
	for _, key := range []string{"kept", "young"} {
		if _, err := s.NotificationByKey(ctx, app, key); err != nil {
			t.Errorf("idempotency key %q: %v", key, err)
		}
	}
	if got, err := s.Notification(ctx, app, young.ID); err != nil || len(got.Deliveries) != 1 {
		t.Errorf("a notification accepted a day ago: %+v, %v; want it whole", got, err)
	}
}

// TestPruneProviderEvents: an event received before the cutoff goes once its delivery has
// gone (or when it names none), so that a webhook replayed while the delivery is kept is still
// known, and applied once.
func TestPruneProviderEvents(t *testing.T) {
	s, pool := open(t)
	ctx := t.Context()
	now := time.Now()
	cutoff := now.Add(-90 * day)
	ds := sentDeliveries(t, s, pool, delivery.Sent, delivery.Sent)
	kept, gone := ds[0], ds[1]
	evs := []notifier.ProviderEvent{
		providerEvent("of-a-kept-delivery", notifier.EventDelivered, kept.ID, now),
		providerEvent("of-a-gone-delivery", notifier.EventDelivered, gone.ID, now),
		providerEvent("of-no-delivery", notifier.EventDelivered, uuid.Nil, now),
		providerEvent("recent", notifier.EventOpened, kept.ID, now),
		providerEvent("recent-of-no-delivery", notifier.EventDelivered, uuid.Nil, now),
	}
	evs[2].ProviderMessageID = "pm-unknown"
	evs[4].ProviderMessageID = "pm-unknown-too"
	if _, err := s.RecordProviderEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM delivery.deliveries WHERE id = $1`, gone.ID); err != nil { // pruned
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE notifier.provider_events SET received_at = $1 WHERE event_id NOT LIKE 'recent%'`,
		now.Add(-100*day)); err != nil {
		t.Fatal(err)
	}

	if n := pruneAll(t, pool, postgres.PruneProviderEvents, cutoff, 1); n != 2 {
		t.Errorf("pruned %d events, want 2", n)
	}
	for _, e := range evs {
		want := e.ID != "of-a-gone-delivery" && e.ID != "of-no-delivery"
		if got := count(t, pool, `SELECT count(*) FROM notifier.provider_events WHERE event_id = $1`, e.ID) == 1; got != want {
			t.Errorf("event %s kept %v, want %v", e.ID, got, want)
		}
	}
	again, err := s.RecordProviderEvents(ctx, evs[:1])
	if err != nil || len(again) != 0 {
		t.Errorf("a replay of an event of a kept delivery: %+v, %v; want nothing new", again, err)
	}
}

// TestPruneKeyChanges: the key change feed keeps what was written since the cutoff.
func TestPruneKeyChanges(t *testing.T) {
	_, pool := open(t)
	ctx := t.Context()
	now := time.Now()
	if _, err := pool.Exec(ctx, `
		INSERT INTO notifier.key_changes (key, at)
		SELECT 'old-' || i, $1::timestamptz FROM generate_series(1, 5) i UNION ALL SELECT 'new', $2`,
		now.Add(-2*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if n := pruneAll(t, pool, pgdb.PruneChanges(appkey.ChangesTable), now.Add(-time.Hour), 2); n != 5 {
		t.Errorf("pruned %d changes, want 5", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.key_changes WHERE key = 'new'`); n != 1 {
		t.Errorf("the recent change: %d rows, want 1", n)
	}
}

// TestPrunePlans: each retention statement reads its table through the index of the time it
// goes by, from where the last batch ended, and looks deliveries up by key: never a scan of a
// whole table, whichever plan PostgreSQL makes.
func TestPrunePlans(t *testing.T) {
	_, pool := open(t)
	ctx := t.Context()
	now := time.Now()
	const n = 20_000
	dids := make([]uuid.UUID, n)
	lids := make([]int64, n)
	received := make([]time.Time, n)
	for i := range n {
		at := now.Add(-200*day + time.Duration(i)*10*time.Minute)
		dids[i], lids[i], received[i] = ids.NewV7At(at), links.MakeID(at, int64(i)), at
	}
	var ds []notifier.Delivery
	for i := 0; i < n; i += 10 {
		ds = append(ds, notifier.Delivery{ID: dids[i], NotificationID: dids[i], Channel: delivery.Email, To: "a@example.com",
			Category: "account", Priority: delivery.Normal, State: delivery.Sent, ExpiresAt: received[i].Add(day),
			CreatedAt: received[i]})
	}
	if err := deliveryStore(t, pool).Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO notifier.notifications (id, app_id, category, priority, send_at, expires_at, created_at)
			SELECT u.id, u.id, 'account', 'normal', u.at, u.at, u.at FROM unnest($1::uuid[], $3::timestamptz[]) u(id, at) WHERE $2::bigint[] IS NOT NULL`,
		`INSERT INTO notifier.link_clicks (link_id, delivery_id, clicked_at)
			SELECT u.lid, u.id, u.at FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) u(id, lid, at)`,
		`INSERT INTO notifier.links (id, delivery_id, notification_id, app_id, channel, category, url, created_at, expires_at)
			SELECT u.lid, u.id, u.id, u.id, 'email', 'account', 'https://example.com/', u.at, u.at
			FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) u(id, lid, at)`,
		`INSERT INTO notifier.provider_events (provider, event_id, delivery_id, kind, occurred_at, received_at)
			SELECT 'sendgrid', u.lid::text, u.id, 'delivered', u.at, u.at FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) u(id, lid, at)`,
	} {
		if _, err := pool.Exec(ctx, sql, dids, lids, received); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	from, cutoff := now.Add(-150*day), now.Add(-90*day)
	byID := `'` + ids.FirstV7(from).String() + `', '` + ids.FirstV7(cutoff).String() + `', 5000`
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, sql, types, args, table, index string
		}{
			{"notifications", postgres.PruneNotificationsSQL, "uuid, uuid, int", byID, "notifications", "notifications_pkey"},
			{"clicks", postgres.PruneClicksSQL, "uuid, uuid, int", byID, "link_clicks", "link_clicks_delivery"},
			{"links", postgres.PruneLinksSQL, "bigint, bigint, int",
				fmt.Sprintf("%d, %d, 5000", links.FirstID(from), links.FirstID(cutoff)), "links", "links_pkey"},
			{"events", postgres.PruneProviderEventsSQL, "timestamptz, timestamptz, int",
				`'` + from.Format(time.RFC3339Nano) + `', '` + cutoff.Format(time.RFC3339Nano) + `', 5000`,
				"provider_events", "provider_events_received"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				if _, err := conn.Exec(ctx, `PREPARE `+tc.name+`(`+tc.types+`) AS `+tc.sql); err != nil {
					t.Fatal(err)
				}
				rows, err := conn.Query(ctx, `EXPLAIN EXECUTE `+tc.name+`(`+tc.args+`)`)
				if err != nil {
					t.Fatal(err)
				}
				plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				text := strings.Join(plan, "\n")
				if !strings.Contains(text, "Index Scan using "+tc.index+" on "+tc.table) ||
					strings.Contains(text, "Seq Scan") || strings.Contains(text, "Hash") || strings.Contains(text, "Merge") {
					t.Errorf("plan:\n%s\nwant %s read through %s, and no table scanned", text, tc.table, tc.index)
				}
			})
		}
	}
}
