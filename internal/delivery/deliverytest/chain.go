package deliverytest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
)

// chainOf seeds a fallback chain of one notification: step 1 on email, sending under worker's
// lease (attempt 1), and steps 2 to steps, on SMS, waiting until their expiry as the notifier
// creates them. It returns the rows by step, from index 0.
func chainOf(t *testing.T, h Harness, steps int, timeout time.Duration) []Row {
	t.Helper()
	n := newID()
	rows := []Row{seed(t, h, spec{state: delivery.Sending, owner: worker, attempts: 1, due: after(lease),
		notification: n, step: 1, stepTimeout: timeout})}
	for i := 2; i <= steps; i++ {
		rows = append(rows, seed(t, h, spec{state: delivery.Waiting, due: after(time.Hour), notification: n,
			channel: delivery.SMS, step: i, stepTimeout: timeout}))
	}
	return rows
}

const chainRepublish = time.Minute

// dueNow checks that a waiting step was made due by now at the latest, for the reconciler.
func dueNow(t *testing.T, h Harness, r Row) {
	t.Helper()
	got := h.Get(t, r.ID)
	now := clock(t, h)
	if got.State != delivery.Waiting || got.DueAt == nil || got.DueAt.After(now) {
		t.Errorf("step %d: %s due %s, want waiting and due by %s", r.Step, got.State, fmtTime(got.DueAt), now)
	}
}

// wantDues checks that Reconcile returned exactly the steps want to publish, on time.
func wantDues(t *testing.T, got []delivery.Due, want ...Row) {
	t.Helper()
	var ws []delivery.Due
	for _, r := range want {
		ws = append(ws, delivery.Due{ID: r.ID, Channel: r.Channel, OnTime: true})
	}
	if len(got) == 0 && len(ws) == 0 {
		return
	}
	if d := diff(sortDues(got), sortDues(ws)); d != "" {
		t.Errorf("dues:\n%s", d)
	}
}

// wantState checks a step's state and reason.
func wantState(t *testing.T, h Harness, r Row, st delivery.State, reason string) Row {
	t.Helper()
	got := h.Get(t, r.ID)
	if got.State != st || got.Reason != reason {
		t.Errorf("step %d: %s (%q), want %s (%q)", r.Step, got.State, got.Reason, st, reason)
	}
	return got
}

// testChainReleasesOnFailure: a step that fails for good makes the next step due, and the
// reconciler queues it; the steps after it go on waiting.
func testChainReleasesOnFailure(t *testing.T, setup func(t *testing.T) Harness) {
	for _, st := range []delivery.State{delivery.Failed, delivery.Dead, delivery.Skipped} {
		t.Run(string(st), func(t *testing.T) {
			h := setup(t)
			c := chainOf(t, h, 3, 0)
			record(t, h, worker, attempt(c[0].Delivery, st, clock(t, h)))
			dueNow(t, h, c[1])
			if got := h.Get(t, c[2].ID); got.State != delivery.Waiting {
				t.Errorf("step 3: %s, want waiting", got.State)
			}
			t0 := clock(t, h)
			dues, _ := reconcile(t, h, t0, chainRepublish, 100, nil)
			wantDues(t, dues, c[1])
			got := wantState(t, h, c[1], delivery.Queued, "")
			within(t, "step 2 due", got.DueAt, t0.Add(chainRepublish), t0.Add(chainRepublish))
			if got.Unpublished {
				t.Error("step 2 queued unpublished; want published by the reconciler")
			}
			if got := claim(t, h, worker, lease, c[1].ID); len(got) != 1 {
				t.Errorf("claim of the queued step 2: %d deliveries, want 1", len(got))
			}
			// Step 3 waits for step 2, and is looked at again after the re-publish deadline.
			got = wantState(t, h, c[2], delivery.Waiting, "")
			if got.DueAt == nil || got.DueAt.Before(t0) {
				t.Errorf("step 3 due %s, want after %s", fmtTime(got.DueAt), t0)
			}
		})
	}
}

// testChainSkipsOnSuccess: a sent step, in a chain without a step timeout, ends the chain.
func testChainSkipsOnSuccess(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	c := chainOf(t, h, 3, 0)
	record(t, h, worker, attempt(c[0].Delivery, delivery.Sent, clock(t, h)))
	dueNow(t, h, c[1])
	dues, _ := reconcile(t, h, clock(t, h), chainRepublish, 100, nil)
	wantDues(t, dues)
	wantState(t, h, c[0], delivery.Sent, "")
	for _, r := range c[1:] {
		if got := wantState(t, h, r, delivery.Skipped, delivery.ReasonFallbackNotNeeded); got.DueAt != nil {
			t.Errorf("step %d skipped due %s, want none", r.Step, fmtTime(got.DueAt))
		}
	}
	// A later pass finds nothing more to do.
	dues, _ = reconcile(t, h, clock(t, h).Add(2*time.Hour), chainRepublish, 100, nil)
	wantDues(t, dues)
}

// testChainWaits: a later step is not claimed, not moved by a retry of the step before it, and
// waits when it falls due while an earlier step is still on its way.
func testChainWaits(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	c := chainOf(t, h, 2, 0)
	if got := claim(t, h, worker, lease, c[1].ID); len(got) != 0 {
		t.Errorf("claim of a waiting step: %d deliveries, want none", len(got))
	}
	record(t, h, worker, attempt(c[0].Delivery, delivery.Retrying, clock(t, h)))
	unchanged(t, h, c[1])

	n := newID()
	first := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), notification: n, step: 1})
	second := seed(t, h, spec{state: delivery.Waiting, due: after(-time.Second), notification: n, channel: delivery.SMS, step: 2})
	t0 := clock(t, h)
	dues, _ := reconcile(t, h, t0, chainRepublish, 100, nil)
	wantDues(t, dues)
	got := wantState(t, h, second, delivery.Waiting, "")
	within(t, "waiting step due", got.DueAt, t0.Add(chainRepublish), t0.Add(chainRepublish))
	unchanged(t, h, first)
}

// testChainStepTimeout: with a step timeout, a sent step holds the next one until the timeout
// passes, and then the next goes.
func testChainStepTimeout(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const timeout = 10 * time.Minute
	c := chainOf(t, h, 2, timeout)
	record(t, h, worker, attempt(c[0].Delivery, delivery.Sent, clock(t, h)))
	sent := h.Get(t, c[0].ID)
	dues, _ := reconcile(t, h, clock(t, h), chainRepublish, 100, nil)
	wantDues(t, dues)
	got := wantState(t, h, c[1], delivery.Waiting, "")
	within(t, "step 2 due", got.DueAt, sent.SentAt.Add(timeout), sent.SentAt.Add(timeout))

	dues, _ = reconcile(t, h, sent.SentAt.Add(timeout-time.Second), chainRepublish, 100, nil)
	wantDues(t, dues)
	dues, _ = reconcile(t, h, sent.SentAt.Add(timeout), chainRepublish, 100, nil)
	wantDues(t, dues, c[1])
	wantState(t, h, c[1], delivery.Queued, "")
	// Why the chain moved on past step 1.
	wantState(t, h, c[0], delivery.Sent, delivery.ReasonStepTimeout)
}

// testChainEventStops: a delivery event within the step timeout ends the chain.
func testChainEventStops(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const timeout = 10 * time.Minute
	c := chainOf(t, h, 3, timeout)
	record(t, h, worker, attempt(c[0].Delivery, delivery.Sent, clock(t, h)))
	settle(t, h, delivery.Event{DeliveryID: c[0].ID, State: delivery.Delivered, Provider: "fake",
		EventID: "ev-1", OccurredAt: clock(t, h)})
	dueNow(t, h, c[1])
	dues, _ := reconcile(t, h, clock(t, h).Add(timeout+time.Minute), chainRepublish, 100, nil)
	wantDues(t, dues)
	for _, r := range c[1:] {
		wantState(t, h, r, delivery.Skipped, delivery.ReasonFallbackNotNeeded)
	}
}

// testChainBounceReleases: a sent step that bounces within its step timeout has failed for good:
// the next step goes at once.
func testChainBounceReleases(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	c := chainOf(t, h, 2, 10*time.Minute)
	record(t, h, worker, attempt(c[0].Delivery, delivery.Sent, clock(t, h)))
	settle(t, h, delivery.Event{DeliveryID: c[0].ID, State: delivery.Bounced, Reason: "bounce", Provider: "fake",
		EventID: "ev-1", OccurredAt: clock(t, h)})
	dueNow(t, h, c[1])
	dues, _ := reconcile(t, h, clock(t, h), chainRepublish, 100, nil)
	wantDues(t, dues, c[1])
}

// testChainConcurrent: a step of two deliveries (two devices) fails on both at once, recorded
// by two workers while two reconcilers run: the next step is queued exactly once.
func testChainConcurrent(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	for range 5 {
		n := newID()
		a := seed(t, h, spec{state: delivery.Sending, owner: worker, attempts: 1, due: after(lease), notification: n,
			channel: delivery.IOS, step: 1})
		b := seed(t, h, spec{state: delivery.Sending, owner: other, attempts: 1, due: after(lease), notification: n,
			channel: delivery.IOS, step: 1})
		next := seed(t, h, spec{state: delivery.Waiting, due: after(time.Hour), notification: n, channel: delivery.SMS, step: 2})

		var mu sync.Mutex
		var all []delivery.Due
		var wg sync.WaitGroup
		now := clock(t, h)
		wg.Go(func() { record(t, h, worker, attempt(a.Delivery, delivery.Failed, now)) })
		wg.Go(func() { record(t, h, other, attempt(b.Delivery, delivery.Failed, now)) })
		for range 2 {
			wg.Go(func() {
				for range 5 {
					dues, _, err := h.Store.Reconcile(t.Context(), clock(t, h), chainRepublish, 100, nil)
					if err != nil {
						t.Errorf("Reconcile: %v", err)
						return
					}
					mu.Lock()
					all = append(all, dues...)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		// A mark that a concurrent pass's snapshot missed is decided after the re-publish
		// deadline at the latest.
		dues, _ := reconcile(t, h, clock(t, h).Add(chainRepublish), chainRepublish, 100, nil)
		all = append(all, dues...)
		// Only releases count: a queued step not claimed by then is re-published (not OnTime).
		got := slices.DeleteFunc(all, func(d delivery.Due) bool { return d.ID != next.ID || !d.OnTime })
		if len(got) != 1 {
			t.Errorf("step 2 queued %d times, want once", len(got))
		}
		wantState(t, h, next, delivery.Queued, "")
	}
}

// testChainEnds: a waiting step is canceled with its notification, and expires with its ttl,
// so that no chain is left waiting for ever.
func testChainEnds(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	c := chainOf(t, h, 2, 0)
	if n, err := h.Store.Cancel(t.Context(), c[0].NotificationID, clock(t, h)); err != nil || n != 1 {
		t.Errorf("Cancel = %d, %v; want the waiting step canceled", n, err)
	}
	wantState(t, h, c[1], delivery.Canceled, delivery.ReasonCanceled)

	h = setup(t)
	d := chainOf(t, h, 2, 0)
	_, expired := reconcile(t, h, clock(t, h).Add(2*time.Hour), chainRepublish, 100, nil)
	if expired != 2 {
		t.Errorf("expired %d, want both steps", expired)
	}
	wantState(t, h, d[1], delivery.Expired, delivery.ReasonTTL)
}

// testChainRedrive: a dead step is re-driven only while no other step of its chain reached the
// recipient or is on its way: otherwise two channels' messages would reach them.
func testChainRedrive(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	taken, alone := newID(), newID()
	blocked := seed(t, h, spec{state: delivery.Dead, notification: taken, step: 1})
	seed(t, h, spec{state: delivery.Sent, notification: taken, channel: delivery.SMS, step: 2})
	free := seed(t, h, spec{state: delivery.Dead, notification: alone, step: 1})
	seed(t, h, spec{state: delivery.Failed, notification: alone, channel: delivery.SMS, step: 2})
	dues := redrive(t, h, delivery.DeadFilter{}, clock(t, h), chainRepublish)
	if len(dues) != 1 || dues[0].ID != free.ID {
		t.Errorf("re-drove %v, want only the step whose chain reached no one (%s)", dues, free.ID)
	}
	unchanged(t, h, blocked)
}
