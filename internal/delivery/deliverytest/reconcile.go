package deliverytest

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

func reconcile(t *testing.T, h Harness, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]delivery.Due, int) {
	t.Helper()
	dues, expired, err := h.Store.Reconcile(t.Context(), now, republishAfter, limit, held)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return dues, expired
}

// sortDues orders dues by id: stores return them in any order.
func sortDues(dues []delivery.Due) []delivery.Due {
	slices.SortFunc(dues, func(a, b delivery.Due) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return dues
}

// testReconcile moves every kind of delivery the reconciler may find, each in a store of its
// own with a bystander that is not due.
func testReconcile(t *testing.T, setup func(t *testing.T) Harness) {
	const republishAfter = time.Minute
	// A row that moves is due again after republishAfter times 2 to the power of its
	// re-publishes before the move, at most 64 times; never past its expiry.
	type moved struct {
		state     delivery.State
		reason    string
		due       *time.Duration // after now
		publishes int
		returned  bool
		onTime    bool
	}
	queuedAfter := func(rp time.Duration, publishes int, onTime bool) moved {
		return moved{state: delivery.Queued, due: after(rp), publishes: publishes, returned: true, onTime: onTime}
	}
	expired := func(publishes int) moved {
		return moved{state: delivery.Expired, reason: delivery.ReasonTTL, publishes: publishes}
	}
	tests := []struct {
		name  string
		spec  spec
		tweak func(r *Row, now time.Time) // when set, changes the row before it is seeded
		want  moved
	}{
		{"scheduled, its time come", spec{state: delivery.Scheduled, due: after(-time.Second)},
			nil, queuedAfter(republishAfter, 0, true)},
		{"scheduled, its time exactly now", spec{state: delivery.Scheduled, due: after(0)},
			nil, queuedAfter(republishAfter, 0, true)},
		{"retrying, its backoff over", spec{state: delivery.Retrying, attempts: 1, due: after(-time.Second), publishes: 2, reason: "provider_unavailable"},
			nil, moved{state: delivery.Queued, reason: "provider_unavailable", due: after(4 * republishAfter), publishes: 2, returned: true, onTime: true}},
		{"queued past its deadline", spec{state: delivery.Queued, due: after(-time.Second), publishes: 1},
			nil, queuedAfter(2*republishAfter, 2, false)},
		{"queued, its deadline exactly now", spec{state: delivery.Queued, due: after(0)},
			nil, queuedAfter(republishAfter, 1, false)},
		{"queued backs off exponentially", spec{state: delivery.Queued, due: after(-time.Second), publishes: 3},
			nil, queuedAfter(8*republishAfter, 4, false)},
		{"queued back-off reaches its cap", spec{state: delivery.Queued, due: after(-time.Second), publishes: 6, ttl: 1000 * time.Hour},
			nil, queuedAfter(64*republishAfter, 7, false)},
		{"queued back-off stays at its cap", spec{state: delivery.Queued, due: after(-time.Second), publishes: 20, ttl: 1000 * time.Hour},
			nil, queuedAfter(64*republishAfter, 21, false)},
		{"the next deadline never passes the expiry", spec{state: delivery.Queued, due: after(-time.Second), publishes: 6, ttl: 3 * republishAfter},
			nil, queuedAfter(3*republishAfter, 7, false)},
		{"queued, its publish failed", spec{state: delivery.Queued, due: after(-time.Second), unpublished: true},
			nil, queuedAfter(republishAfter, 1, false)},
		{"sending under an expired lease", spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(-time.Second), publishes: 1},
			nil, queuedAfter(2*republishAfter, 2, false)},
		{"sending whose lease ends now", spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(0), publishes: 1},
			nil, queuedAfter(2*republishAfter, 2, false)},
		{"scheduled past its ttl", spec{state: delivery.Scheduled, due: after(-time.Second), ttl: -time.Minute}, nil, expired(0)},
		{"queued past its ttl", spec{state: delivery.Queued, due: after(-time.Second), ttl: -time.Minute, publishes: 4}, nil, expired(4)},
		{"queued expiring exactly now", spec{state: delivery.Queued, due: after(-time.Second), publishes: 1},
			func(r *Row, now time.Time) { r.ExpiresAt = now }, expired(1)},
		{"sending under an expired lease past its ttl",
			spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(-time.Second), ttl: -time.Minute, publishes: 1}, nil, expired(1)},
		{"retrying past its ttl", spec{state: delivery.Retrying, attempts: 1, due: after(-time.Second), ttl: -time.Minute, reason: "provider_unavailable"},
			nil, expired(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			now := clock(t, h)
			r := row(tc.spec, now)
			if tc.tweak != nil {
				tc.tweak(&r, now)
			}
			h.Seed(t, r)
			// A delivery not due stays as it is while its neighbour moves.
			bystander := row(spec{state: delivery.Queued, due: after(time.Second)}, now)
			h.Seed(t, bystander)

			dues, expiredN := reconcile(t, h, now, republishAfter, 100, nil)
			var want []delivery.Due
			if tc.want.returned {
				want = []delivery.Due{{ID: r.ID, Channel: r.Channel, OnTime: tc.want.onTime}}
			}
			if !slices.Equal(dues, want) {
				t.Errorf("Reconcile returned %+v, want %+v", dues, want)
			}
			if wantExpired := map[bool]int{true: 1}[tc.want.state == delivery.Expired]; expiredN != wantExpired {
				t.Errorf("Reconcile expired %d, want %d", expiredN, wantExpired)
			}
			w := r
			w.State, w.DueAt, w.Publishes, w.LeaseOwner, w.UpdatedAt = tc.want.state, at(now, tc.want.due), tc.want.publishes, "", now
			w.Reason = tc.want.reason
			if tc.want.state == delivery.Queued {
				w.Unpublished = false
			}
			check(t, "the reconciled delivery", h.Get(t, r.ID), w)
			unchanged(t, h, bystander)
			// What was just moved is not due again at the same time.
			if dues, n := reconcile(t, h, now, republishAfter, 100, nil); len(dues) != 0 || n != 0 {
				t.Errorf("the second Reconcile = %+v, %d expired; want nothing", dues, n)
			}
		})
	}

	untouched := []struct {
		name string
		spec spec
	}{
		{"scheduled in the future", spec{state: delivery.Scheduled, due: after(time.Second)}},
		{"queued in the future", spec{state: delivery.Queued, due: after(time.Second), publishes: 1}},
		{"sending under a live lease", spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Second), publishes: 1}},
		{"retrying in its backoff", spec{state: delivery.Retrying, attempts: 1, due: after(time.Second), publishes: 1}},
		// Expiry is found through due_at: a row that is not due is not looked at yet.
		{"queued in the future past its ttl", spec{state: delivery.Queued, due: after(time.Second), ttl: -time.Hour, publishes: 1}},
		{"sent", spec{state: delivery.Sent, attempts: 1, ttl: -time.Hour, publishes: 1, sent: after(-2 * time.Hour)}},
		{"delivered", spec{state: delivery.Delivered, attempts: 1, ttl: -time.Hour, sent: after(-2 * time.Hour)}},
		{"skipped", spec{state: delivery.Skipped, reason: "no_address"}},
		{"failed", spec{state: delivery.Failed, attempts: 1, publishes: 1, reason: "bad_token"}},
		{"dead", spec{state: delivery.Dead, attempts: 5, ttl: -time.Hour, publishes: 3}},
		{"expired", spec{state: delivery.Expired, ttl: -time.Hour, publishes: 3, reason: delivery.ReasonTTL}},
		{"canceled", spec{state: delivery.Canceled, reason: delivery.ReasonCanceled}},
	}
	for _, tc := range untouched {
		t.Run(tc.name+" is untouched", func(t *testing.T) {
			h := setup(t)
			now := clock(t, h)
			r := row(tc.spec, now)
			h.Seed(t, r)
			if dues, n := reconcile(t, h, now, republishAfter, 100, nil); len(dues) != 0 || n != 0 {
				t.Errorf("Reconcile = %+v, %d expired; want nothing", dues, n)
			}
			unchanged(t, h, r)
		})
	}
}

// testReconcileCreated follows deliveries as Create stores them: the scheduled one is queued
// at its send time, the skipped one is never looked at, and both others expire with their ttl.
func testReconcileCreated(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	t0 := clock(t, h)
	sendAt := t0.Add(2 * time.Hour)
	n := newID()
	mk := func(st delivery.State, due *time.Time) delivery.Delivery {
		d := row(spec{state: st, notification: n}, t0).Delivery
		d.DueAt, d.ExpiresAt = due, sendAt.Add(time.Hour)
		return d
	}
	scheduled, queued, skipped := mk(delivery.Scheduled, &sendAt), mk(delivery.Queued, ptr(t0.Add(time.Minute))), mk(delivery.Skipped, nil)
	skipped.Reason = "no_address"
	create(t, h, scheduled, queued, skipped)

	const rp = 30 * time.Second
	steps := []struct {
		name    string
		now     time.Time
		want    []delivery.Due
		expired int
	}{
		{"before anything is due", t0, nil, 0},
		{"queued past its deadline", t0.Add(time.Minute), []delivery.Due{{ID: queued.ID, Channel: queued.Channel}}, 0},
		{"nothing new", t0.Add(time.Minute + time.Second), nil, 0},
		{"scheduled due, queued again", sendAt,
			[]delivery.Due{{ID: queued.ID, Channel: queued.Channel}, {ID: scheduled.ID, Channel: scheduled.Channel, OnTime: true}}, 0},
		{"after the ttl both expire", sendAt.Add(2 * time.Hour), nil, 2},
	}
	for _, st := range steps {
		dues, expired := reconcile(t, h, st.now, rp, 10, nil)
		if !slices.Equal(sortDues(dues), sortDues(st.want)) || expired != st.expired {
			t.Errorf("%s: Reconcile = %+v, %d expired; want %+v, %d", st.name, dues, expired, st.want, st.expired)
		}
	}
	for _, d := range []delivery.Delivery{scheduled, queued} {
		if r := h.Get(t, d.ID); r.State != delivery.Expired || r.Reason != delivery.ReasonTTL || r.DueAt != nil {
			t.Errorf("delivery %s is %s for %q, due %s; want expired for ttl, not due", d.ID, r.State, r.Reason, fmtTime(r.DueAt))
		}
	}
	if r := h.Get(t, skipped.ID); r.State != delivery.Skipped || r.Publishes != 0 || r.DueAt != nil || !r.UpdatedAt.Equal(skipped.CreatedAt) {
		t.Errorf("skipped delivery is %s, %d publishes, due %s, updated %s; want it untouched",
			r.State, r.Publishes, fmtTime(r.DueAt), fmtTime(&r.UpdatedAt))
	}
}

// testReconcileEnds checks "never lost" from the reconciler's side: a queued delivery that no
// worker ever takes is published again with growing gaps until its ttl, then expired, and not
// looked at again.
func testReconcileEnds(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	r := row(spec{state: delivery.Queued, due: after(0), ttl: 24 * time.Hour}, now)
	h.Seed(t, r)
	published := 0
	for range 100 {
		dues, _ := reconcile(t, h, now, time.Minute, 10, nil)
		published += len(dues)
		got := h.Get(t, r.ID)
		if got.DueAt == nil {
			if got.State != delivery.Expired || len(dues) != 0 {
				t.Fatalf("delivery %s, last returned %+v; want expired and not published", got.State, dues)
			}
			break
		}
		if !got.DueAt.After(now) {
			t.Fatalf("due %s is not after now %s", fmtTime(got.DueAt), fmtTime(&now))
		}
		now = *got.DueAt
	}
	got := h.Get(t, r.ID)
	if got.State != delivery.Expired {
		t.Fatalf("after 100 passes the delivery is %s", got.State)
	}
	// 1+2+4+...+64 minutes, then every 64 minutes, until 24h: 7 + ceil((1440-127)/64) = 28.
	if published != 28 || got.Publishes != 28 {
		t.Errorf("published %d times, %d counted; want 28", published, got.Publishes)
	}
	if dues, n := reconcile(t, h, now.Add(365*24*time.Hour), time.Minute, 10, nil); len(dues) != 0 || n != 0 {
		t.Errorf("Reconcile after the expiry = %+v, %d expired", dues, n)
	}
}

// testReconcileLimit: the reconciler takes at most limit deliveries a pass, the longest overdue
// first.
func testReconcileLimit(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	var all []uuid.UUID
	for i := range 5 {
		r := row(spec{state: delivery.Queued, due: after(time.Duration(i-10) * time.Second)}, now)
		h.Seed(t, r)
		all = append(all, r.ID)
	}
	for _, want := range [][]uuid.UUID{all[:2], all[2:4], all[4:], nil} {
		dues, _ := reconcile(t, h, now, time.Minute, 2, nil)
		var got []uuid.UUID
		for _, d := range dues {
			got = append(got, d.ID)
		}
		slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Index(all, a) - slices.Index(all, b) })
		if !slices.Equal(got, want) {
			t.Errorf("Reconcile took %v, want %v", got, want)
		}
	}
}

// testReconcileExpiresFirst: a backlog of expired deliveries, larger than a pass's limit and
// due before everything else, does not hold up the deliveries that are due.
func testReconcileExpiresFirst(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	for range 10 {
		h.Seed(t, row(spec{state: delivery.Queued, due: after(-time.Hour), ttl: -time.Minute}, now))
	}
	var want []delivery.Due
	for range 2 {
		r := row(spec{state: delivery.Queued, due: after(-time.Second)}, now)
		h.Seed(t, r)
		want = append(want, delivery.Due{ID: r.ID, Channel: r.Channel})
	}
	dues, expired := reconcile(t, h, now, time.Minute, 3, nil)
	if !slices.Equal(sortDues(dues), sortDues(want)) || expired != 10 {
		t.Errorf("Reconcile = %+v, %d expired; want %+v, 10 expired", dues, expired, want)
	}
}

// testReconcileConcurrent: reconcilers working at once never take the same delivery, and
// together take each due one exactly once.
func testReconcileConcurrent(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const rows, reconcilers, limit = 300, 6, 7
	now := clock(t, h)
	ds := make([]delivery.Delivery, rows)
	for i := range ds {
		ds[i] = row(spec{state: delivery.Queued, due: after(-time.Minute), channel: delivery.IOS}, now).Delivery
	}
	create(t, h, ds...)

	got := make([][]delivery.Due, reconcilers)
	failures := make([]error, reconcilers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reconcilers {
		wg.Go(func() {
			<-start
			for {
				// The same now for every call: a moved delivery is due again only a minute later.
				dues, _, err := h.Store.Reconcile(context.Background(), now, time.Minute, limit, nil)
				if err != nil {
					failures[i] = err
					return
				}
				if len(dues) == 0 {
					return
				}
				got[i] = append(got[i], dues...)
			}
		})
	}
	close(start)
	wg.Wait()

	seen := map[uuid.UUID]int{}
	for i, dues := range got {
		if failures[i] != nil {
			t.Fatalf("reconciler %d: %v", i, failures[i])
		}
		for _, d := range dues {
			if j, dup := seen[d.ID]; dup {
				t.Errorf("delivery %s returned to reconcilers %d and %d", d.ID, j, i)
			}
			seen[d.ID] = i
		}
	}
	for _, d := range ds {
		if _, ok := seen[d.ID]; !ok {
			t.Errorf("delivery %s returned to no reconciler", d.ID)
		}
		if r := h.Get(t, d.ID); r.Publishes != 1 || !r.DueAt.Equal(now.Add(time.Minute)) {
			t.Errorf("delivery %s published %d times, due %s; want once, due in a minute", d.ID, r.Publishes, fmtTime(r.DueAt))
		}
	}
}

// testReconcileHolds: a queued delivery of a channel whose queue still holds a message
// published before it was is not published again (its own message is most likely among them):
// it is looked at again after republishAfter, its publish count and time kept. One published
// before the oldest waiting message, of another channel, or whose publish failed, is published.
func testReconcileHolds(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	published := now.Add(-time.Hour) // a seeded delivery's updated_at: when it was last published
	waiting := row(spec{state: delivery.Queued, due: after(0), ttl: 24 * time.Hour, channel: delivery.SMS}, now)
	lost := row(spec{state: delivery.Queued, due: after(0), ttl: 24 * time.Hour, channel: delivery.SMS}, now)
	lost.UpdatedAt = published.Add(-time.Minute)
	failed := row(spec{state: delivery.Queued, due: after(0), ttl: 24 * time.Hour, channel: delivery.SMS, unpublished: true}, now)
	email := row(spec{state: delivery.Queued, due: after(0), ttl: 24 * time.Hour}, now)
	for _, r := range []Row{waiting, lost, failed, email} {
		h.Seed(t, r)
	}
	dues, _ := reconcile(t, h, now, time.Minute, 10, map[delivery.Channel]time.Time{
		delivery.SMS:     published.Add(-time.Second), // the oldest message not received: before waiting's, after lost's
		delivery.Android: now.Add(-24 * time.Hour),
	})
	want := []delivery.Due{
		{ID: waiting.ID, Channel: delivery.SMS, Held: true},
		{ID: lost.ID, Channel: delivery.SMS},
		{ID: failed.ID, Channel: delivery.SMS},
		{ID: email.ID, Channel: delivery.Email},
	}
	if !slices.Equal(sortDues(dues), sortDues(want)) {
		t.Errorf("Reconcile = %+v, want %+v", dues, want)
	}
	held := waiting
	held.DueAt = ptr(now.Add(time.Minute))
	check(t, "the held delivery", h.Get(t, waiting.ID), held)

	// Once the workers have received everything published before it, it is published again;
	// those published at now are the ones held.
	dues, _ = reconcile(t, h, now.Add(time.Minute), time.Minute, 10, map[delivery.Channel]time.Time{delivery.SMS: published.Add(time.Second)})
	want = []delivery.Due{
		{ID: waiting.ID, Channel: delivery.SMS},
		{ID: lost.ID, Channel: delivery.SMS, Held: true},
		{ID: failed.ID, Channel: delivery.SMS, Held: true},
		{ID: email.ID, Channel: delivery.Email},
	}
	if !slices.Equal(sortDues(dues), sortDues(want)) {
		t.Errorf("the next Reconcile = %+v, want %+v", dues, want)
	}
}

func unpublished(t *testing.T, h Harness, at time.Time, ids ...uuid.UUID) {
	t.Helper()
	if err := h.Store.Unpublished(t.Context(), ids, at); err != nil {
		t.Fatalf("Unpublished: %v", err)
	}
}

// testUnpublished: a queued delivery whose publish failed is due at once, so the reconciler's
// next pass publishes it again, and not held as waiting in its queue; a delivery no longer
// queued is left alone.
func testUnpublished(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	queued := seed(t, h, spec{state: delivery.Queued, due: after(time.Hour), ttl: 24 * time.Hour, channel: delivery.SMS})
	sooner := seed(t, h, spec{state: delivery.Queued, due: after(-time.Hour), ttl: 24 * time.Hour, channel: delivery.SMS})
	undue := seed(t, h, spec{state: delivery.Queued, ttl: 24 * time.Hour, channel: delivery.SMS})
	others := []Row{
		seed(t, h, spec{state: delivery.Scheduled, due: after(time.Hour)}),
		seed(t, h, spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Hour)}),
		seed(t, h, spec{state: delivery.Retrying, attempts: 1, due: after(time.Hour)}),
		seed(t, h, spec{state: delivery.Sent, attempts: 1, sent: after(-time.Minute)}),
		seed(t, h, spec{state: delivery.Failed, attempts: 1}),
		seed(t, h, spec{state: delivery.Canceled}),
	}
	unpublished(t, h, now, append(ids(append(others, queued, sooner, undue)...), newID())...)

	for _, tc := range []struct {
		r   Row
		due time.Time
	}{{queued, now}, {sooner, *sooner.DueAt}, {undue, now}} {
		want := tc.r
		want.DueAt, want.Unpublished = ptr(tc.due), true
		check(t, "an unpublished delivery", h.Get(t, tc.r.ID), want)
	}
	for _, r := range others {
		unchanged(t, h, r)
	}
	// However recent the oldest waiting message, their own never reached the queue.
	dues, _ := reconcile(t, h, now, time.Minute, 10, map[delivery.Channel]time.Time{delivery.SMS: now.Add(-24 * time.Hour)})
	want := []delivery.Due{{ID: queued.ID, Channel: delivery.SMS}, {ID: sooner.ID, Channel: delivery.SMS}, {ID: undue.ID, Channel: delivery.SMS}}
	if !slices.Equal(sortDues(dues), sortDues(want)) {
		t.Fatalf("Reconcile after Unpublished = %+v, want %+v", dues, want)
	}
	// Published again, they may be held like any other.
	dues, _ = reconcile(t, h, now.Add(time.Minute), time.Minute, 10, map[delivery.Channel]time.Time{delivery.SMS: now.Add(-24 * time.Hour)})
	for i := range want {
		want[i].Held = true
	}
	if !slices.Equal(sortDues(dues), sortDues(want)) {
		t.Fatalf("the next pass = %+v, want %+v", dues, want)
	}
}
