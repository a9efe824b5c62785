package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// spec is a delivery row as the reconciler may find it.
type spec struct {
	state     delivery.State
	dueAt     *time.Time
	expiresAt time.Time
	publishes int
	lease     *string
	reason    string
}

// insert writes a delivery row directly, as the notifier and the workers would have left it, for
// a new notification of its own.
func insert(t *testing.T, s *postgres.Store, pool *pgxpool.Pool, sp spec) uuid.UUID {
	t.Helper()
	n := create(t, s, notification(t, newID(t), ""))
	id := newID(t)
	_, err := pool.Exec(t.Context(), `
		INSERT INTO notifier.deliveries (id, notification_id, channel, address, category, priority,
			state, reason, content, publishes, lease_owner, due_at, expires_at, created_at, updated_at)
		VALUES ($1, $2, 'sms', '+14155550123', 'cat', 'normal', $3, $4, '{"body":"b"}', $5, $6, $7, $8, $9, $9)`,
		id, n.ID, string(sp.state), sp.reason, sp.publishes, sp.lease, sp.dueAt, sp.expiresAt, t0.Add(-time.Hour))
	if err != nil {
		t.Fatalf("insert delivery: %v", err)
	}
	return id
}

func TestReconcileTransitions(t *testing.T) {
	const republishAfter = time.Minute
	now := t0
	past, future := ptr(now.Add(-time.Second)), ptr(now.Add(time.Second))
	live := now.Add(time.Hour) // expires_at of a delivery that may still be sent
	far := now.Add(1000 * time.Hour)
	worker := ptr("worker-1")

	tests := []struct {
		name string
		row  spec
		// want* describe the row after Reconcile; published is whether Reconcile returned it.
		published   bool
		wantState   delivery.State
		wantReason  string
		wantDue     *time.Time
		wantPublish int
		wantLease   *string
	}{
		{
			name:      "scheduled and due is queued",
			row:       spec{state: delivery.Scheduled, dueAt: past, expiresAt: live},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(republishAfter)), wantPublish: 1,
		},
		{
			name:      "scheduled and due exactly now is queued",
			row:       spec{state: delivery.Scheduled, dueAt: ptr(now), expiresAt: live},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(republishAfter)), wantPublish: 1,
		},
		{
			name:      "queued past due is published again",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: live, publishes: 1},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(2 * republishAfter)), wantPublish: 2,
		},
		{
			name:      "queued backs off exponentially",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: live, publishes: 3},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(8 * republishAfter)), wantPublish: 4,
		},
		{
			name:      "queued back-off reaches its cap",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: far, publishes: 6},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(64 * republishAfter)), wantPublish: 7,
		},
		{
			name:      "the next deadline never passes the expiry",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: now.Add(3 * republishAfter), publishes: 6},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(3 * republishAfter)), wantPublish: 7,
		},
		{
			name:      "queued back-off stays at its cap",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: far, publishes: 20},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(64 * republishAfter)), wantPublish: 21,
		},
		{
			name:      "sending with an expired lease is released",
			row:       spec{state: delivery.Sending, dueAt: past, expiresAt: live, publishes: 1, lease: worker},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(2 * republishAfter)), wantPublish: 2,
		},
		{
			name:      "sending whose lease ends now is released",
			row:       spec{state: delivery.Sending, dueAt: ptr(now), expiresAt: live, publishes: 1, lease: worker},
			published: true, wantState: delivery.Queued, wantDue: ptr(now.Add(2 * republishAfter)), wantPublish: 2,
		},
		{
			name:      "retrying past due is published and keeps retrying",
			row:       spec{state: delivery.Retrying, dueAt: past, expiresAt: live, publishes: 2, reason: "provider 503"},
			published: true, wantState: delivery.Retrying, wantReason: "provider 503", wantDue: ptr(now.Add(4 * republishAfter)),
			wantPublish: 3,
		},
		{
			name:      "scheduled past its ttl expires",
			row:       spec{state: delivery.Scheduled, dueAt: past, expiresAt: now.Add(-time.Minute)},
			wantState: delivery.Expired, wantReason: "ttl", wantPublish: 0,
		},
		{
			name:      "queued past its ttl expires",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: now.Add(-time.Minute), publishes: 4},
			wantState: delivery.Expired, wantReason: "ttl", wantPublish: 4,
		},
		{
			name:      "queued expiring exactly now expires",
			row:       spec{state: delivery.Queued, dueAt: past, expiresAt: now, publishes: 1},
			wantState: delivery.Expired, wantReason: "ttl", wantPublish: 1,
		},
		{
			name:      "sending with an expired lease past its ttl expires",
			row:       spec{state: delivery.Sending, dueAt: past, expiresAt: now.Add(-time.Minute), publishes: 1, lease: worker},
			wantState: delivery.Expired, wantReason: "ttl", wantPublish: 1,
		},
		{
			name:      "retrying past its ttl expires",
			row:       spec{state: delivery.Retrying, dueAt: past, expiresAt: now.Add(-time.Minute), publishes: 1, reason: "provider 503"},
			wantState: delivery.Expired, wantReason: "ttl", wantPublish: 1,
		},
	}
	untouched := []struct {
		name string
		row  spec
	}{
		{"scheduled in the future", spec{state: delivery.Scheduled, dueAt: future, expiresAt: live}},
		{"queued in the future", spec{state: delivery.Queued, dueAt: future, expiresAt: live, publishes: 1}},
		{"sending with a live lease", spec{state: delivery.Sending, dueAt: future, expiresAt: live, publishes: 1, lease: worker}},
		{"retrying in the future", spec{state: delivery.Retrying, dueAt: future, expiresAt: live, publishes: 1}},
		// Expiry is found through due_at: a row that is not due is not looked at yet.
		{"queued in the future past its ttl", spec{state: delivery.Queued, dueAt: future, expiresAt: now.Add(-time.Hour), publishes: 1}},
		{"sent", spec{state: delivery.Sent, expiresAt: now.Add(-time.Hour), publishes: 1}},
		{"skipped", spec{state: delivery.Skipped, expiresAt: live, reason: "no_address"}},
		{"failed", spec{state: delivery.Failed, expiresAt: live, publishes: 1, reason: "bad token"}},
		{"dead", spec{state: delivery.Dead, expiresAt: now.Add(-time.Hour), publishes: 3}},
		{"expired", spec{state: delivery.Expired, expiresAt: now.Add(-time.Hour), publishes: 3, reason: "ttl"}},
		{"canceled", spec{state: delivery.Canceled, expiresAt: live}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, pool := open(t)
			id := insert(t, s, pool, tt.row)
			// A row not due must stay as it is while its neighbour moves.
			bystander := insert(t, s, pool, spec{state: delivery.Queued, dueAt: future, expiresAt: live})
			before := readRow(t, pool, bystander)

			pubs, _, err := s.Reconcile(t.Context(), now, republishAfter, 100, nil)
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			var want []notifier.Publication
			if tt.published {
				want = []notifier.Publication{{DeliveryID: id, Channel: delivery.SMS, Generation: tt.wantPublish,
					Due: tt.row.state == delivery.Scheduled}}
			}
			if !slices.Equal(pubs, want) {
				t.Errorf("Reconcile returned %+v, want %+v", pubs, want)
			}
			r := readRow(t, pool, id)
			if r.State != string(tt.wantState) || r.Reason != tt.wantReason || !sameTime(r.DueAt, tt.wantDue) ||
				r.Publishes != tt.wantPublish || r.LeaseOwner != nil || !r.UpdatedAt.Equal(now) {
				t.Errorf("row = state %s reason %q due %s publishes %d lease %v updated %s\n"+
					"want state %s reason %q due %s publishes %d lease <nil> updated %s",
					r.State, r.Reason, fmtTime(r.DueAt), r.Publishes, r.LeaseOwner, r.UpdatedAt.UTC().Format(time.RFC3339Nano),
					tt.wantState, tt.wantReason, fmtTime(tt.wantDue), tt.wantPublish, now.Format(time.RFC3339Nano))
			}
			if after := readRow(t, pool, bystander); !sameRow(after, before) {
				t.Errorf("bystander changed from %+v to %+v", before, after)
			}
			// What was just moved is not due again at the same time.
			if pubs, _, err := s.Reconcile(t.Context(), now, republishAfter, 100, nil); err != nil || len(pubs) != 0 {
				t.Errorf("second Reconcile = %+v, %v; want nothing", pubs, err)
			}
		})
	}
	for _, tt := range untouched {
		t.Run(tt.name+" is untouched", func(t *testing.T) {
			t.Parallel()
			s, pool := open(t)
			id := insert(t, s, pool, tt.row)
			before := readRow(t, pool, id)
			pubs, _, err := s.Reconcile(t.Context(), now, republishAfter, 100, nil)
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if len(pubs) != 0 {
				t.Errorf("Reconcile returned %+v, want nothing", pubs)
			}
			if after := readRow(t, pool, id); !sameRow(after, before) {
				t.Errorf("row changed from %+v to %+v", before, after)
			}
		})
	}
}

func sameRow(a, b row) bool {
	return a.State == b.State && a.Reason == b.Reason && sameTime(a.DueAt, b.DueAt) &&
		a.Publishes == b.Publishes && (a.LeaseOwner == nil) == (b.LeaseOwner == nil) &&
		(a.LeaseOwner == nil || *a.LeaseOwner == *b.LeaseOwner) && a.UpdatedAt.Equal(b.UpdatedAt)
}

// TestReconcileCreatedNotification follows deliveries stored by CreateNotification: the
// scheduled one fires at its send time, the skipped one is never looked at.
func TestReconcileCreatedNotification(t *testing.T) {
	s, pool := open(t)
	n := notification(t, newID(t), "", delivery.Scheduled, delivery.Queued, delivery.Skipped)
	sendAt := t0.Add(2 * time.Hour)
	n.SendAt, n.ExpiresAt = sendAt, sendAt.Add(time.Hour)
	scheduled, queued, skipped := n.Deliveries[0], n.Deliveries[1], n.Deliveries[2]
	scheduled.DueAt = ptr(sendAt)
	queued.DueAt = ptr(t0.Add(time.Minute))
	create(t, s, n)

	steps := []struct {
		name string
		now  time.Time
		want []notifier.Publication
	}{
		{"before anything is due", t0, nil},
		{"queued past its deadline", t0.Add(time.Minute), []notifier.Publication{{DeliveryID: queued.ID, Channel: delivery.Email, Generation: 1}}},
		{"nothing new", t0.Add(time.Minute + time.Second), nil},
		{"scheduled due, queued again", sendAt, []notifier.Publication{{DeliveryID: queued.ID, Channel: delivery.Email, Generation: 2}, {DeliveryID: scheduled.ID, Channel: delivery.Email, Generation: 1, Due: true}}},
		{"after the ttl both expire", n.ExpiresAt.Add(time.Hour), nil},
	}
	for _, st := range steps {
		pubs, _, err := s.Reconcile(t.Context(), st.now, 30*time.Second, 10, nil)
		if err != nil {
			t.Fatalf("%s: Reconcile: %v", st.name, err)
		}
		slices.SortFunc(pubs, func(a, b notifier.Publication) int { return a.Generation - b.Generation })
		slices.Reverse(pubs)
		if !slices.Equal(pubs, st.want) {
			t.Errorf("%s: Reconcile = %+v, want %+v", st.name, pubs, st.want)
		}
	}
	for _, d := range []*notifier.Delivery{scheduled, queued} {
		if r := readRow(t, pool, d.ID); r.State != string(delivery.Expired) || r.Reason != "ttl" || r.DueAt != nil {
			t.Errorf("delivery %s = %+v, want expired for ttl with no due_at", d.ID, r)
		}
	}
	if r := readRow(t, pool, skipped.ID); r.State != string(delivery.Skipped) || r.Publishes != 0 || r.DueAt != nil {
		t.Errorf("skipped delivery = %+v, want it untouched", r)
	}
}

// TestReconcileEndsEveryDelivery checks "never lost" from the reconciler's side: a queued
// delivery that no worker ever takes is re-published with growing gaps until its ttl, then
// expired, and not looked at again.
func TestReconcileEndsEveryDelivery(t *testing.T) {
	s, pool := open(t)
	id := insert(t, s, pool, spec{state: delivery.Queued, dueAt: ptr(t0), expiresAt: t0.Add(24 * time.Hour)})
	now, gens := t0, []int{}
	for range 100 {
		pubs, _, err := s.Reconcile(t.Context(), now, time.Minute, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pubs {
			gens = append(gens, p.Generation)
		}
		r := readRow(t, pool, id)
		if r.DueAt == nil {
			if r.State != string(delivery.Expired) || len(pubs) != 0 {
				t.Fatalf("row = %+v, last publications %+v; want expired and not published", r, pubs)
			}
			break
		}
		if !r.DueAt.After(now) {
			t.Fatalf("due_at %s is not after now %s", fmtTime(r.DueAt), now)
		}
		now = *r.DueAt
	}
	if r := readRow(t, pool, id); r.State != string(delivery.Expired) {
		t.Fatalf("after 100 passes the delivery is %s", r.State)
	}
	// 1+2+4+...+64 minutes, then every 64 minutes, until 24h: 7 + ceil((1440-127)/64) = 28.
	if len(gens) != 28 || gens[0] != 1 || gens[len(gens)-1] != 28 {
		t.Errorf("published %d times with generations %v, want 28 times", len(gens), gens)
	}
	if pubs, _, err := s.Reconcile(t.Context(), now.Add(365*24*time.Hour), time.Minute, 10, nil); err != nil || len(pubs) != 0 {
		t.Errorf("Reconcile after expiry = %+v, %v", pubs, err)
	}
}

func TestReconcileLimit(t *testing.T) {
	s, pool := open(t)
	// Due oldest first: the reconciler takes the longest overdue rows first.
	var ids []uuid.UUID
	for i := range 5 {
		ids = append(ids, insert(t, s, pool, spec{state: delivery.Queued, dueAt: ptr(t0.Add(time.Duration(i-10) * time.Second)),
			expiresAt: t0.Add(time.Hour)}))
	}
	for _, want := range [][]uuid.UUID{ids[:2], ids[2:4], ids[4:], nil} {
		pubs, _, err := s.Reconcile(t.Context(), t0, time.Minute, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []uuid.UUID
		for _, p := range pubs {
			got = append(got, p.DeliveryID)
		}
		slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Index(ids, a) - slices.Index(ids, b) })
		if !slices.Equal(got, want) {
			t.Errorf("Reconcile took %v, want %v", got, want)
		}
	}
}

func TestReconcileConcurrent(t *testing.T) {
	s, pool := open(t)
	const rows, reconcilers, batch = 300, 6, 7
	want := map[uuid.UUID]bool{}
	n := notification(t, newID(t), "")
	for range rows {
		d := &notifier.Delivery{ID: newID(t), Channel: delivery.IOS, To: "tok", State: delivery.Queued,
			DueAt: ptr(t0.Add(-time.Minute)), CreatedAt: t0, UpdatedAt: t0}
		n.Deliveries = append(n.Deliveries, d)
		want[d.ID] = true
	}
	create(t, s, n)

	got := make([][]notifier.Publication, reconcilers)
	failures := make([]error, reconcilers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reconcilers {
		wg.Go(func() {
			<-start
			for {
				// The same now for every call: a moved row is due again only a minute later.
				pubs, _, err := s.Reconcile(context.Background(), t0, time.Minute, batch, nil)
				if err != nil {
					failures[i] = err
					return
				}
				if len(pubs) == 0 {
					return
				}
				got[i] = append(got[i], pubs...)
			}
		})
	}
	close(start)
	wg.Wait()

	seen := map[uuid.UUID]int{}
	for i, pubs := range got {
		if failures[i] != nil {
			t.Fatalf("reconciler %d: %v", i, failures[i])
		}
		for _, p := range pubs {
			if j, dup := seen[p.DeliveryID]; dup {
				t.Errorf("delivery %s returned to reconcilers %d and %d", p.DeliveryID, j, i)
			}
			seen[p.DeliveryID] = i
			if !want[p.DeliveryID] || p.Generation != 1 {
				t.Errorf("unexpected publication %+v", p)
			}
		}
	}
	if len(seen) != rows {
		t.Errorf("%d deliveries published, want %d", len(seen), rows)
	}
	if left := count(t, pool, `SELECT count(*) FROM notifier.deliveries WHERE due_at <= $1`, t0); left != 0 {
		t.Errorf("%d deliveries still due", left)
	}
	if n := count(t, pool, `SELECT count(*) FROM notifier.deliveries WHERE publishes <> 1`); n != 0 {
		t.Errorf("%d deliveries moved more or less than once", n)
	}
}

// TestReconcileHoldsWhatTheQueueStillHas: a stale queued delivery of a channel whose queue still
// holds messages published before it was is not published again (its own message is most
// likely among them): it comes back after republishAfter with its publish count and time kept.
// One published before the oldest waiting message, or of another channel, is published.
func TestReconcileHoldsWhatTheQueueStillHas(t *testing.T) {
	s, pool := open(t)
	published := t0.Add(-time.Hour) // insert's updated_at: when the delivery was last published
	waiting := insert(t, s, pool, spec{state: delivery.Queued, dueAt: ptr(t0), expiresAt: t0.Add(24 * time.Hour)})
	lost := insert(t, s, pool, spec{state: delivery.Queued, dueAt: ptr(t0), expiresAt: t0.Add(24 * time.Hour)})
	if _, err := pool.Exec(t.Context(), `UPDATE notifier.deliveries SET updated_at = $2 WHERE id = $1`,
		lost, published.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	pubs, _, err := s.Reconcile(t.Context(), t0, time.Minute, 10, map[delivery.Channel]time.Time{
		delivery.SMS:   published.Add(-time.Second), // the oldest message not received: before waiting's, after lost's
		delivery.Email: t0.Add(-24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]notifier.Publication{}
	for _, p := range pubs {
		got[p.DeliveryID] = p
	}
	if p, ok := got[waiting]; !ok || !p.Held {
		t.Errorf("the delivery published after the oldest waiting message: %+v (returned %v), want held", p, ok)
	}
	if p, ok := got[lost]; !ok || p.Held || p.Generation != 1 {
		t.Errorf("the delivery published before the oldest waiting message: %+v (returned %v), want published", p, ok)
	}
	r := readRow(t, pool, waiting)
	if r.State != string(delivery.Queued) || r.Publishes != 0 || r.DueAt == nil || !r.DueAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("held row = %+v, want queued, 0 publishes, due %s", r, t0.Add(time.Minute))
	}
	var updated time.Time
	if err := pool.QueryRow(t.Context(), `SELECT updated_at FROM notifier.deliveries WHERE id = $1`, waiting).Scan(&updated); err != nil || !updated.Equal(published) {
		t.Errorf("held row's updated_at = %s (%v), want its publish time %s kept", updated, err, published)
	}
	// Once the workers have received everything published before it, it is published again;
	// lost, published again at t0, is now the one held.
	pubs, _, err = s.Reconcile(t.Context(), t0.Add(time.Minute), time.Minute, 10, map[delivery.Channel]time.Time{
		delivery.SMS: published.Add(time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	clear(got)
	for _, p := range pubs {
		got[p.DeliveryID] = p
	}
	if p, ok := got[waiting]; !ok || p.Held || p.Generation != 1 {
		t.Errorf("after the workers passed it: %+v (returned %v), want it published", p, ok)
	}
	if p, ok := got[lost]; !ok || !p.Held {
		t.Errorf("the delivery published again at t0: %+v (returned %v), want held", p, ok)
	}
}

// TestUnpublished: a queued delivery whose publish failed is due at once, so the reconciler's
// next pass publishes it again; a delivery no longer queued is left alone.
func TestUnpublished(t *testing.T) {
	s, pool := open(t)
	later := ptr(t0.Add(time.Hour))
	queued := insert(t, s, pool, spec{state: delivery.Queued, dueAt: later, expiresAt: t0.Add(24 * time.Hour)})
	sent := insert(t, s, pool, spec{state: delivery.Sent, expiresAt: t0.Add(24 * time.Hour)})
	if err := s.Unpublished(t.Context(), []uuid.UUID{queued, sent}, t0); err != nil {
		t.Fatal(err)
	}
	// However recent the oldest waiting message, the delivery's own never reached the queue:
	// it is not held.
	pubs, _, err := s.Reconcile(t.Context(), t0, time.Minute, 10, map[delivery.Channel]time.Time{delivery.SMS: t0.Add(-24 * time.Hour)})
	if err != nil || len(pubs) != 1 || pubs[0].DeliveryID != queued || pubs[0].Held {
		t.Fatalf("Reconcile after Unpublished = %+v, %v; want the queued delivery published", pubs, err)
	}
	// Published again, it may be held like any other.
	pubs, _, err = s.Reconcile(t.Context(), t0.Add(time.Minute), time.Minute, 10, map[delivery.Channel]time.Time{delivery.SMS: t0.Add(-24 * time.Hour)})
	if err != nil || len(pubs) != 1 || !pubs[0].Held {
		t.Fatalf("the next pass = %+v, %v; want the delivery held", pubs, err)
	}
	if r := readRow(t, pool, sent); r.State != string(delivery.Sent) || r.DueAt != nil {
		t.Errorf("sent delivery = %+v, want it untouched", r)
	}
}
