package postgres_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// sentDeliveries creates one email delivery per state; the sent ones carry provider message id
// "pm-<index>" at SendGrid, as a worker leaves them.
func sentDeliveries(t *testing.T, s *postgres.Store, pool *pgxpool.Pool, states ...delivery.State) []*notifier.Delivery {
	t.Helper()
	n := create(t, s, notification(t, newID(t), "", states...))
	for i, d := range n.Deliveries {
		_, err := pool.Exec(t.Context(), `UPDATE delivery.deliveries SET provider = 'sendgrid',
			provider_message_id = $2, due_at = CASE WHEN state IN ('sent', 'delivered', 'bounced') THEN NULL ELSE due_at END
			WHERE id = $1`, d.ID, "pm-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
	}
	return n.Deliveries
}

func providerEvent(id string, kind notifier.ProviderEventKind, d uuid.UUID, at time.Time) notifier.ProviderEvent {
	return notifier.ProviderEvent{Provider: "sendgrid", ID: id, Kind: kind, DeliveryID: d, OccurredAt: at,
		Details: []byte(`{"event":"x"}`)}
}

func eventIDs(evs []notifier.ProviderEvent) []string {
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestRecordProviderEvents(t *testing.T) {
	s, pool := open(t)
	ds := sentDeliveries(t, s, pool, delivery.Sent, delivery.Sent, delivery.Sent, delivery.Failed,
		delivery.Dead, delivery.Expired, delivery.Canceled, delivery.Scheduled, delivery.Sent)
	sent1, sent2, sent3, byPMID := ds[0], ds[1], ds[2], ds[8]

	bounce := providerEvent("e-bounce", notifier.EventBounced, sent2.ID, t0.Add(2*time.Second))
	bounce.Reason, bounce.Effect = "hard_bounce 5.1.1", notifier.AddressInvalid
	lateBounce := providerEvent("e-late-bounce", notifier.EventBounced, sent1.ID, t0.Add(3*time.Second))
	lateBounce.Reason = "hard_bounce 5.0.0"
	viaPMID := providerEvent("e-pmid", notifier.EventDelivered, uuid.Nil, t0)
	viaPMID.ProviderMessageID = "pm-i"
	// A delivery id nobody knows does not fall back to the message id.
	strangerWithPMID := providerEvent("e-stranger", notifier.EventDelivered, uuid.New(), t0)
	strangerWithPMID.ProviderMessageID = "pm-c"
	batch := []notifier.ProviderEvent{
		providerEvent("e-open", notifier.EventOpened, sent3.ID, t0),
		lateBounce,
		providerEvent("e-delivered", notifier.EventDelivered, sent1.ID, t0.Add(time.Second)),
		providerEvent("e-delivered", notifier.EventDelivered, sent1.ID, t0.Add(time.Second)), // repeated in the batch
		bounce,
		viaPMID,
		strangerWithPMID,
	}
	for i, d := range ds[3:8] {
		batch = append(batch, providerEvent("e-terminal-"+string(rune('a'+i)), notifier.EventDelivered, d.ID, t0))
	}

	got, err := s.RecordProviderEvents(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(batch)-1 {
		t.Errorf("returned %v, want every event once", eventIDs(got))
	}
	for _, e := range got {
		switch e.ID {
		case "e-bounce":
			if e.DeliveryID != sent2.ID || e.Address != sent2.To || e.Channel != delivery.Email ||
				e.Category != "account.security" || e.Effect != notifier.AddressInvalid {
				t.Errorf("bounce returned as %+v", e)
			}
		case "e-pmid":
			if e.DeliveryID != byPMID.ID {
				t.Errorf("event by message id: delivery %s, want %s", e.DeliveryID, byPMID.ID)
			}
		case "e-stranger":
			if e.DeliveryID != uuid.Nil || e.Address != "" {
				t.Errorf("unknown delivery returned as %+v", e)
			}
		}
	}

	for _, c := range []struct {
		name          string
		d             *notifier.Delivery
		state, reason string
	}{
		{"delivered before it bounced: the earlier event wins", sent1, "delivered", ""},
		{"bounced", sent2, "bounced", "hard_bounce 5.1.1"},
		{"opened: an open proves delivery", sent3, "delivered", ""},
		{"failed", ds[3], "failed", ""},
		{"dead", ds[4], "dead", ""},
		{"expired", ds[5], "expired", ""},
		{"canceled", ds[6], "canceled", ""},
		{"scheduled", ds[7], "scheduled", ""},
		{"by message id", byPMID, "delivered", ""},
	} {
		if r := readRow(t, pool, c.d.ID); r.State != c.state || r.Reason != c.reason {
			t.Errorf("%s: %q %q, want %q %q", c.name, r.State, r.Reason, c.state, c.reason)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.provider_events WHERE delivery_id IS NULL`); n != 1 {
		t.Errorf("%d events without a delivery, want 1", n)
	}

	// Again: only the bounce's fact is still owed, until it is marked announced.
	again, err := s.RecordProviderEvents(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if ids := eventIDs(again); len(ids) != 1 || ids[0] != "e-bounce" || again[0].Address != sent2.To {
		t.Errorf("again: returned %v, want the unannounced bounce with its address", ids)
	}
	if err := s.MarkProviderEventsAnnounced(t.Context(), "sendgrid", []string{"e-bounce"}); err != nil {
		t.Fatal(err)
	}
	if again, err = s.RecordProviderEvents(t.Context(), batch); err != nil || len(again) != 0 {
		t.Errorf("after announcing: returned %v, %v; want nothing", eventIDs(again), err)
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.provider_events`); n != len(batch)-1 {
		t.Errorf("%d events stored, want %d", n, len(batch)-1)
	}
}

func TestRecordProviderEventsConcurrent(t *testing.T) {
	s, pool := open(t)
	d := sentDeliveries(t, s, pool, delivery.Sent)[0]
	e := providerEvent("e-1", notifier.EventDelivered, d.ID, t0)

	const n = 8
	var wg sync.WaitGroup
	results := make([][]notifier.ProviderEvent, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = s.RecordProviderEvents(t.Context(), []notifier.ProviderEvent{e}) })
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		fresh += len(results[i])
	}
	if fresh != 1 {
		t.Errorf("the event was new %d times, want once", fresh)
	}
	if r := readRow(t, pool, d.ID); r.State != "delivered" {
		t.Errorf("delivery %s, want delivered", r.State)
	}
}
