package deliverytest

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// attempt is the answer to claim d that a worker records at now, with the outcome st.
func attempt(d delivery.Delivery, st delivery.State, now time.Time) delivery.Attempt {
	a := delivery.Attempt{
		DeliveryID: d.ID, Attempt: d.Attempts, Drive: d.Drive, State: st,
		Provider: "fake", Started: now.Add(-3 * time.Millisecond), Latency: 2500 * time.Microsecond,
	}
	switch st {
	case delivery.Sent:
		a.ProviderMessageID = "pm-" + d.ID.String()
	case delivery.Retrying:
		a.Reason, a.Error = "provider_unavailable", "transient: 503 service unavailable"
		a.RetryAt = now.Add(30 * time.Second)
	case delivery.Dead:
		a.Reason, a.Error = "provider_unavailable", "transient: 503 service unavailable"
	case delivery.Failed:
		a.Reason, a.Error = "bad_address", "permanent (bad_address): no such mailbox"
	case delivery.Skipped:
		// Decided before any provider call, as the workers record it.
		a.Provider, a.Reason, a.Latency = "", "opted_out", 0
	}
	return a
}

// outcomes are the states an attempt may move its delivery to.
var outcomes = []delivery.State{delivery.Sent, delivery.Retrying, delivery.Failed, delivery.Dead, delivery.Skipped}

func record(t *testing.T, h Harness, w string, as ...delivery.Attempt) {
	t.Helper()
	if err := h.Store.Record(t.Context(), w, as); err != nil {
		t.Fatalf("Record: %v", err)
	}
}

// logged is the attempt log's entry for a, recorded by w.
func logged(w string, a delivery.Attempt) Logged {
	return Logged{
		Drive: a.Drive, Attempt: a.Attempt, Worker: w, Provider: a.Provider, Outcome: a.State.Outcome(),
		Reason: a.Reason, Error: a.Error, ProviderMessageID: a.ProviderMessageID, Started: a.Started, Latency: a.Latency,
	}
}

// recorded is delivery r after a landed at now: the retry's deadline never passes the
// delivery's expiry.
func recorded(r Row, a delivery.Attempt, now time.Time) Row {
	r.State, r.Reason, r.LastError, r.Provider, r.ProviderMessageID = a.State, a.Reason, a.Error, a.Provider, a.ProviderMessageID
	r.DueAt, r.LeaseOwner, r.UpdatedAt = nil, "", now
	if a.State == delivery.Retrying {
		r.DueAt = ptr(a.RetryAt)
		if r.ExpiresAt.Before(a.RetryAt) {
			r.DueAt = ptr(r.ExpiresAt)
		}
	}
	if a.State == delivery.Sent {
		r.SentAt = ptr(now)
	}
	return r
}

func checkLog(t *testing.T, h Harness, id uuid.UUID, want ...Logged) {
	t.Helper()
	got := h.Log(t, id)
	if len(got) != len(want) {
		t.Errorf("attempt log of %s has %d entries, want %d:\n got %+v\nwant %+v", id, len(got), len(want), got, want)
		return
	}
	for i := range got {
		if d := diff(got[i], want[i]); d != "" {
			t.Errorf("attempt log of %s, entry %d:\n%s", id, i, d)
		}
	}
}

// testRecord records each outcome of a claim, then the same again, as after a Record retried
// when its first try did commit.
func testRecord(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	for _, st := range outcomes {
		t.Run(string(st), func(t *testing.T) {
			r := seed(t, h, spec{state: delivery.Retrying, attempts: 2, due: after(-time.Second),
				reason: "provider_unavailable", provider: "fake"})
			d := mustClaim(t, h, worker, lease, r.ID)
			before := h.Get(t, r.ID)
			t0 := clock(t, h)
			a := attempt(d, st, t0)
			record(t, h, worker, a)
			t1 := clock(t, h)
			got := h.Get(t, r.ID)
			within(t, "updated_at of the record", &got.UpdatedAt, t0, t1)
			want := recorded(before, a, got.UpdatedAt)
			check(t, "the recorded delivery", got, want)
			if got.Attempts != 3 {
				t.Errorf("attempts = %d, want 3", got.Attempts)
			}
			checkLog(t, h, r.ID, logged(worker, a))

			record(t, h, worker, a)
			check(t, "the delivery recorded again", h.Get(t, r.ID), got)
			checkLog(t, h, r.ID, logged(worker, a))
		})
	}
}

// testRecordRetryDeadline: a retry is due exactly when its backoff ends, or when its delivery
// expires if that is sooner, so that the expiry is noticed on time.
func testRecordRetryDeadline(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	tests := []struct {
		name  string
		retry time.Duration // RetryAt after now
		ttl   time.Duration
		want  func(r Row, a delivery.Attempt) time.Time
	}{
		{"before the expiry", 5 * time.Minute, time.Hour, func(_ Row, a delivery.Attempt) time.Time { return a.RetryAt }},
		{"already over", -time.Minute, time.Hour, func(_ Row, a delivery.Attempt) time.Time { return a.RetryAt }},
		{"past the expiry", 2 * time.Hour, time.Hour, func(r Row, _ delivery.Attempt) time.Time { return r.ExpiresAt }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), ttl: tc.ttl})
			d := mustClaim(t, h, worker, lease, r.ID)
			now := clock(t, h)
			a := attempt(d, delivery.Retrying, now)
			a.RetryAt = now.Add(tc.retry)
			record(t, h, worker, a)
			got := h.Get(t, r.ID)
			if want := tc.want(r, a); got.State != delivery.Retrying || got.DueAt == nil || !got.DueAt.Equal(want) {
				t.Errorf("delivery is %s, due %s; want retrying, due %s", got.State, fmtTime(got.DueAt), want.Format(time.RFC3339Nano))
			}
		})
	}
	t.Run("claimed again once over", func(t *testing.T) {
		r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
		d := mustClaim(t, h, worker, lease, r.ID)
		now := clock(t, h)
		a := attempt(d, delivery.Retrying, now)
		a.RetryAt = now.Add(time.Hour)
		record(t, h, worker, a)
		// A message that comes before the backoff ends (a duplicate publish) does not cut it short.
		waiting := h.Get(t, r.ID)
		if got := claim(t, h, other, lease, r.ID); len(got) != 0 {
			t.Errorf("claimed during its backoff")
		}
		check(t, "a delivery in its backoff", h.Get(t, r.ID), waiting)
	})
}

// testRecordAfterTakeover: a worker whose lease ran out and passed to another still records a
// sent outcome (the provider has the message), but nothing else; its attempt is logged either
// way.
func testRecordAfterTakeover(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	for _, st := range outcomes {
		t.Run(string(st), func(t *testing.T) {
			r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
			first := mustClaim(t, h, worker, -time.Second, r.ID)
			second := mustClaim(t, h, other, lease, r.ID)
			if first.Attempts != 1 || second.Attempts != 2 {
				t.Fatalf("attempts %d and %d, want 1 and 2", first.Attempts, second.Attempts)
			}
			before := h.Get(t, r.ID)
			a := attempt(first, st, clock(t, h))
			record(t, h, worker, a)
			got := h.Get(t, r.ID)
			if st == delivery.Sent {
				check(t, "the sent of a lost lease", got, recorded(before, a, got.UpdatedAt))
			} else {
				check(t, "a delivery whose lost lease's outcome came", got, before)
			}
			checkLog(t, h, r.ID, logged(worker, a))

			// The new owner finishes: its sent lands unless the first one's did; its attempt is
			// logged next to the first.
			b := attempt(second, delivery.Sent, clock(t, h))
			record(t, h, other, b)
			final := h.Get(t, r.ID)
			if st == delivery.Sent {
				check(t, "a sent delivery sent again", final, got)
			} else {
				check(t, "the new owner's sent", final, recorded(got, b, final.UpdatedAt))
			}
			checkLog(t, h, r.ID, logged(worker, a), logged(other, b))
		})
	}
}

// testRecordWithoutLease: outcomes other than sent need the worker's live claim of that
// attempt; without it the delivery stays as it is, and the attempt is logged still.
func testRecordWithoutLease(t *testing.T, setup func(t *testing.T) Harness) {
	// unclaimed is the delivery as a worker that believes it claimed attempt 1 of drive 0 has it.
	unclaimed := func(_ *testing.T, _ Harness, r Row) delivery.Delivery {
		d := handed(r)
		d.Attempts, d.Drive = 1, 0
		return d
	}
	tests := []struct {
		name string
		spec spec
		// claim returns the claim the worker records an outcome of.
		claim func(t *testing.T, h Harness, r Row) delivery.Delivery
	}{
		{"queued, never claimed", spec{state: delivery.Queued, attempts: 1, due: after(time.Minute)}, unclaimed},
		{"sending for another worker", spec{state: delivery.Sending, attempts: 1, owner: other, due: after(time.Minute)}, unclaimed},
		{"sending for it, a later attempt", spec{state: delivery.Sending, attempts: 2, owner: worker, due: after(time.Minute)}, unclaimed},
		{"sending for it, a later drive", spec{state: delivery.Sending, attempts: 1, drive: 1, owner: worker, due: after(time.Minute)}, unclaimed},
		{"expired", spec{state: delivery.Expired, attempts: 1, reason: delivery.ReasonTTL}, unclaimed},
		{"canceled", spec{state: delivery.Canceled, attempts: 1, reason: delivery.ReasonCanceled}, unclaimed},
		{"already sent", spec{state: delivery.Sent, attempts: 1, provider: "fake", pmid: "pm-1", sent: after(-time.Minute)}, unclaimed},
		{"its lease ran out and the reconciler queued it again", spec{state: delivery.Queued, due: after(time.Minute)},
			func(t *testing.T, h Harness, r Row) delivery.Delivery {
				d := mustClaim(t, h, worker, -time.Second, r.ID)
				reconcile(t, h, clock(t, h), time.Minute, 100, nil)
				if got := h.Get(t, r.ID); got.State != delivery.Queued {
					t.Fatalf("the reconciler left the delivery %s", got.State)
				}
				return d
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t) // each its own: the reconciler looks at every delivery
			for _, st := range outcomes[1:] {
				t.Run(string(st), func(t *testing.T) {
					r := seed(t, h, tc.spec)
					d := tc.claim(t, h, r)
					before := h.Get(t, r.ID)
					a := attempt(d, st, clock(t, h))
					record(t, h, worker, a)
					check(t, "a delivery not leased to the attempt", h.Get(t, r.ID), before)
					checkLog(t, h, r.ID, logged(worker, a))
				})
			}
		})
	}
}

// testSentAlwaysLands: the provider has the message, so a sent outcome is recorded whatever
// became of its delivery meanwhile (a slow send outliving its lease and ttl), unless it is
// recorded sent already or a provider's event moved it on.
func testSentAlwaysLands(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	tests := []struct {
		meanwhile spec
		lands     bool
	}{
		{spec{state: delivery.Expired, attempts: 1, reason: delivery.ReasonTTL, ttl: -time.Minute}, true},
		{spec{state: delivery.Failed, attempts: 1, reason: "bad_address", provider: "fake"}, true},
		{spec{state: delivery.Dead, attempts: 1, reason: "provider_unavailable"}, true},
		{spec{state: delivery.Canceled, attempts: 1, reason: delivery.ReasonUserDeleted}, true},
		{spec{state: delivery.Skipped, attempts: 1, reason: "opted_out"}, true},
		{spec{state: delivery.Queued, attempts: 1, due: after(time.Minute), publishes: 1}, true},
		{spec{state: delivery.Retrying, attempts: 1, due: after(time.Minute), reason: "provider_unavailable"}, true},
		{spec{state: delivery.Sending, attempts: 2, owner: other, due: after(time.Minute)}, true},
		{spec{state: delivery.Sent, attempts: 1, provider: "other", pmid: "pm-other", sent: after(-time.Minute)}, false},
		{spec{state: delivery.Delivered, attempts: 1, provider: "fake", pmid: "pm-1", sent: after(-time.Minute)}, false},
		{spec{state: delivery.Bounced, attempts: 1, reason: "hard_bounce", provider: "fake", pmid: "pm-1", sent: after(-time.Minute)}, false},
	}
	for _, tc := range tests {
		t.Run(string(tc.meanwhile.state), func(t *testing.T) {
			r := seed(t, h, tc.meanwhile)
			claimed := handed(r)
			claimed.Attempts = 1
			a := attempt(claimed, delivery.Sent, clock(t, h))
			record(t, h, worker, a)
			got := h.Get(t, r.ID)
			if tc.lands {
				check(t, "a delivery sent meanwhile", got, recorded(r, a, got.UpdatedAt))
				if left := claim(t, h, other, lease, r.ID); len(left) != 0 {
					t.Errorf("claimed after it was sent")
				}
			} else {
				check(t, "a delivery sent again", got, r)
			}
			checkLog(t, h, r.ID, logged(worker, a))
		})
	}
}

// testStaleAttempt: an outcome of an earlier attempt, recorded late by a worker that has
// claimed the delivery again since, does not overwrite the newer claim.
func testStaleAttempt(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	first := mustClaim(t, h, worker, -time.Second, r.ID)
	second := mustClaim(t, h, worker, lease, r.ID)
	if second.Attempts != first.Attempts+1 {
		t.Fatalf("the second claim is attempt %d, want %d", second.Attempts, first.Attempts+1)
	}
	before := h.Get(t, r.ID)
	a := attempt(first, delivery.Failed, clock(t, h))
	record(t, h, worker, a)
	check(t, "a delivery whose stale failure came", h.Get(t, r.ID), before)
	b := attempt(second, delivery.Retrying, clock(t, h))
	record(t, h, worker, b)
	got := h.Get(t, r.ID)
	check(t, "the current attempt's retry", got, recorded(before, b, got.UpdatedAt))
	checkLog(t, h, r.ID, logged(worker, a), logged(worker, b))
}

// testRecordBatch records several outcomes in one call, as the workers do: each lands as it
// would alone. Of a stale sent and the current attempt's retry of one delivery, in either order,
// the sent lands, as it would after or before the retry.
func testRecordBatch(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	var rows []Row
	var as []delivery.Attempt
	now := clock(t, h)
	for _, st := range outcomes {
		r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
		as = append(as, attempt(mustClaim(t, h, worker, lease, r.ID), st, now))
		rows = append(rows, h.Get(t, r.ID))
	}
	var stale [2]Row
	var staleLog [2][]Logged
	for i := range stale {
		r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
		first := mustClaim(t, h, worker, -time.Second, r.ID)
		second := mustClaim(t, h, worker, lease, r.ID)
		sent, retry := attempt(first, delivery.Sent, now), attempt(second, delivery.Retrying, now)
		if i == 0 {
			as = append(as, sent, retry)
		} else {
			as = append(as, retry, sent)
		}
		stale[i] = h.Get(t, r.ID)
		staleLog[i] = []Logged{logged(worker, sent), logged(worker, retry)}
	}
	record(t, h, worker, as...)
	for i, r := range rows {
		got := h.Get(t, r.ID)
		check(t, string(as[i].State), got, recorded(r, as[i], got.UpdatedAt))
		checkLog(t, h, r.ID, logged(worker, as[i]))
	}
	for i, r := range stale {
		got := h.Get(t, r.ID)
		if got.State != delivery.Sent || got.ProviderMessageID != "pm-"+r.ID.String() || got.DueAt != nil {
			t.Errorf("stale sent and current retry (order %d): delivery %s, pmid %q, due %s; want sent by the stale attempt",
				i, got.State, got.ProviderMessageID, fmtTime(got.DueAt))
		}
		checkLog(t, h, r.ID, staleLog[i]...)
	}
}

// testRecordUnknown: an outcome for a delivery the store does not know (removed meanwhile) is
// no error, and the attempt log keeps the provider call.
func testRecordUnknown(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	d := handed(row(spec{state: delivery.Sending, attempts: 1}, clock(t, h)))
	a := attempt(d, delivery.Sent, clock(t, h))
	record(t, h, worker, a)
	checkLog(t, h, d.ID, logged(worker, a))
	if got, err := h.Store.OfNotification(t.Context(), d.NotificationID); err != nil || len(got) != 0 {
		t.Errorf("OfNotification = %d deliveries, %v; want none", len(got), err)
	}
}

// testLife walks one delivery through two transient failures to a send, as the workers do.
func testLife(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	var log []Logged
	for n := 1; n <= 3; n++ {
		before := h.Get(t, r.ID)
		d := mustClaim(t, h, worker, lease, r.ID)
		if d.Attempts != n {
			t.Fatalf("claim %d is attempt %d", n, d.Attempts)
		}
		if want := handed(claimed(before, worker, d.UpdatedAt)); diff(d, want) != "" {
			t.Errorf("claim %d returned:\n%s", n, diff(d, want))
		}
		st := delivery.Retrying
		if n == 3 {
			st = delivery.Sent
		}
		now := clock(t, h)
		a := attempt(d, st, now)
		a.RetryAt = now.Add(-time.Second) // the backoff is over by the next claim
		record(t, h, worker, a)
		log = append(log, logged(worker, a))
	}
	got := h.Get(t, r.ID)
	if got.State != delivery.Sent || got.Attempts != 3 || got.LastError != "" || got.Reason != "" {
		t.Errorf("delivery %s after %d attempts, error %q, reason %q; want sent after 3, the last error cleared",
			got.State, got.Attempts, got.LastError, got.Reason)
	}
	checkLog(t, h, r.ID, log...)
	if left := claim(t, h, other, lease, r.ID); len(left) != 0 {
		t.Errorf("claimed after it was sent")
	}
}

func release(t *testing.T, h Harness, w string, ids ...uuid.UUID) {
	t.Helper()
	if err := h.Store.Release(t.Context(), w, ids); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// testRelease gives claims back: the worker's own go back to queued, their attempt not
// counted, due after the store's grace (never past their expiry); the others stay as they are.
func testRelease(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	mine := []Row{
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)}),
		seed(t, h, spec{state: delivery.Retrying, attempts: 2, due: after(-time.Second), reason: "provider_unavailable"}),
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), ttl: h.ReleaseGrace / 2}),
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)}), // its lease runs out
	}
	for i, r := range mine {
		l := lease
		if i == 3 {
			l = -time.Second
		}
		mustClaim(t, h, worker, l, r.ID)
		mine[i] = h.Get(t, r.ID)
	}
	theirs := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	mustClaim(t, h, other, lease, theirs.ID)
	theirs = h.Get(t, theirs.ID)
	sent := seed(t, h, spec{state: delivery.Sent, attempts: 1, provider: "fake", pmid: "pm-1", sent: after(-time.Minute)})
	queued := seed(t, h, spec{state: delivery.Queued, attempts: 1, due: after(time.Minute)})

	t0 := clock(t, h)
	release(t, h, worker, append(ids(append(mine, theirs, sent, queued)...), newID())...)
	t1 := clock(t, h)
	for i, r := range mine {
		got := h.Get(t, r.ID)
		within(t, "updated_at of the release", &got.UpdatedAt, t0, t1)
		want := r
		want.State, want.LeaseOwner, want.Attempts, want.UpdatedAt = delivery.Queued, "", r.Attempts-1, got.UpdatedAt
		want.DueAt = ptr(got.UpdatedAt.Add(h.ReleaseGrace))
		if want.ExpiresAt.Before(*want.DueAt) {
			want.DueAt = ptr(want.ExpiresAt)
		}
		check(t, "released delivery "+string(rune('0'+i)), got, want)
		checkLog(t, h, r.ID)
	}
	for _, r := range []Row{theirs, sent, queued} {
		unchanged(t, h, r)
	}
	// The next claim counts the same attempt again.
	if d := mustClaim(t, h, other, lease, mine[1].ID); d.Attempts != 3 {
		t.Errorf("the attempt after the release is %d, want 3", d.Attempts)
	}
}
