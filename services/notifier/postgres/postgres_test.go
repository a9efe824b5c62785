package postgres_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// migrate sets up the template database that every test's database is cloned from.
func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	return deliverypg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
}

// open returns a Store on a fresh, migrated database, and a pool on it for checks in SQL.
func open(t *testing.T) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	return openWith(t, 16)
}

// openWith is open with a pool of at most conns connections.
func openWith(t *testing.T, conns int32) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.DB(t, "notifier", migrate)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgdb.Open(ctx, url, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return postgres.New(pool, deliveryStore(t, pool)), pool
}

// deliveryStore returns internal/delivery's store on pool, closed when the test ends.
func deliveryStore(t *testing.T, pool *pgxpool.Pool) *deliverypg.Store {
	d := deliverypg.New(pool)
	t.Cleanup(d.Close)
	return d
}

// t0 is the tests' clock: every time the API takes is fixed, so nothing depends on timing.
var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 123456000, time.UTC)

func ptr[T any](v T) *T { return &v }

func newID(t *testing.T) uuid.UUID {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// notification returns a notification of app with one delivery per state given, each due an
// hour after t0 unless it is terminal.
func notification(t *testing.T, app uuid.UUID, key string, states ...delivery.State) *notifier.Notification {
	t.Helper()
	n := &notifier.Notification{
		ID:             newID(t),
		AppID:          app,
		IdempotencyKey: key,
		Category:       "account.security",
		Priority:       delivery.Normal,
		SendAt:         t0,
		ExpiresAt:      t0.Add(24 * time.Hour),
		CreatedAt:      t0,
	}
	for i, st := range states {
		d := &notifier.Delivery{
			ID:             newID(t),
			NotificationID: n.ID,
			Channel:        delivery.Email,
			To:             fmt.Sprintf("user%d@example.com", i),
			State:          st,
			Content:        delivery.Content{Subject: "Hi", Text: fmt.Sprint("body ", i)},
			CreatedAt:      t0,
			UpdatedAt:      t0,
		}
		if !st.Terminal() {
			d.DueAt = ptr(t0.Add(time.Hour))
		}
		n.Deliveries = append(n.Deliveries, d)
	}
	return n
}

// own gives n's deliveries the notification's user, category and rules, as Send does.
func own(n *notifier.Notification) *notifier.Notification {
	for _, d := range n.Deliveries {
		d.UserID, d.Category, d.Priority, d.Critical, d.DefaultOptIn = n.UserID, n.Category, n.Priority, n.Critical, n.DefaultOptIn
		if d.ExpiresAt.IsZero() {
			d.ExpiresAt = n.ExpiresAt
		}
	}
	return n
}

// createAll stores ns in one call and returns which were created.
func createAll(t *testing.T, s *postgres.Store, ns ...*notifier.Notification) ([]bool, error) {
	t.Helper()
	for _, n := range ns {
		own(n)
	}
	created, failed, err := s.CreateNotifications(t.Context(), ns)
	if err != nil {
		return nil, err
	}
	for _, err := range failed {
		if err != nil {
			return nil, err
		}
	}
	return created, nil
}

func create(t *testing.T, s *postgres.Store, n *notifier.Notification) *notifier.Notification {
	t.Helper()
	created, err := createAll(t, s, n)
	if err != nil {
		t.Fatalf("CreateNotifications: %v", err)
	}
	if !created[0] {
		t.Fatalf("CreateNotifications: created = false for a new notification")
	}
	return n
}

// row is what the tests read of a delivery straight from the table.
type row struct {
	State      string
	Reason     string
	Address    string
	Category   string
	Priority   string
	Content    delivery.Content
	DueAt      *time.Time
	ExpiresAt  time.Time
	Publishes  int
	LeaseOwner *string
	UpdatedAt  time.Time
}

func readRow(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) row {
	t.Helper()
	var r row
	var content []byte
	err := pool.QueryRow(t.Context(), `
		SELECT state, reason, address, category, priority, content, due_at, expires_at, publishes,
			lease_owner, updated_at
		FROM delivery.deliveries WHERE id = $1`, id).
		Scan(&r.State, &r.Reason, &r.Address, &r.Category, &r.Priority, &content, &r.DueAt,
			&r.ExpiresAt, &r.Publishes, &r.LeaseOwner, &r.UpdatedAt)
	if err != nil {
		t.Fatalf("read delivery %s: %v", id, err)
	}
	if err := json.Unmarshal(content, &r.Content); err != nil {
		t.Fatalf("decode content of %s: %v", id, err)
	}
	return r
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func fmtTime(p *time.Time) string {
	if p == nil {
		return "NULL"
	}
	return p.UTC().Format(time.RFC3339Nano)
}

func TestCreateNotification(t *testing.T) {
	s, pool := open(t)
	app := newID(t)

	tests := []struct {
		name string
		n    func() *notifier.Notification
	}{
		{"inline content on every channel", func() *notifier.Notification {
			n := notification(t, app, "", delivery.Queued, delivery.Queued, delivery.Queued, delivery.Queued, delivery.Queued)
			for i, ch := range delivery.Channels {
				n.Deliveries[i].Channel = ch
			}
			n.Deliveries[0].Content = delivery.Content{Title: "Hello", Body: "Ünïcödé ✓ \"quoted\" <b>",
				Data: map[string]any{"n": 1.5, "ok": true, "s": "x", "list": []any{"a", 2.0},
					"obj": map[string]any{"deep": nil}}}
			n.Deliveries[2].Content = delivery.Content{Body: "sms"}
			n.Deliveries[3].Content = delivery.Content{Subject: "S", HTML: "<p>h</p>", Text: "t"}
			n.Deliveries[4].Content = delivery.Content{Title: "In the inbox", Body: "b"}
			n.RequestHash = []byte{1, 2, 3}
			return n
		}},
		{"template, user and key", func() *notifier.Notification {
			n := notification(t, app, "key-1", delivery.Queued)
			n.UserID = "user-42"
			n.Template = &notifier.TemplateRef{Name: "welcome", Version: 3, Locale: "de-DE"}
			n.Priority = delivery.High
			return n
		}},
		{"scheduled and skipped", func() *notifier.Notification {
			n := notification(t, app, "", delivery.Scheduled, delivery.Skipped)
			n.SendAt = t0.Add(48 * time.Hour)
			n.ExpiresAt = n.SendAt.Add(time.Hour)
			n.Deliveries[0].DueAt = ptr(n.SendAt)
			n.Deliveries[1].To, n.Deliveries[1].Reason, n.Deliveries[1].Content = "", "no_address", delivery.Content{}
			return n
		}},
		{"no deliveries", func() *notifier.Notification {
			return notification(t, app, "")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.n()
			if stored := create(t, s, n); stored.ID != n.ID {
				t.Errorf("CreateNotification returned %s, want %s", stored.ID, n.ID)
			}
			got, err := s.Notification(t.Context(), app, n.ID)
			if err != nil {
				t.Fatalf("Notification: %v", err)
			}
			checkNotification(t, got, n)
			for _, d := range n.Deliveries {
				r := readRow(t, pool, d.ID)
				if !reflect.DeepEqual(r.Content, d.Content) {
					t.Errorf("delivery %s content = %+v, want %+v", d.ID, r.Content, d.Content)
				}
				if !sameTime(r.DueAt, d.DueAt) {
					t.Errorf("delivery %s due_at = %s, want %s", d.ID, fmtTime(r.DueAt), fmtTime(d.DueAt))
				}
				if !r.ExpiresAt.Equal(n.ExpiresAt) || r.Category != n.Category || r.Priority != string(n.Priority) ||
					r.Publishes != 0 || r.LeaseOwner != nil || r.Address != d.To {
					t.Errorf("delivery %s row = %+v", d.ID, r)
				}
			}
		})
	}
}

// checkNotification compares what the store returned with what was stored.
func checkNotification(t *testing.T, got, want *notifier.Notification) {
	t.Helper()
	if got.ID != want.ID || got.AppID != want.AppID || got.IdempotencyKey != want.IdempotencyKey ||
		string(got.RequestHash) != string(want.RequestHash) || got.Category != want.Category ||
		got.UserID != want.UserID || got.Priority != want.Priority || !reflect.DeepEqual(got.Template, want.Template) ||
		!got.SendAt.Equal(want.SendAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("notification = %+v\nwant %+v", got, want)
	}
	wantDs := slices.SortedFunc(slices.Values(want.Deliveries), func(a, b *notifier.Delivery) int {
		return cmp.Compare(a.ID.String(), b.ID.String())
	})
	if len(got.Deliveries) != len(wantDs) {
		t.Fatalf("%d deliveries, want %d", len(got.Deliveries), len(wantDs))
	}
	for i, g := range got.Deliveries {
		w := wantDs[i]
		if g.ID != w.ID || g.NotificationID != want.ID || g.Channel != w.Channel || g.To != w.To ||
			g.State != w.State || g.Reason != w.Reason || g.Attempts != 0 || g.LastError != "" ||
			g.Provider != "" || g.ProviderMessageID != "" || g.SentAt != nil ||
			!g.CreatedAt.Equal(w.CreatedAt) || !g.UpdatedAt.Equal(w.UpdatedAt) {
			t.Errorf("delivery %d = %+v\nwant %+v", i, g, w)
		}
	}
}

func TestCreateNotificationIsOneTransaction(t *testing.T) {
	s, pool := open(t)
	app := newID(t)
	existing := create(t, s, notification(t, app, "", delivery.Queued))

	tests := []struct {
		name  string
		spoil func(n *notifier.Notification)
	}{
		{"a delivery id repeated", func(n *notifier.Notification) {
			n.Deliveries[1].ID = n.Deliveries[0].ID
		}},
		{"a delivery id taken by another notification", func(n *notifier.Notification) {
			n.Deliveries[1].ID = existing.Deliveries[0].ID
		}},
		{"content that cannot be encoded", func(n *notifier.Notification) {
			n.Deliveries[1].Content.Data = map[string]any{"f": func() {}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := notification(t, app, "k-"+tt.name, delivery.Queued, delivery.Queued)
			tt.spoil(n)
			if _, err := createAll(t, s, n); err == nil {
				t.Fatal("CreateNotifications succeeded")
			}
			if _, err := s.Notification(t.Context(), app, n.ID); !errs.Is(err, errs.NotFound) {
				t.Errorf("Notification after a failed create: err = %v, want NotFound", err)
			}
			if got := count(t, pool, `SELECT count(*) FROM delivery.deliveries WHERE notification_id = $1`, n.ID); got != 0 {
				t.Errorf("%d deliveries left behind", got)
			}
			// The key is free again: a good retry is created.
			good := notification(t, app, n.IdempotencyKey, delivery.Queued)
			create(t, s, good)
		})
	}
}

func TestNotificationNotFound(t *testing.T) {
	s, _ := open(t)
	app, other := newID(t), newID(t)
	n := create(t, s, notification(t, app, "key", delivery.Queued))

	tests := []struct {
		name string
		get  func() (*notifier.Notification, error)
	}{
		{"another app's id", func() (*notifier.Notification, error) { return s.Notification(t.Context(), other, n.ID) }},
		{"unknown id", func() (*notifier.Notification, error) { return s.Notification(t.Context(), app, newID(t)) }},
		{"another app's key", func() (*notifier.Notification, error) {
			return s.NotificationByKey(t.Context(), other, "key")
		}},
		{"unknown key", func() (*notifier.Notification, error) { return s.NotificationByKey(t.Context(), app, "nope") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get()
			if !errs.Is(err, errs.NotFound) {
				t.Errorf("got %+v, %v; want a NotFound error", got, err)
			}
		})
	}
	got, err := s.NotificationByKey(t.Context(), app, "key")
	if err != nil {
		t.Fatalf("NotificationByKey: %v", err)
	}
	checkNotification(t, got, n)
}

func TestCreateNotificationIdempotent(t *testing.T) {
	s, pool := open(t)
	app, other := newID(t), newID(t)
	first := notification(t, app, "order-1", delivery.Queued, delivery.Skipped)
	first.RequestHash = []byte("first")
	create(t, s, first)

	second := notification(t, app, "order-1", delivery.Queued, delivery.Queued, delivery.Queued)
	second.RequestHash = []byte("second")
	created, err := createAll(t, s, second)
	if err != nil {
		t.Fatalf("second CreateNotifications: %v", err)
	}
	if created[0] {
		t.Error("second CreateNotifications: created = true")
	}
	got, err := s.NotificationByKey(t.Context(), app, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	checkNotification(t, got, first)
	if n := count(t, pool, `SELECT count(*) FROM notifier.notifications WHERE id = $1`, second.ID); n != 0 {
		t.Error("the second notification was stored")
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery.deliveries WHERE notification_id = $1 OR id = ANY($2)`,
		second.ID, []uuid.UUID{second.Deliveries[0].ID, second.Deliveries[1].ID, second.Deliveries[2].ID}); n != 0 {
		t.Errorf("%d deliveries of the second notification were stored", n)
	}

	// The same key for another app is another notification.
	third := notification(t, other, "order-1", delivery.Queued)
	if got := create(t, s, third); got.ID != third.ID {
		t.Errorf("other app's create returned %s, want %s", got.ID, third.ID)
	}
	// Without a key, nothing is deduplicated.
	create(t, s, notification(t, app, "", delivery.Queued))
	create(t, s, notification(t, app, "", delivery.Queued))

	if n := count(t, pool, `SELECT count(*) FROM notifier.notifications`); n != 4 {
		t.Errorf("%d notifications stored, want 4", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery.deliveries`); n != 5 {
		t.Errorf("%d deliveries stored, want 5", n)
	}
}

func TestCreateNotificationIdempotentConcurrent(t *testing.T) {
	s, pool := open(t)
	app := newID(t)
	const racers = 16
	ns := make([]*notifier.Notification, racers)
	for i := range ns {
		ns[i] = notification(t, app, "same-key", delivery.Queued, delivery.Queued)
	}
	type result struct {
		n       *notifier.Notification
		created bool
		err     error
	}
	results := make([]result, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ns {
		wg.Go(func() {
			<-start
			created, err := createAll(t, s, ns[i])
			if err != nil {
				results[i] = result{err: err}
				return
			}
			n := ns[i]
			if !created[0] {
				n, err = s.NotificationByKey(context.Background(), app, "same-key")
			}
			results[i] = result{n, created[0], err}
		})
	}
	close(start)
	wg.Wait()

	var winner *notifier.Notification
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("racer %d: %v", i, r.err)
		}
		if r.created {
			if winner != nil {
				t.Fatalf("racers created both %s and %s", winner.ID, r.n.ID)
			}
			winner = r.n
		}
	}
	if winner == nil {
		t.Fatal("no racer created the notification")
	}
	for i, r := range results {
		if r.n.ID != winner.ID || len(r.n.Deliveries) != 2 {
			t.Errorf("racer %d got %s with %d deliveries, want %s with 2", i, r.n.ID, len(r.n.Deliveries), winner.ID)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.notifications`); n != 1 {
		t.Errorf("%d notifications stored, want 1", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery.deliveries`); n != 2 {
		t.Errorf("%d deliveries stored, want 2", n)
	}
}
