package deliverytest

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// claim claims ids for w and fails the test on an error.
func claim(t *testing.T, h Harness, w string, l time.Duration, ids ...uuid.UUID) []delivery.Delivery {
	t.Helper()
	got, err := h.Store.Claim(t.Context(), w, l, ids)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return got
}

// mustClaim claims delivery id for w and returns it, or fails the test.
func mustClaim(t *testing.T, h Harness, w string, l time.Duration, id uuid.UUID) delivery.Delivery {
	t.Helper()
	got := claim(t, h, w, l, id)
	if len(got) != 1 || got[0].ID != id {
		t.Fatalf("Claim(%s) returned %d deliveries, want it alone", id, len(got))
	}
	return got[0]
}

// claimed is delivery r after w claimed it for lease at now.
func claimed(r Row, w string, now time.Time) Row {
	r.State, r.LeaseOwner, r.Attempts = delivery.Sending, w, r.Attempts+1
	r.DueAt, r.UpdatedAt = ptr(now.Add(lease)), now
	return r
}

// handed is what a claim returns of delivery r: all a worker needs to send it, which leaves
// out what an earlier attempt left (reason, error, provider) and the time it was sent.
func handed(r Row) delivery.Delivery {
	d := r.Delivery
	d.Reason, d.LastError, d.Provider, d.ProviderMessageID, d.SentAt = "", "", "", "", nil
	return d
}

// claimCase is one kind of delivery handed to Claim, and whether the claim takes it.
type claimCase struct {
	name string
	spec spec
	// prepare, when set, brings the delivery into its state through the store itself.
	prepare func(t *testing.T, h Harness, r Row)
	claims  bool
}

func claimCases() []claimCase {
	cases := []claimCase{
		{name: "queued", spec: spec{state: delivery.Queued, due: after(time.Minute)}, claims: true},
		{name: "queued, to a raw address", spec: spec{state: delivery.Queued, due: after(time.Minute), raw: true}, claims: true},
		{name: "queued, its deadline passed", spec: spec{state: delivery.Queued, due: after(-time.Minute), publishes: 2}, claims: true},
		{name: "queued, in a later drive", spec: spec{state: delivery.Queued, drive: 2, due: after(time.Minute)}, claims: true},
		{name: "retrying, its backoff over",
			spec:   spec{state: delivery.Retrying, attempts: 3, due: after(-time.Second), reason: "provider_unavailable", provider: "fake"},
			claims: true},
		{name: "retrying, in its backoff", spec: spec{state: delivery.Retrying, attempts: 3, due: after(time.Minute)}},
		{name: "sending under another worker's live lease", spec: spec{state: delivery.Sending, attempts: 2, owner: other, due: after(time.Minute)}},
		{name: "sending under its own live lease", spec: spec{state: delivery.Sending, attempts: 2, owner: worker, due: after(time.Minute)}},
		{name: "sending under an expired lease", spec: spec{state: delivery.Sending, attempts: 2, owner: other, due: after(-time.Second)}, claims: true},
		{name: "queued past its ttl", spec: spec{state: delivery.Queued, due: after(time.Minute), ttl: -time.Second}},
		{name: "retrying past its ttl", spec: spec{state: delivery.Retrying, attempts: 1, due: after(-time.Minute), ttl: -time.Second}},
		{name: "sending under an expired lease past its ttl",
			spec: spec{state: delivery.Sending, attempts: 1, owner: other, due: after(-time.Second), ttl: -time.Second}},
		{name: "scheduled", spec: spec{state: delivery.Scheduled, due: after(time.Hour)}},
		// Only the reconciler queues a scheduled delivery whose time came.
		{name: "scheduled, its time come", spec: spec{state: delivery.Scheduled, due: after(-time.Second)}},
		{name: "claimed through the store by another worker", spec: spec{state: delivery.Queued, due: after(time.Minute)},
			prepare: func(t *testing.T, h Harness, r Row) { mustClaim(t, h, other, lease, r.ID) }},
		{name: "claimed through the store by another worker whose lease ran out",
			spec: spec{state: delivery.Queued, due: after(time.Minute)},
			prepare: func(t *testing.T, h Harness, r Row) {
				mustClaim(t, h, other, -time.Second, r.ID)
			},
			claims: true},
		{name: "released by another worker", spec: spec{state: delivery.Queued, due: after(time.Minute)},
			prepare: func(t *testing.T, h Harness, r Row) {
				mustClaim(t, h, other, lease, r.ID)
				release(t, h, other, r.ID)
			},
			claims: true},
	}
	for _, st := range []delivery.State{delivery.Sent, delivery.Delivered, delivery.Bounced, delivery.Failed,
		delivery.Dead, delivery.Skipped, delivery.Expired, delivery.Canceled} {
		cases = append(cases, claimCase{name: string(st), spec: spec{state: st, attempts: 1}})
	}
	// A terminal delivery past its ttl stays what it is.
	cases = append(cases, claimCase{name: "sent past its ttl", spec: spec{state: delivery.Sent, attempts: 1, ttl: -time.Second}})
	return cases
}

// prepared seeds the delivery of tc, brings it into its state, and returns it as stored.
func (tc claimCase) prepared(t *testing.T, h Harness) Row {
	t.Helper()
	r := seed(t, h, tc.spec)
	if tc.prepare != nil {
		tc.prepare(t, h, r)
		r = h.Get(t, r.ID)
	}
	return r
}

// checkClaim checks what a claim between t0 and t1 returned of delivery before (nil: nothing)
// and the delivery it left.
func checkClaim(t *testing.T, h Harness, tc claimCase, before Row, got *delivery.Delivery, t0, t1 time.Time) {
	t.Helper()
	now := h.Get(t, before.ID)
	if !tc.claims {
		if got != nil {
			t.Errorf("claimed, want it left alone")
		}
		check(t, "a delivery the claim must not take", now, before)
		return
	}
	if got == nil {
		t.Fatalf("not claimed; delivery now:\n%s", diff(now, before))
	}
	within(t, "updated_at of the claim", &now.UpdatedAt, t0, t1)
	want := claimed(before, worker, now.UpdatedAt)
	check(t, "the claimed delivery", now, want)
	if d := diff(*got, handed(want)); d != "" {
		t.Errorf("the claim returned:\n%s", d)
	}
	if n := len(h.Log(t, before.ID)); n != 0 {
		t.Errorf("the claim logged %d attempts", n)
	}
}

func testClaim(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	for _, tc := range claimCases() {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.prepared(t, h)
			t0 := clock(t, h)
			got := claim(t, h, worker, lease, before.ID)
			t1 := clock(t, h)
			if len(got) > 1 {
				t.Fatalf("Claim of one id returned %d deliveries", len(got))
			}
			var one *delivery.Delivery
			if len(got) == 1 {
				one = &got[0]
				if one.ID != before.ID {
					t.Fatalf("Claim(%s) returned %s", before.ID, one.ID)
				}
			}
			checkClaim(t, h, tc, before, one, t0, t1)
		})
	}
	t.Run("unknown", func(t *testing.T) {
		if got := claim(t, h, worker, lease, newID()); len(got) != 0 {
			t.Errorf("Claim(unknown) = %+v, want nothing", got)
		}
	})
}

// testClaimBatch hands every kind of delivery to one Claim, with unknown ids and an id twice:
// each delivery gets what it gets alone, and none is returned twice.
func testClaimBatch(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	cases := claimCases()
	befores := make([]Row, len(cases))
	var all []uuid.UUID
	for i, tc := range cases {
		befores[i] = tc.prepared(t, h)
		all = append(all, befores[i].ID)
	}
	all = append(all, newID(), newID(), befores[0].ID)
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	t0 := clock(t, h)
	got := claim(t, h, worker, lease, all...)
	t1 := clock(t, h)
	byID := map[uuid.UUID]*delivery.Delivery{}
	for i := range got {
		if _, dup := byID[got[i].ID]; dup {
			t.Errorf("delivery %s returned twice", got[i].ID)
		}
		byID[got[i].ID] = &got[i]
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkClaim(t, h, tc, befores[i], byID[befores[i].ID], t0, t1)
			delete(byID, befores[i].ID)
		})
	}
	for id := range byID {
		t.Errorf("Claim returned %s, which it was not handed", id)
	}
}

// testClaimMany claims a queue's worth of deliveries, and as many unknown ids, in one call.
func testClaimMany(t *testing.T, setup func(t *testing.T) Harness) {
	const n = 500
	h := setup(t)
	now := clock(t, h)
	ds := make([]delivery.Delivery, n)
	var all []uuid.UUID
	for i := range ds {
		ds[i] = row(spec{state: delivery.Queued, due: after(time.Minute)}, now).Delivery
		all = append(all, ds[i].ID, newID())
	}
	create(t, h, ds...)
	got := claim(t, h, worker, lease, all...)
	seen := map[uuid.UUID]bool{}
	for _, d := range got {
		if seen[d.ID] {
			t.Errorf("delivery %s returned twice", d.ID)
		}
		seen[d.ID] = true
	}
	if len(seen) != n {
		t.Errorf("claimed %d of %d deliveries", len(seen), n)
	}
	for _, d := range ds {
		if r := h.Get(t, d.ID); r.State != delivery.Sending || r.LeaseOwner != worker || r.Attempts != 1 || !seen[d.ID] {
			t.Fatalf("delivery %s: %s leased to %q after %d attempts (returned %v), want sending leased to %s after 1",
				d.ID, r.State, r.LeaseOwner, r.Attempts, seen[d.ID], worker)
		}
	}
}

// testClaimConcurrent races claimers for the same deliveries, handed over in different orders:
// two workers, and two consumers of one worker (whose calls a store may merge). Each delivery
// goes to exactly one call.
func testClaimConcurrent(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const rounds, perRound = 40, 16
	claimers := []string{worker, worker, other}
	for round := range rounds {
		var rows []Row
		for i := range perRound {
			sp := spec{state: delivery.Queued, due: after(time.Minute)}
			if i%2 == 1 {
				sp = spec{state: delivery.Retrying, attempts: 1, due: after(-time.Second)}
			}
			rows = append(rows, seed(t, h, sp))
		}
		answers := make([][]delivery.Delivery, len(claimers))
		failures := make([]error, len(claimers))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for c, name := range claimers {
			mine := ids(rows...)
			rand.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			wg.Go(func() {
				<-start
				answers[c], failures[c] = h.Store.Claim(t.Context(), name, lease, mine)
			})
		}
		close(start)
		wg.Wait()
		owner := map[uuid.UUID]int{}
		for c, got := range answers {
			if failures[c] != nil {
				t.Fatalf("round %d: claimer %d: %v", round, c, failures[c])
			}
			for _, d := range got {
				if prev, ok := owner[d.ID]; ok {
					t.Fatalf("round %d: delivery %s claimed by claimers %d and %d", round, d.ID, prev, c)
				}
				owner[d.ID] = c
			}
		}
		for _, r := range rows {
			c, ok := owner[r.ID]
			if !ok {
				t.Fatalf("round %d: delivery %s claimed by nobody", round, r.ID)
			}
			if now := h.Get(t, r.ID); now.State != delivery.Sending || now.LeaseOwner != claimers[c] || now.Attempts != r.Attempts+1 {
				t.Fatalf("round %d: delivery %s is %s leased to %q after %d attempts, want sending leased to %s after %d",
					round, r.ID, now.State, now.LeaseOwner, now.Attempts, claimers[c], r.Attempts+1)
			}
		}
	}
}
