package deliverytest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// item builds a delivery collected into its recipient's digest (user, channel), as the
// notifier makes one: scheduled with reason digest, due only at its expiry, opening a digest
// that closes closeIn from now when none is open.
func item(now time.Time, user string, ch delivery.Channel, closeIn time.Duration) delivery.Delivery {
	d := row(spec{state: delivery.Scheduled, reason: delivery.ReasonDigest, user: user, channel: ch}, now).Delivery
	d.To = user + "@example.com"
	d.Category = "digestible"
	d.Critical = false
	d.CreatedAt, d.UpdatedAt = now, now
	d.DueAt = ptr(d.ExpiresAt)
	d.Digest = &delivery.DigestItem{Template: "daily-news", Locale: "fr", CloseAt: now.Add(closeIn)}
	return d
}

// builder returns a build for CloseDigest that makes the digest's delivery (queued, its
// notification the digest's id) and records what it was given.
func builder(now time.Time, got *[]delivery.Delivery, gotDigest *delivery.DigestRecord) func(delivery.DigestRecord, []delivery.Delivery) (*delivery.Delivery, error) {
	return func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error) {
		if got != nil {
			*got = items
		}
		if gotDigest != nil {
			*gotDigest = g
		}
		return &delivery.Delivery{
			ID: newID(), NotificationID: g.ID, UserID: g.UserID, AppID: g.AppID, Channel: g.Channel, To: g.To,
			Category: g.Category, Priority: delivery.Normal, DefaultOptIn: true, State: delivery.Queued,
			Content: delivery.Content{Subject: fmt.Sprintf("%d news", len(items)), Text: "list"},
			DueAt:   ptr(now.Add(time.Minute)), ExpiresAt: now.Add(time.Hour), CreatedAt: now, UpdatedAt: now,
		}, nil
	}
}

// collect creates items and returns them with the digest each went into.
func collect(t *testing.T, h Harness, ds ...delivery.Delivery) []delivery.Delivery {
	t.Helper()
	create(t, h, ds...)
	for _, d := range ds {
		if d.DigestID == uuid.Nil {
			t.Fatalf("item %s: no digest id set by Create", d.ID)
		}
	}
	return ds
}

// storedItem is item d as Create stores it: in its digest.
func storedItem(d delivery.Delivery) Row {
	d.Digest = nil
	return stored(d)
}

func closeDigest(t *testing.T, h Harness, id uuid.UUID, now time.Time, build func(delivery.DigestRecord, []delivery.Delivery) (*delivery.Delivery, error)) *delivery.Delivery {
	t.Helper()
	made, err := h.Store.CloseDigest(t.Context(), id, now, build)
	if err != nil {
		t.Fatalf("CloseDigest: %v", err)
	}
	return made
}

func dueDigests(t *testing.T, h Harness, now time.Time) []uuid.UUID {
	t.Helper()
	gs, err := h.Store.DueDigests(t.Context(), now, 100)
	if err != nil {
		t.Fatalf("DueDigests: %v", err)
	}
	ids := make([]uuid.UUID, len(gs))
	for i, g := range gs {
		ids[i] = g.ID
	}
	return ids
}

func digestOf(t *testing.T, h Harness, id uuid.UUID) delivery.DigestRecord {
	t.Helper()
	g, err := h.Store.Digest(t.Context(), id)
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return g
}

// testDigestCloses: the items of one recipient and channel land in one digest, another
// channel's in another; closing it creates one delivery from the live items, oldest first,
// with their content, moves them to digested linked to it, and a second close does nothing.
func testDigestCloses(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	a := collect(t, h, item(now, "ada", delivery.Email, time.Minute), item(now.Add(time.Second), "ada", delivery.Email, time.Hour))
	bs := collect(t, h, item(now.Add(2*time.Second), "ada", delivery.Email, time.Hour), item(now, "ada", delivery.SMS, time.Hour))
	b, sms := bs[0], bs[1]
	if a[0].DigestID == uuid.Nil || a[1].DigestID != a[0].DigestID || b.DigestID != a[0].DigestID {
		t.Fatalf("digest ids %s %s %s: want one digest for ada's email", a[0].DigestID, a[1].DigestID, b.DigestID)
	}
	if sms.DigestID == uuid.Nil || sms.DigestID == a[0].DigestID {
		t.Fatalf("ada's SMS went into digest %s, want one of its own", sms.DigestID)
	}
	check(t, "an item", h.Get(t, b.ID), storedItem(b))
	g := digestOf(t, h, a[0].DigestID)
	if g.Closed || !g.CloseAt.Equal(now.Add(time.Minute)) || g.Template != "daily-news" || g.Locale != "fr" ||
		g.To != "ada@example.com" || g.UserID != "ada" || g.Channel != delivery.Email || g.AppID != appOfTests {
		t.Errorf("digest %+v: want open, closing at %s, as its first item asked", g, now.Add(time.Minute))
	}
	if open, ok, err := h.Store.OpenDigest(t.Context(), appOfTests, "ada", "digestible", delivery.Email, "ada@example.com"); err != nil || !ok || open.ID != g.ID {
		t.Errorf("OpenDigest: %s, %v, %v; want %s", open.ID, ok, err, g.ID)
	}
	if _, ok, err := h.Store.OpenDigest(t.Context(), appOfTests, "ada", "digestible", delivery.IOS, "ada@example.com"); err != nil || ok {
		t.Errorf("OpenDigest of another channel: %v, %v; want none", ok, err)
	}
	if ids := dueDigests(t, h, now.Add(30*time.Second)); len(ids) != 0 {
		t.Errorf("due before its close time: %v", ids)
	}
	at := now.Add(time.Minute)
	if ids := dueDigests(t, h, at); !slices.Equal(ids, []uuid.UUID{g.ID}) {
		t.Errorf("due digests %v, want [%s]", ids, g.ID)
	}
	var items []delivery.Delivery
	var given delivery.DigestRecord
	made := closeDigest(t, h, g.ID, at, builder(at, &items, &given))
	if made == nil {
		t.Fatal("CloseDigest made no delivery")
	}
	if given.ID != g.ID {
		t.Errorf("build was given digest %s, want %s", given.ID, g.ID)
	}
	var gotIDs []uuid.UUID
	for _, it := range items {
		gotIDs = append(gotIDs, it.ID)
		if diff(it.Content, content()) != "" {
			t.Errorf("item %s given without its content:\n%s", it.ID, diff(it.Content, content()))
		}
	}
	if want := []uuid.UUID{a[0].ID, a[1].ID, b.ID}; !slices.Equal(gotIDs, want) {
		t.Errorf("build was given items %v, want %v (oldest first)", gotIDs, want)
	}
	for _, d := range append(a, b) {
		got := h.Get(t, d.ID)
		if got.State != delivery.Digested || got.DueAt != nil || got.Reason != "" {
			t.Errorf("item %s: %s (%q) due %s, want digested, due never", d.ID, got.State, got.Reason, fmtTime(got.DueAt))
		}
		listed := ofNotification(t, h, d.NotificationID)
		if len(listed) != 1 || listed[0].DigestDeliveryID != made.ID || listed[0].DigestID != g.ID {
			t.Errorf("item %s lists as %+v, want linked to digest %s and its delivery %s", d.ID, listed, g.ID, made.ID)
		}
	}
	if got := h.Get(t, made.ID); got.State != delivery.Queued || got.NotificationID != g.ID || got.Content.Subject != "3 news" {
		t.Errorf("the digest's delivery: %s of %s %q, want queued, of the digest, as built", got.State, got.NotificationID, got.Content.Subject)
	}
	if g := digestOf(t, h, g.ID); !g.Closed || g.DeliveryID != made.ID {
		t.Errorf("digest after close: closed %v, delivery %s; want closed, %s", g.Closed, g.DeliveryID, made.ID)
	}
	if _, ok, err := h.Store.OpenDigest(t.Context(), appOfTests, "ada", "digestible", delivery.Email, "ada@example.com"); err != nil || ok {
		t.Errorf("OpenDigest after the close: %v, %v; want none", ok, err)
	}
	if again := closeDigest(t, h, g.ID, at.Add(time.Hour), builder(at, nil, nil)); again != nil {
		t.Errorf("a second close made delivery %s", again.ID)
	}
	if got := h.Get(t, sms.ID); got.State != delivery.Scheduled || got.Reason != delivery.ReasonDigest {
		t.Errorf("another digest's item moved: %s (%q)", got.State, got.Reason)
	}
}

// testDigestNotDue: a digest before its close time does not close.
func testDigestNotDue(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	d := collect(t, h, item(now, "bob", delivery.Email, time.Hour))[0]
	built := false
	made := closeDigest(t, h, d.DigestID, now, func(delivery.DigestRecord, []delivery.Delivery) (*delivery.Delivery, error) {
		built = true
		return nil, errors.New("not due")
	})
	if made != nil || built {
		t.Errorf("a digest not due closed")
	}
	unchanged(t, h, storedItem(d))
	// Nor does the reconciler publish its item before its expiry.
	dues, _, err := h.Store.Reconcile(t.Context(), now.Add(30*time.Minute), time.Minute, 100, nil)
	if err != nil || len(dues) != 0 {
		t.Errorf("Reconcile: %v, %v; want nothing to publish", dues, err)
	}
	unchanged(t, h, storedItem(d))
}

// testDigestAnew: an item that comes after its digest closed opens a new one.
func testDigestAnew(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	first := collect(t, h, item(now, "cy", delivery.Email, 0))[0]
	if closeDigest(t, h, first.DigestID, now, builder(now, nil, nil)) == nil {
		t.Fatal("no delivery")
	}
	next := collect(t, h, item(now, "cy", delivery.Email, time.Minute))[0]
	if next.DigestID == uuid.Nil || next.DigestID == first.DigestID {
		t.Fatalf("the item after the close went into digest %s (the closed one: %s)", next.DigestID, first.DigestID)
	}
	if g := digestOf(t, h, next.DigestID); g.Closed || !g.CloseAt.Equal(now.Add(time.Minute)) {
		t.Errorf("the new digest: closed %v at %s, want open until %s", g.Closed, g.CloseAt, now.Add(time.Minute))
	}
}

// testDigestCanceled: a digest whose items were all canceled closes with nothing to send.
func testDigestCanceled(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	d := collect(t, h, item(now, "dee", delivery.Email, 0))[0]
	if n, err := h.Store.Cancel(t.Context(), d.NotificationID, now); err != nil || n != 1 {
		t.Fatalf("Cancel: %d, %v; want 1", n, err)
	}
	made := closeDigest(t, h, d.DigestID, now, func(delivery.DigestRecord, []delivery.Delivery) (*delivery.Delivery, error) {
		return nil, errors.New("build called for a digest with no live item")
	})
	if made != nil {
		t.Errorf("made delivery %s", made.ID)
	}
	if g := digestOf(t, h, d.DigestID); !g.Closed || g.DeliveryID != uuid.Nil {
		t.Errorf("digest: closed %v, delivery %s; want closed with none", g.Closed, g.DeliveryID)
	}
	if got := h.Get(t, d.ID); got.State != delivery.Canceled {
		t.Errorf("item %s, want canceled", got.State)
	}
}

// testDigestExpires: an item whose ttl passes while its digest is open expires, is never
// published, and is left out of the close.
func testDigestExpires(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	old := collect(t, h, item(now, "eve", delivery.Email, 2*time.Hour))[0]
	fresh := item(now.Add(time.Hour+time.Minute), "eve", delivery.Email, time.Hour)
	fresh.ExpiresAt, fresh.DueAt = now.Add(3*time.Hour), ptr(now.Add(3*time.Hour))
	fresh = collect(t, h, fresh)[0]
	dues, expired, err := h.Store.Reconcile(t.Context(), now.Add(90*time.Minute), time.Minute, 100, nil)
	if err != nil || len(dues) != 0 || expired != 1 {
		t.Fatalf("Reconcile: %v, %d expired, %v; want none to publish, 1 expired", dues, expired, err)
	}
	if got := h.Get(t, old.ID); got.State != delivery.Expired {
		t.Errorf("the old item: %s, want expired", got.State)
	}
	var items []delivery.Delivery
	at := now.Add(2 * time.Hour)
	if closeDigest(t, h, old.DigestID, at, builder(at, &items, nil)) == nil {
		t.Fatal("no delivery")
	}
	if len(items) != 1 || items[0].ID != fresh.ID {
		t.Errorf("items %v, want only the fresh one", items)
	}
}

// testDigestBuildFails: a build that fails leaves the digest open and its items as they were.
func testDigestBuildFails(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	d := collect(t, h, item(now, "fay", delivery.Email, 0))[0]
	boom := errors.New("template gone")
	_, err := h.Store.CloseDigest(t.Context(), d.DigestID, now, func(delivery.DigestRecord, []delivery.Delivery) (*delivery.Delivery, error) {
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("CloseDigest: %v, want the build's error", err)
	}
	unchanged(t, h, storedItem(d))
	if g := digestOf(t, h, d.DigestID); g.Closed {
		t.Error("the digest closed")
	}
	if closeDigest(t, h, d.DigestID, now, builder(now, nil, nil)) == nil {
		t.Error("a later close made nothing")
	}
}

// testDigestEraseUser: erasing a user cancels their items and closes their open digests with
// nothing sent, their address gone.
func testDigestEraseUser(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	d := collect(t, h, item(now, "gus", delivery.Email, time.Hour))[0]
	if err := h.Store.EraseUser(t.Context(), "gus"); err != nil {
		t.Fatal(err)
	}
	if got := h.Get(t, d.ID); got.State != delivery.Canceled || got.Reason != delivery.ReasonUserDeleted {
		t.Errorf("item %s (%q), want canceled (user_deleted)", got.State, got.Reason)
	}
	if g := digestOf(t, h, d.DigestID); !g.Closed || g.To != "" {
		t.Errorf("digest closed %v, address kept %v; want closed, address gone", g.Closed, g.To != "")
	}
}

// testDigestConcurrent: items added while their digests close each land in exactly one digest
// that either takes them (before its close) or is opened after it, never in a closed digest
// left behind: every item ends digested, linked to a delivery that exists, and each digest has
// at most one delivery.
func testDigestConcurrent(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const senders, perSender = 4, 25
	var wg sync.WaitGroup
	var made sync.Map // digest delivery id -> digest id
	var stop atomic.Bool
	errc := make(chan error, senders+1)
	all := make([][]delivery.Delivery, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perSender {
				now := h.Now(t).Truncate(time.Microsecond).UTC()
				ds := []delivery.Delivery{item(now, "hal", delivery.Email, 0), item(now, "hal", delivery.SMS, 0)}
				if err := h.Store.Create(t.Context(), ds); err != nil {
					errc <- fmt.Errorf("create: %w", err)
					return
				}
				all[s] = append(all[s], ds...)
			}
		}()
	}
	closeAll := func() error {
		now := h.Now(t).Add(time.Second).Truncate(time.Microsecond).UTC()
		gs, err := h.Store.DueDigests(t.Context(), now, 100)
		if err != nil {
			return err
		}
		for _, g := range gs {
			d, err := h.Store.CloseDigest(t.Context(), g.ID, now, builder(now, nil, nil))
			if err != nil {
				return err
			}
			if d != nil {
				if prev, dup := made.LoadOrStore(d.ID, g.ID); dup {
					return fmt.Errorf("delivery %s made twice (digest %s)", d.ID, prev)
				}
			}
		}
		return nil
	}
	closer := make(chan struct{})
	go func() {
		defer close(closer)
		for !stop.Load() {
			if err := closeAll(); err != nil {
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	<-closer
	if err := closeAll(); err != nil { // what came after the closer's last pass
		t.Fatal(err)
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	perDigest := map[uuid.UUID]uuid.UUID{}
	made.Range(func(k, v any) bool {
		if prev, ok := perDigest[v.(uuid.UUID)]; ok {
			t.Errorf("digest %s has two deliveries: %s and %s", v, prev, k)
		}
		perDigest[v.(uuid.UUID)] = k.(uuid.UUID)
		return true
	})
	for _, ds := range all {
		for _, d := range ds {
			listed := ofNotification(t, h, d.NotificationID)
			if len(listed) != 1 || listed[0].State != delivery.Digested {
				t.Errorf("item %s: %+v, want digested", d.ID, listed)
				continue
			}
			if dl := listed[0].DigestDeliveryID; dl == uuid.Nil || perDigest[listed[0].DigestID] != dl {
				t.Errorf("item %s in digest %s linked to delivery %s, whose delivery is %s", d.ID, listed[0].DigestID, dl, perDigest[listed[0].DigestID])
			}
		}
	}
}
