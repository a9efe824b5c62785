package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// lostPublisher is a broker that loses every message.
type lostPublisher struct{ calls int }

var _ notifier.Publisher = (*lostPublisher)(nil)

func (p *lostPublisher) Publish(context.Context, map[delivery.Channel][]uuid.UUID) error {
	p.calls++
	return errors.New("broker unreachable")
}

// newSender returns a Sender on the real store, that leaves its deliveries to deliveries when
// pub loses them, on the clock now. It is closed when the test ends.
func newSender(t *testing.T, s *postgres.Store, deliveries *deliverypg.Store, pub notifier.Publisher, now func() time.Time) *notifier.Sender {
	log := slog.New(slog.DiscardHandler)
	svc := &notifier.Sender{Store: s, Templates: &notifier.Templates{Store: s}, Categories: &notifier.Categories{Store: s},
		Handoff: &notifier.Handoff{Publisher: pub, Deliveries: deliveries, Log: log, Now: now}, Log: log,
		RepublishAfter: time.Minute, Now: now}
	t.Cleanup(svc.Close)
	return svc
}

// TestSendThenReconcile runs the domain on the real store: a notification whose publish was
// lost is committed, answered, replayed by its key, and published by the reconciler's next
// pass.
func TestSendThenReconcile(t *testing.T) {
	s, pool := open(t)
	pub := &lostPublisher{}
	deliveries := deliveryStore(t, pool)
	svc := newSender(t, s, deliveries, pub, func() time.Time { return t0 })
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	req := func() *notifier.SendRequest {
		return &notifier.SendRequest{
			IdempotencyKey: "invoice-9", RequestHash: []byte("h"),
			Address:  &notifier.Address{Email: "Ann@Example.COM", Phone: "+1 415 555 0123"},
			Category: "account",
			Content:  &notifier.Content{Title: "Invoice ✓", Body: "Ünïcödé 🚀 body"},
			Data:     map[string]any{"invoice": "9", "amount": 12.5},
		}
	}
	res, err := svc.Send(t.Context(), caller, req())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if pub.calls != 1 {
		t.Errorf("%d publish attempts, want 1", pub.calls)
	}
	n := res.Notification

	stored, err := svc.GetNotification(t.Context(), caller, n.ID)
	if err != nil {
		t.Fatalf("GetNotification: %v", err)
	}
	checkNotification(t, stored, n)
	for _, d := range n.Deliveries {
		r := readRow(t, pool, d.ID)
		// Its publish failed: due at once, not a minute after t0, its deadline.
		if r.State != string(delivery.Queued) || !reflect.DeepEqual(r.Content, d.Content) || !sameTime(r.DueAt, ptr(t0)) {
			t.Errorf("delivery %s row %+v, want queued with its content, due at t0", d.ID, r)
		}
	}

	again, err := svc.Send(t.Context(), caller, req())
	if err != nil || !again.Duplicate || again.Notification.ID != n.ID || len(again.Notification.Deliveries) != 2 {
		t.Fatalf("replay = %+v, %v; want the first notification as a duplicate", again, err)
	}
	other := req()
	other.RequestHash = []byte("other")
	if _, err := svc.Send(t.Context(), caller, other); !errs.Is(err, errs.Conflict) {
		t.Errorf("reused key with another request: %v, want Conflict", err)
	}

	if due, _, err := deliveries.Reconcile(t.Context(), t0.Add(-time.Microsecond), time.Minute, 10, nil); err != nil || len(due) != 0 {
		t.Errorf("Reconcile before the publish failed = %+v, %v; want nothing", due, err)
	}
	due, _, err := deliveries.Reconcile(t.Context(), t0, time.Minute, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []delivery.Due
	for _, d := range n.Deliveries {
		want = append(want, delivery.Due{ID: d.ID, Channel: d.Channel})
	}
	byID := func(a, b delivery.Due) int { return strings.Compare(a.ID.String(), b.ID.String()) }
	slices.SortFunc(due, byID)
	slices.SortFunc(want, byID)
	if !slices.Equal(due, want) {
		t.Errorf("Reconcile = %+v, want %+v", due, want)
	}
}

// TestSendRefusesWhatCannotBeStored checks that input PostgreSQL cannot store is answered as
// invalid, naming the field, rather than failing the insert as an internal error.
func TestSendRefusesWhatCannotBeStored(t *testing.T) {
	s, pool := open(t)
	svc := newSender(t, s, deliveryStore(t, pool), &lostPublisher{}, func() time.Time { return t0 })
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	tests := []struct {
		name   string
		change func(r *notifier.SendRequest)
		field  string
	}{
		{"NUL in the body", func(r *notifier.SendRequest) { r.Content.Body = "a\x00b" }, "content.body"},
		{"NUL in the title", func(r *notifier.SendRequest) { r.Content.Title = "\x00" }, "content.title"},
		{"NUL in the idempotency key", func(r *notifier.SendRequest) { r.IdempotencyKey = "k\x00" }, "idempotency_key"},
		{"NUL in data", func(r *notifier.SendRequest) { r.Data = map[string]any{"x": []any{"\x00"}} }, "data"},
		{"NaN in data", func(r *notifier.SendRequest) { r.Data = map[string]any{"x": math.NaN()} }, "data"},
		{"NUL in a template name", func(r *notifier.SendRequest) {
			r.Content, r.Template = nil, &notifier.TemplateRef{Name: "a\x00"}
		}, "template.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &notifier.SendRequest{Address: &notifier.Address{Email: "a@example.com"}, Category: "account",
				Content: &notifier.Content{Title: "T", Body: "B"}}
			tt.change(r)
			_, err := svc.Send(t.Context(), caller, r)
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Field != tt.field {
				t.Errorf("Send: %v (kind %v), want Invalid for %s", err, errs.KindOf(err), tt.field)
			}
		})
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.notifications`); n != 0 {
		t.Errorf("%d notifications stored", n)
	}
}

// TestIdempotencyWindow: a key stands for its first request for 24 hours; after that it may name
// a new notification.
func TestIdempotencyWindow(t *testing.T) {
	s, pool := open(t)
	now := t0
	svc := newSender(t, s, deliveryStore(t, pool), &lostPublisher{}, func() time.Time { return now })
	caller := appkey.Caller{AppID: newID(t), AppName: "billing"}
	req := &notifier.SendRequest{IdempotencyKey: "k", RequestHash: []byte("h"), Category: "account",
		Address: &notifier.Address{Email: "a@example.com"}, Content: &notifier.Content{Body: "hi", Subject: "hi"}}
	first, err := svc.Send(t.Context(), caller, req)
	if err != nil {
		t.Fatal(err)
	}
	now = t0.Add(notifier.IdempotencyWindow - time.Second)
	again, err := svc.Send(t.Context(), caller, req)
	if err != nil || !again.Duplicate || again.Notification.ID != first.Notification.ID {
		t.Fatalf("within the window: %+v, %v", again, err)
	}
	now = t0.Add(notifier.IdempotencyWindow + time.Second)
	later, err := svc.Send(t.Context(), caller, req)
	if err != nil || later.Duplicate || later.Notification.ID == first.Notification.ID {
		t.Fatalf("after the window: %+v, %v", later, err)
	}
	if old, err := svc.GetNotification(t.Context(), caller, first.Notification.ID); err != nil || old.IdempotencyKey != "" {
		t.Fatalf("the first notification after its key was released: %+v, %v", old, err)
	}
}
