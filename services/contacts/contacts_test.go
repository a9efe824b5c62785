package contacts_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The contacts service reads the notifier's categories.
	if err := pgdb.Migrate(ctx, pool, "notifier", os.DirFS("../notifier/postgres/migrations"), log); err != nil {
		return err
	}
	return postgres.Migrate(ctx, pool, log)
}

// replicas returns n contacts services sharing one database, each with its own cache and pool,
// as separate processes would.
func replicas(t testing.TB, n int) []*contacts.Service {
	t.Helper()
	url := pgtest.DB(t, "contacts", migrate)
	var out []*contacts.Service
	for range n {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		out = append(out, contacts.New(postgres.New(pool), nil))
	}
	return out
}

var marketing = preference.Category{Name: "marketing", DefaultOptIn: true}

// allows resolves user id through svc and reports whether a marketing message may go to their
// address on ch.
func allows(t *testing.T, svc *contacts.Service, id string, ch delivery.Channel) bool {
	t.Helper()
	found, err := svc.Resolve(context.Background(), []string{id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := found.Users[id]
	if !ok {
		t.Fatalf("user %s not found", id)
	}
	to := map[delivery.Channel]string{delivery.Email: r.User.Email, delivery.SMS: r.User.Phone}[ch]
	if _, blocked := preference.Blocked(found.Suppressions, marketing, ch, to); blocked {
		return false
	}
	return r.Settings.Allows(marketing, ch)
}

// TestCacheIsExactAcrossReplicas: a change acknowledged by one replica is seen by the next
// lookup on another replica that had the old value cached.
func TestCacheIsExactAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t, 2)
	a, b := rs[0], rs[1]
	if _, err := a.UpsertUser(ctx, &contacts.User{ID: "u", Email: "u@example.com", Phone: "+14155550100"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		optOut := i%2 == 0
		// Warm b's cache with the current value.
		before := allows(t, b, "u", delivery.Email)
		if before2 := allows(t, b, "u", delivery.Email); before2 != before {
			t.Fatal("two lookups without a change disagree")
		}
		var st preference.Settings
		if optOut {
			st.OptedOutChannels = []delivery.Channel{delivery.Email}
		}
		if _, err := a.UpdateSettings(ctx, "u", &st, contacts.AnyVersion); err != nil {
			t.Fatal(err)
		}
		if got := allows(t, b, "u", delivery.Email); got == optOut {
			t.Fatalf("round %d: replica b answered allows=%v after replica a acknowledged opt-out=%v", i, got, optOut)
		}
	}
	// Suppressions are address-level and cached per address: same guarantee.
	if !allows(t, b, "u", delivery.SMS) {
		t.Fatal("SMS blocked before any STOP")
	}
	if err := a.Suppress(ctx, preference.Suppression{Channel: delivery.SMS, Address: "+14155550100", Reason: "stop"}); err != nil {
		t.Fatal(err)
	}
	if allows(t, b, "u", delivery.SMS) {
		t.Fatal("replica b missed a STOP acknowledged by replica a")
	}
}

// TestCacheUnderConcurrentWrites races lookups on one replica against settings writes on
// another: once a write returns, no later lookup may see an older value.
func TestCacheUnderConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	rs := replicas(t, 2)
	writer, reader := rs[0], rs[1]
	if _, err := writer.UpsertUser(ctx, &contacts.User{ID: "w", Email: "w@example.com"}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := -1 // the last acknowledged round
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 60 {
			st := &preference.Settings{QuietHours: &preference.QuietHours{Start: "22:00", End: clock(i)}}
			if _, err := writer.UpdateSettings(ctx, "w", st, contacts.AnyVersion); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			acked = i
			mu.Unlock()
		}
	}()
	for range 300 {
		mu.Lock()
		floor := acked
		mu.Unlock()
		found, err := reader.Resolve(ctx, []string{"w"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := found.Users["w"].Settings
		if floor < 0 {
			continue
		}
		if st == nil || st.QuietHours == nil || st.QuietHours.End < clock(floor) {
			t.Fatalf("read %v after round %d (%s) was acknowledged", st, floor, clock(floor))
		}
	}
	wg.Wait()
}

// clock returns round i as a distinct, increasing "HH:MM".
func clock(i int) string {
	h, m := 0, i
	return string([]byte{'0' + byte(h/10), '0' + byte(h%10), ':', '0' + byte(m/10), '0' + byte(m%10)})
}

// BenchmarkResolve is a settings lookup as a Send does it: one user, served from the coherent
// cache, from 128 concurrent callers. Each round of waiting lookups costs one poll of the change
// feed (real PostgreSQL), a millisecond apart at most: ns/op is the throughput's inverse, not
// one lookup's latency.
func BenchmarkResolve(b *testing.B) {
	ctx := context.Background()
	svc := replicas(b, 1)[0]
	if _, err := svc.UpsertUser(ctx, &contacts.User{ID: "u", Email: "u@example.com", Phone: "+14155550100"}); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Resolve(ctx, []string{"u"}, nil); err != nil { // fills the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if found, err := svc.Resolve(ctx, []string{"u"}, nil); err != nil || len(found.Users) != 1 {
				b.Errorf("Resolve = %v, %v", found, err)
				return
			}
		}
	})
}
