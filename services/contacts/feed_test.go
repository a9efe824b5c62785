package contacts_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
)

// newStore returns a contacts service and its store on a fresh database.
func newStore(t *testing.T) (*contacts.Service, *postgres.Store) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.DB(t, "contacts", migrate))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.New(pool)
	return contacts.New(store, nil), store
}

// readAll reads every page of the changes since horizon, as a caller of ListChanges does.
func readAll(t *testing.T, svc *contacts.Service, horizon uint64) ([]string, uint64) {
	t.Helper()
	var keys []string
	var from *contacts.ChangesCursor
	for {
		page, err := svc.ListChanges(context.Background(), horizon, from)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, page.Keys...)
		if page.More == nil {
			return keys, page.Next
		}
		from = page.More
	}
}

// TestListChanges: horizon 0 answers only where to start; from there, every acknowledged
// write's keys come back, and the next horizon leaves out what was already read.
func TestListChanges(t *testing.T) {
	ctx := context.Background()
	svc, _ := newStore(t)
	start, err := svc.ListChanges(ctx, 0, nil)
	if err != nil || len(start.Keys) != 0 || start.More != nil || start.Next == 0 {
		t.Fatalf("ListChanges(0) = %+v, %v; want no keys and a horizon", start, err)
	}
	if _, err := svc.UpsertUser(ctx, &contacts.User{ID: "ana", Email: "ana@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Suppress(ctx, preference.Suppression{Channel: delivery.SMS, Address: "+14155550100", Reason: "stop"}); err != nil {
		t.Fatal(err)
	}
	keys, next := readAll(t, svc, start.Next)
	want := []string{contacts.UserKey("ana"), contacts.AddressKey(delivery.SMS, "+14155550100")}
	if !slices.Equal(keys, want) {
		t.Fatalf("changes since the start: %q, want %q", keys, want)
	}
	if _, err := svc.UpdateSettings(ctx, "ana", &preference.Settings{GlobalOptOut: true}, contacts.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if keys, _ := readAll(t, svc, next); !slices.Contains(keys, contacts.UserKey("ana")) ||
		slices.Contains(keys, contacts.AddressKey(delivery.SMS, "+14155550100")) {
		t.Fatalf("changes since the last read: %q, want ana's settings and not the STOP read before", keys)
	}
}

// TestChangesPages walks the feed a key at a time and a byte at a time, with writes committed
// between the pages: the pages hold every key the first page's snapshot could see, in order,
// once each (a full page may be followed by an empty last one), and going on from the first
// page's horizon finds the writes made meanwhile.
func TestChangesPages(t *testing.T) {
	ctx := context.Background()
	svc, store := newStore(t)
	h, err := store.Horizon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("u%d", i)
		if _, err := svc.UpsertUser(ctx, &contacts.User{ID: id}); err != nil {
			t.Fatal(err)
		}
		want = append(want, contacts.UserKey(id))
	}
	for _, limits := range []struct{ keys, bytes int }{{1, 1 << 20}, {3, 1 << 20}, {100, 1}, {100, 7}} {
		t.Run(fmt.Sprintf("%d keys %d bytes", limits.keys, limits.bytes), func(t *testing.T) {
			var got []string
			var from contacts.FeedPosition
			var first uint64
			late := fmt.Sprintf("late-%d-%d", limits.keys, limits.bytes)
			for page := 0; ; page++ {
				keys, more, next, err := store.ChangesPage(ctx, h, from, limits.keys, limits.bytes)
				if err != nil {
					t.Fatal(err)
				}
				if len(keys) == 0 && more != nil || len(keys) > limits.keys {
					t.Fatalf("page %d: %d keys (more: %v), want 1 to %d", page, len(keys), more, limits.keys)
				}
				got = append(got, keys...)
				if page == 0 {
					first = next
					// Committed after the first page: not owed to this read, owed to the next.
					if _, err := svc.UpsertUser(ctx, &contacts.User{ID: late}); err != nil {
						t.Fatal(err)
					}
				}
				if more == nil {
					break
				}
				from = *more
			}
			if !slices.Equal(got[:len(want)], want) || len(got) > len(want)+10 {
				t.Fatalf("pages: %q, want %q first", got, want)
			}
			if keys, _ := readAll(t, svc, first); !slices.Contains(keys, contacts.UserKey(late)) {
				t.Fatalf("from the first page's horizon: %q, want %s", keys, late)
			}
		})
	}
}

// TestListSuppressedAddresses pages through every suppressed address once, however many
// suppressions each has, and refuses pages it cannot serve.
func TestListSuppressedAddresses(t *testing.T) {
	ctx := context.Background()
	svc, _ := newStore(t)
	var want []contacts.Target
	for i := range 5 {
		email := contacts.Target{Channel: delivery.Email, Address: fmt.Sprintf("p%d@example.com", i)}
		sms := contacts.Target{Channel: delivery.SMS, Address: fmt.Sprintf("+1415555010%d", i)}
		for _, cat := range []string{"", "marketing"} { // two suppressions, one address
			for _, tg := range []contacts.Target{email, sms} {
				if err := svc.Suppress(ctx, preference.Suppression{Channel: tg.Channel, Address: tg.Address,
					Category: cat, Reason: "unsubscribe"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		want = append(want, email, sms)
	}
	// A lifted opt-out leaves nothing: the address is no longer suppressed.
	if err := svc.Unsuppress(ctx, delivery.Email, "p0@example.com", ""); err != nil {
		t.Fatal(err)
	}
	if err := svc.Unsuppress(ctx, delivery.Email, "p0@example.com", "marketing"); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(tg contacts.Target) bool { return tg.Address == "p0@example.com" })

	for _, size := range []int{0, 1, 3, 9, 10} {
		var got []contacts.Target
		var after *contacts.Target
		for pages := 0; ; pages++ {
			addrs, more, err := svc.ListSuppressedAddresses(ctx, size, after)
			if err != nil {
				t.Fatal(err)
			}
			if size > 0 && len(addrs) > size || pages > len(want) {
				t.Fatalf("page size %d: a page of %d, page %d", size, len(addrs), pages)
			}
			got = append(got, addrs...)
			if more == nil {
				break
			}
			after = more
		}
		if !sameTargets(got, want) || len(got) != len(want) {
			t.Errorf("page size %d: %v, want each of %v once", size, got, want)
		}
	}

	for _, bad := range []struct {
		size  int
		after *contacts.Target
	}{
		{-1, nil},
		{10_001, nil},
		{10, &contacts.Target{Channel: "pigeon", Address: "x"}},
		{10, &contacts.Target{Channel: delivery.Email, Address: "nul\x00"}},
	} {
		if _, _, err := svc.ListSuppressedAddresses(ctx, bad.size, bad.after); !errs.Is(err, errs.Invalid) {
			t.Errorf("ListSuppressedAddresses(%d, %+v) = %v, want Invalid", bad.size, bad.after, err)
		}
	}
}

func sameTargets(a, b []contacts.Target) bool {
	for _, t := range a {
		if !slices.Contains(b, t) {
			return false
		}
	}
	for _, t := range b {
		if !slices.Contains(a, t) {
			return false
		}
	}
	return true
}
