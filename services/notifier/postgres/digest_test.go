package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/notifier"
)

// TestCloseDigest runs digests on the real store: Sends collect into one digest; a close whose
// build fails leaves it open and writes nothing; the close makes the digest's notification and
// its one delivery, which GetNotification shows, and links the items to it.
func TestCloseDigest(t *testing.T) {
	s, pool := open(t)
	deliveries := deliveryStore(t, pool)
	pub := &lostPublisher{}
	svc := newSender(t, s, deliveries, pub, func() time.Time { return t0 })
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	g := &delivery.Digest{Window: time.Minute, Template: "nightly"}
	var items []*notifier.Notification
	for i := range 3 {
		res, err := svc.Send(t.Context(), caller, &notifier.SendRequest{RequestHash: []byte{byte(i)}, Category: "account",
			Address: &notifier.Address{Email: "ann@example.com"}, Content: &notifier.Content{Subject: "S", Body: "B"}, Digest: g})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, res.Notification)
	}
	id := items[0].Deliveries[0].DigestID
	for _, n := range items {
		if d := n.Deliveries[0]; d.DigestID != id || id == uuid.Nil || d.State != delivery.Scheduled {
			t.Fatalf("item %s: %s in digest %s, want scheduled in %s", d.ID, d.State, d.DigestID, id)
		}
	}
	if pub.calls != 0 {
		t.Errorf("%d publishes of items, want none", pub.calls)
	}

	closeAt := t0.Add(time.Minute)
	boom := errors.New("render failed")
	if _, err := s.CloseDigest(t.Context(), id, closeAt, func(delivery.DigestRecord, []delivery.Delivery) (*notifier.Notification, error) {
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("CloseDigest: %v, want the build's error", err)
	}
	if _, err := svc.GetNotification(t.Context(), caller, id); err == nil {
		t.Error("a failed close left the digest's notification")
	}

	// No template "nightly" is stored: the digest goes in plain form.
	closer := &notifier.DigestCloser{Store: s, Templates: &notifier.Templates{Store: s}, Publisher: pub, Log: slog.New(slog.DiscardHandler),
		RepublishAfter: time.Minute, Batch: 10}
	if n, err := closer.Close(t.Context(), closeAt); err != nil || n != 1 {
		t.Fatalf("Close: %d, %v; want 1", n, err)
	}
	digest, err := svc.GetNotification(t.Context(), caller, id)
	if err != nil {
		t.Fatalf("GetNotification of the digest: %v", err)
	}
	if len(digest.Deliveries) != 1 || digest.Category != "account" {
		t.Fatalf("the digest's notification: %+v", digest)
	}
	sent := digest.Deliveries[0]
	if sent.State != delivery.Queued || sent.To != "ann@example.com" {
		t.Errorf("the digest's delivery: %s to %q", sent.State, sent.To)
	}
	if r := readRow(t, pool, sent.ID); r.Content.Subject != "3 new notifications" || r.Content.Text != "- S\n- S\n- S" {
		t.Errorf("the digest's content: %q / %q, want the plain form of 3 items", r.Content.Subject, r.Content.Text)
	}
	for _, n := range items {
		got, err := svc.GetNotification(t.Context(), caller, n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := got.Deliveries[0]; d.State != delivery.Digested || d.DigestDeliveryID != sent.ID || d.DigestID != id {
			t.Errorf("item %s: %s, linked to %s in %s; want digested, linked to %s in %s", d.ID, d.State, d.DigestDeliveryID,
				d.DigestID, sent.ID, id)
		}
	}
	if n, err := closer.Close(t.Context(), closeAt.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("a second Close: %d, %v; want nothing", n, err)
	}
}

// TestDigestsCloseInParallelOnASmallPool: more digests fall due at once than the pool has
// connections, and the closer closes them all at once. Each close reads its template before its
// transaction begins; read inside it, every connection ended up in a close's transaction
// waiting for another connection, for good.
func TestDigestsCloseInParallelOnASmallPool(t *testing.T) {
	const conns, digests = 2, 8
	s, pool := openWith(t, conns)
	pub := &lostPublisher{}
	svc := newSender(t, s, deliveryStore(t, pool), pub, func() time.Time { return t0 })
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	g := &delivery.Digest{Window: time.Minute, Template: "nightly"}
	for i := range digests {
		if _, err := svc.Send(t.Context(), caller, &notifier.SendRequest{RequestHash: []byte{byte(i)}, Category: "account",
			Address: &notifier.Address{Email: fmt.Sprintf("user%d@example.com", i)},
			Content: &notifier.Content{Subject: "S", Body: "B"}, Digest: g}); err != nil {
			t.Fatal(err)
		}
	}
	closer := &notifier.DigestCloser{Store: s, Templates: &notifier.Templates{Store: s}, Publisher: pub,
		Log: slog.New(slog.DiscardHandler), RepublishAfter: time.Minute, Batch: 100, Parallel: digests}
	// Closes waiting on each other would wait for ever: the deadline makes that a failure.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if n, err := closer.Close(ctx, t0.Add(time.Minute)); err != nil || n != digests {
		t.Fatalf("Close: %d digests sent, %v; want %d", n, err, digests)
	}
}
