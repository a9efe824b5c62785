package deliverytest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

func create(t *testing.T, h Harness, ds ...delivery.Delivery) {
	t.Helper()
	if err := h.Store.Create(t.Context(), ds); err != nil {
		t.Fatalf("Create: %v", err)
	}
}

// stored is delivery d as Create must store it: new, whatever bookkeeping the caller filled in.
func stored(d delivery.Delivery) Row {
	d.Attempts, d.Drive, d.LastError, d.Provider, d.ProviderMessageID, d.SentAt = 0, 0, "", "", "", nil
	d.UpdatedAt = d.CreatedAt
	return Row{Delivery: d}
}

// read is delivery r as a store lists it: without its content, which only the workers need.
func read(r Row) delivery.Delivery {
	d := r.Delivery
	d.Content = delivery.Content{}
	return d
}

func sortByID(ds []delivery.Delivery) []delivery.Delivery {
	slices.SortFunc(ds, func(a, b delivery.Delivery) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return ds
}

// checkList compares a list of deliveries with the one wanted, in order.
func checkList(t *testing.T, what string, got, want []delivery.Delivery) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d deliveries, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if d := diff(got[i], want[i]); d != "" {
			t.Errorf("%s, delivery %d:\n%s", what, i, d)
		}
	}
}

func ofNotification(t *testing.T, h Harness, id uuid.UUID) []delivery.Delivery {
	t.Helper()
	got, err := h.Store.OfNotification(t.Context(), id)
	if err != nil {
		t.Fatalf("OfNotification: %v", err)
	}
	return got
}

// testCreate stores new deliveries and reads them back exactly, content included.
func testCreate(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	tests := []struct {
		name string
		ds   func(now time.Time) []delivery.Delivery
	}{
		{"one on every channel", func(now time.Time) []delivery.Delivery {
			n := newID()
			var ds []delivery.Delivery
			for _, ch := range delivery.Channels {
				ds = append(ds, row(spec{state: delivery.Queued, due: after(time.Minute), notification: n, channel: ch}, now).Delivery)
			}
			ds[1].Content = delivery.Content{Title: "Hi", Body: "push", Data: map[string]any{"deep": map[string]any{"deeper": []any{1.5, "x", nil}}}}
			ds[2].Content = delivery.Content{Body: "sms"}
			ds[3].Content = delivery.Content{}
			return ds
		}},
		{"to a user and to a raw address", func(now time.Time) []delivery.Delivery {
			n := newID()
			user := row(spec{state: delivery.Queued, due: after(time.Minute), notification: n, user: "user-42"}, now).Delivery
			raw := row(spec{state: delivery.Queued, due: after(time.Minute), notification: n, raw: true}, now).Delivery
			raw.Critical, raw.DefaultOptIn, raw.Priority = false, true, delivery.Low
			raw.AppID = uuid.Nil // made before deliveries kept their app
			return []delivery.Delivery{user, raw}
		}},
		{"scheduled, queued and skipped", func(now time.Time) []delivery.Delivery {
			n := newID()
			scheduled := row(spec{state: delivery.Scheduled, due: after(48 * time.Hour), ttl: 49 * time.Hour, notification: n}, now).Delivery
			queued := row(spec{state: delivery.Queued, due: after(time.Minute), notification: n}, now).Delivery
			skipped := row(spec{state: delivery.Skipped, reason: "no_address", notification: n}, now).Delivery
			skipped.To, skipped.Content = "", delivery.Content{}
			return []delivery.Delivery{scheduled, queued, skipped}
		}},
		{"the caller's bookkeeping ignored", func(now time.Time) []delivery.Delivery {
			d := row(spec{state: delivery.Queued, due: after(time.Minute), attempts: 3, drive: 2, provider: "fake",
				pmid: "pm-1", sent: after(-time.Minute)}, now).Delivery
			d.LastError, d.UpdatedAt = "an error", now
			return []delivery.Delivery{d}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := tc.ds(clock(t, h))
			create(t, h, ds...)
			var want []delivery.Delivery
			for _, d := range ds {
				check(t, "the created delivery", h.Get(t, d.ID), stored(d))
				want = append(want, read(stored(d)))
			}
			checkList(t, "OfNotification", ofNotification(t, h, ds[0].NotificationID), sortByID(want))
		})
	}
	t.Run("keeps its own copy", func(t *testing.T) {
		d := row(spec{state: delivery.Queued, due: after(time.Minute)}, clock(t, h)).Delivery
		create(t, h, d)
		want := stored(d)
		want.Content = content()
		d.Content.Data["code"] = "changed by the caller"
		d.Content.Data["nested"].(map[string]any)["n"] = 0.0
		check(t, "a delivery its creator changed", h.Get(t, d.ID), want)
		c := mustClaim(t, h, worker, lease, d.ID)
		c.Content.Data["code"] = "changed by the worker"
		if got := h.Get(t, d.ID); diff(got.Content, want.Content) != "" {
			t.Errorf("a claimed delivery's content changed with its copy:\n%s", diff(got.Content, want.Content))
		}
	})
}

// testCreateRefuses: a Create that cannot store every delivery it is given stores none.
func testCreateRefuses(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	existing := row(spec{state: delivery.Queued, due: after(time.Minute)}, clock(t, h)).Delivery
	create(t, h, existing)
	tests := []struct {
		name  string
		spoil func(ds []delivery.Delivery)
	}{
		{"an id twice", func(ds []delivery.Delivery) { ds[1].ID = ds[0].ID }},
		{"an id stored already", func(ds []delivery.Delivery) { ds[1].ID = existing.ID }},
		{"content that cannot be encoded", func(ds []delivery.Delivery) { ds[1].Content.Data = map[string]any{"f": func() {}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now, n := clock(t, h), newID()
			ds := []delivery.Delivery{
				row(spec{state: delivery.Queued, due: after(time.Minute), notification: n}, now).Delivery,
				row(spec{state: delivery.Queued, due: after(time.Minute), notification: n}, now).Delivery,
			}
			tc.spoil(ds)
			if err := h.Store.Create(t.Context(), ds); err == nil {
				t.Fatal("Create succeeded")
			}
			if got := ofNotification(t, h, n); len(got) != 0 {
				t.Errorf("%d deliveries stored", len(got))
			}
			check(t, "the delivery stored already", h.Get(t, existing.ID), stored(existing))
		})
	}
}

// testNothingToDo: every call given nothing to do does nothing, without an error.
func testNothingToDo(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	ctx := t.Context()
	now := clock(t, h)
	r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	calls := []struct {
		name string
		call func() (int, error) // how many deliveries the call returned or moved
	}{
		{"Create", func() (int, error) { return 0, h.Store.Create(ctx, nil) }},
		{"Unpublished", func() (int, error) { return 0, h.Store.Unpublished(ctx, nil, now) }},
		{"Claim", func() (int, error) { ds, err := h.Store.Claim(ctx, worker, lease, nil); return len(ds), err }},
		{"Record", func() (int, error) { return 0, h.Store.Record(ctx, worker, nil) }},
		{"Release", func() (int, error) { return 0, h.Store.Release(ctx, worker, nil) }},
		{"Reconcile", func() (int, error) {
			dues, n, err := h.Store.Reconcile(ctx, now, time.Minute, 10, nil)
			return len(dues) + n, err
		}},
		{"Cancel", func() (int, error) { return h.Store.Cancel(ctx, newID(), now) }},
		{"DeadLetters", func() (int, error) {
			ds, err := h.Store.DeadLetters(ctx, delivery.DeadFilter{}, uuid.Nil, 10)
			return len(ds), err
		}},
		{"Redrive", func() (int, error) {
			dues, err := h.Store.Redrive(ctx, delivery.DeadFilter{}, now, time.Minute)
			return len(dues), err
		}},
		{"EraseUser", func() (int, error) { return 0, h.Store.EraseUser(ctx, "nobody") }},
		{"Settle", func() (int, error) { return 0, h.Store.Settle(ctx, nil) }},
		{"OfNotification", func() (int, error) { ds, err := h.Store.OfNotification(ctx, newID()); return len(ds), err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if n, err := c.call(); n != 0 || err != nil {
				t.Errorf("%s = %d, %v; want nothing, no error", c.name, n, err)
			}
			unchanged(t, h, r)
		})
	}
}

// testCancel cancels the deliveries of a notification that no worker holds yet.
func testCancel(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	n := newID()
	cancels := []Row{
		seed(t, h, spec{state: delivery.Scheduled, due: after(time.Hour), notification: n}),
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), notification: n, publishes: 1}),
		seed(t, h, spec{state: delivery.Retrying, attempts: 1, due: after(time.Minute), notification: n, reason: "provider_unavailable"}),
	}
	stays := []Row{
		// The provider call may be under way: past cancelling.
		seed(t, h, spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Minute), notification: n}),
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)}), // of another notification
	}
	for _, st := range []delivery.State{delivery.Sent, delivery.Delivered, delivery.Bounced, delivery.Failed,
		delivery.Dead, delivery.Skipped, delivery.Expired, delivery.Canceled} {
		stays = append(stays, seed(t, h, spec{state: st, attempts: 1, notification: n}))
	}
	at := clock(t, h).Add(5 * time.Second) // the caller's clock, not the store's
	if got, err := h.Store.Cancel(t.Context(), n, at); err != nil || got != len(cancels) {
		t.Fatalf("Cancel = %d, %v; want %d", got, err, len(cancels))
	}
	for _, r := range cancels {
		want := r
		want.State, want.Reason, want.DueAt, want.UpdatedAt = delivery.Canceled, delivery.ReasonCanceled, nil, at
		check(t, "a canceled delivery", h.Get(t, r.ID), want)
	}
	for _, r := range stays {
		unchanged(t, h, r)
	}
	if got, err := h.Store.Cancel(t.Context(), n, at.Add(time.Second)); err != nil || got != 0 {
		t.Errorf("the second Cancel = %d, %v; want 0", got, err)
	}
}

func deadLetters(t *testing.T, h Harness, f delivery.DeadFilter, after uuid.UUID, limit int) []delivery.Delivery {
	t.Helper()
	got, err := h.Store.DeadLetters(t.Context(), f, after, limit)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return got
}

// testDeadLetters lists dead deliveries by filter, in pages by id.
func testDeadLetters(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	dead := func(ch delivery.Channel, reason string) Row {
		return seed(t, h, spec{state: delivery.Dead, attempts: 5, channel: ch, reason: reason, provider: "fake"})
	}
	emailDown, smsDown, emailToken := dead(delivery.Email, "provider_unavailable"), dead(delivery.SMS, "provider_unavailable"), dead(delivery.Email, "bad_token")
	failed := seed(t, h, spec{state: delivery.Failed, attempts: 1, reason: "provider_unavailable"})
	seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	list := func(rs ...Row) []delivery.Delivery {
		var out []delivery.Delivery
		for _, r := range rs {
			out = append(out, read(r))
		}
		return sortByID(out)
	}
	all := list(emailDown, smsDown, emailToken)
	tests := []struct {
		name  string
		f     delivery.DeadFilter
		after uuid.UUID
		limit int
		want  []delivery.Delivery
	}{
		{"all", delivery.DeadFilter{}, uuid.Nil, 10, all},
		{"by channel", delivery.DeadFilter{Channel: delivery.Email}, uuid.Nil, 10, list(emailDown, emailToken)},
		{"by reason", delivery.DeadFilter{Reason: "provider_unavailable"}, uuid.Nil, 10, list(emailDown, smsDown)},
		{"by channel and reason", delivery.DeadFilter{Channel: delivery.Email, Reason: "provider_unavailable"}, uuid.Nil, 10, list(emailDown)},
		{"by ids", delivery.DeadFilter{IDs: []uuid.UUID{smsDown.ID, failed.ID, newID()}}, uuid.Nil, 10, list(smsDown)},
		{"by ids, none dead", delivery.DeadFilter{IDs: []uuid.UUID{failed.ID}}, uuid.Nil, 10, nil},
		{"a first page", delivery.DeadFilter{}, uuid.Nil, 2, all[:2]},
		{"the next page", delivery.DeadFilter{}, all[1].ID, 2, all[2:]},
		{"past the last", delivery.DeadFilter{}, all[2].ID, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkList(t, "DeadLetters", deadLetters(t, h, tc.f, tc.after, tc.limit), tc.want)
		})
	}
}

func redrive(t *testing.T, h Harness, f delivery.DeadFilter, now time.Time, republishAfter time.Duration) []delivery.Due {
	t.Helper()
	dues, err := h.Store.Redrive(t.Context(), f, now, republishAfter)
	if err != nil {
		t.Fatalf("Redrive: %v", err)
	}
	return sortDues(dues)
}

// testRedrive queues the dead letters a filter selects again, each in a new drive with a fresh
// attempt budget, and a fresh ttl if its own ran out.
func testRedrive(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	expired := seed(t, h, spec{state: delivery.Dead, attempts: 5, ttl: -time.Hour, publishes: 2, reason: "provider_unavailable"})
	live := seed(t, h, spec{state: delivery.Dead, attempts: 5, drive: 1, ttl: 48 * time.Hour, reason: "provider_unavailable"})
	sms := seed(t, h, spec{state: delivery.Dead, attempts: 5, channel: delivery.SMS})
	failed := seed(t, h, spec{state: delivery.Failed, attempts: 1})
	now := clock(t, h).Add(5 * time.Second) // the caller's clock, not the store's
	const rp = 3 * time.Minute

	dues := redrive(t, h, delivery.DeadFilter{Channel: delivery.Email}, now, rp)
	want := sortDues([]delivery.Due{{ID: expired.ID, Channel: delivery.Email}, {ID: live.ID, Channel: delivery.Email}})
	if !slices.Equal(dues, want) {
		t.Errorf("Redrive = %+v, want %+v", dues, want)
	}
	for _, r := range []Row{expired, live} {
		w := r
		w.State, w.Attempts, w.Drive, w.Reason, w.Publishes = delivery.Queued, 0, r.Drive+1, "", r.Publishes+1
		w.DueAt, w.UpdatedAt = ptr(now.Add(rp)), now
		if exp := now.Add(delivery.DefaultTTL); w.ExpiresAt.Before(exp) {
			w.ExpiresAt = exp
		}
		check(t, "a re-driven delivery", h.Get(t, r.ID), w)
	}
	unchanged(t, h, sms)
	unchanged(t, h, failed)
	if dues := redrive(t, h, delivery.DeadFilter{Channel: delivery.Email}, now, rp); len(dues) != 0 {
		t.Errorf("the second Redrive = %+v, want nothing", dues)
	}
	checkList(t, "DeadLetters after the re-drive", deadLetters(t, h, delivery.DeadFilter{}, uuid.Nil, 10), []delivery.Delivery{read(sms)})
}

// testRedriveLife: a re-driven delivery's attempts count from 1 again, in its new drive; the
// attempt log keeps the old drive's, and a late answer from the old drive changes nothing.
func testRedriveLife(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	r := seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	first := mustClaim(t, h, worker, lease, r.ID)
	died := attempt(first, delivery.Dead, clock(t, h))
	record(t, h, worker, died)
	if dues := redrive(t, h, delivery.DeadFilter{IDs: []uuid.UUID{r.ID}}, clock(t, h), time.Minute); len(dues) != 1 {
		t.Fatalf("Redrive = %+v, want the delivery", dues)
	}
	second := mustClaim(t, h, worker, lease, r.ID)
	if second.Attempts != 1 || second.Drive != 1 {
		t.Fatalf("the claim after the re-drive is attempt %d of drive %d, want 1 of 1", second.Attempts, second.Drive)
	}
	before := h.Get(t, r.ID)
	late := attempt(first, delivery.Failed, clock(t, h))
	record(t, h, worker, late)
	check(t, "a delivery whose old drive's answer came late", h.Get(t, r.ID), before)
	sent := attempt(second, delivery.Sent, clock(t, h))
	record(t, h, worker, sent)
	if got := h.Get(t, r.ID); got.State != delivery.Sent || got.Drive != 1 || got.Attempts != 1 {
		t.Errorf("delivery %s, attempt %d of drive %d; want sent, attempt 1 of drive 1", got.State, got.Attempts, got.Drive)
	}
	checkLog(t, h, r.ID, logged(worker, died), logged(worker, sent))
}

// testEraseUser removes a deleted user's addresses and content, keeping the history, and
// cancels what was not sent yet.
func testEraseUser(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	const user = "user-erased"
	var cancels, keeps []Row
	for _, sp := range []spec{
		{state: delivery.Scheduled, due: after(time.Hour)},
		{state: delivery.Queued, due: after(time.Minute)},
		{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Minute)},
		{state: delivery.Retrying, attempts: 1, due: after(time.Minute), reason: "provider_unavailable"},
	} {
		sp.user = user
		cancels = append(cancels, seed(t, h, sp))
	}
	for _, sp := range []spec{
		{state: delivery.Sent, attempts: 1, provider: "fake", pmid: "pm-1", sent: after(-time.Minute)},
		{state: delivery.Delivered, attempts: 1, provider: "fake", pmid: "pm-2", sent: after(-time.Minute)},
		{state: delivery.Failed, attempts: 1, reason: "bad_address"},
		{state: delivery.Dead, attempts: 5, reason: "provider_unavailable"},
		{state: delivery.Skipped, reason: "opted_out"},
		{state: delivery.Expired, reason: delivery.ReasonTTL},
	} {
		sp.user = user
		keeps = append(keeps, seed(t, h, sp))
	}
	// Erased already: nothing left to remove.
	bare := row(spec{state: delivery.Skipped, reason: "no_address", user: user}, clock(t, h))
	bare.To, bare.Content = "", delivery.Content{}
	h.Seed(t, bare)
	others := []Row{
		bare,
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), user: "user-other"}),
		seed(t, h, spec{state: delivery.Queued, due: after(time.Minute), raw: true}),
	}

	t0 := clock(t, h)
	if err := h.Store.EraseUser(t.Context(), user); err != nil {
		t.Fatalf("EraseUser: %v", err)
	}
	t1 := clock(t, h)
	var erased []Row
	for i, r := range append(cancels, keeps...) {
		got := h.Get(t, r.ID)
		within(t, "updated_at of the erasure", &got.UpdatedAt, t0, t1)
		want := r
		want.To, want.Content, want.LeaseOwner, want.UpdatedAt = "", delivery.Content{}, "", got.UpdatedAt
		if i < len(cancels) {
			want.State, want.Reason, want.DueAt = delivery.Canceled, delivery.ReasonUserDeleted, nil
		}
		check(t, "an erased delivery", got, want)
		erased = append(erased, got)
	}
	for _, r := range others {
		unchanged(t, h, r)
	}
	// Again, and for the deliveries to raw addresses: nothing moves.
	for _, u := range []string{user, ""} {
		if err := h.Store.EraseUser(t.Context(), u); err != nil {
			t.Fatalf("EraseUser(%q): %v", u, err)
		}
		for _, r := range append(erased, others...) {
			unchanged(t, h, r)
		}
	}
}

func settle(t *testing.T, h Harness, events ...delivery.Event) {
	t.Helper()
	if err := h.Store.Settle(t.Context(), events); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

// testSettle moves deliveries on as their providers' events report, from the states a
// provider's event may come in.
func testSettle(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	occurred := now.Add(-30 * time.Second)
	tests := []struct {
		name  string
		spec  spec
		event delivery.State
		moves bool
	}{
		{"sending, not recorded yet", spec{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Minute)}, delivery.Delivered, true},
		{"sent", spec{state: delivery.Sent, attempts: 1, provider: "sendgrid", pmid: "pm-own", sent: after(-time.Minute)}, delivery.Delivered, true},
		{"sent, bounced", spec{state: delivery.Sent, attempts: 1, provider: "sendgrid", pmid: "pm-own", sent: after(-time.Minute)}, delivery.Bounced, true},
		{"retrying", spec{state: delivery.Retrying, attempts: 1, due: after(time.Minute), reason: "provider_unavailable", provider: "sendgrid"},
			delivery.Delivered, true},
		{"queued again", spec{state: delivery.Queued, attempts: 1, due: after(time.Minute), publishes: 1}, delivery.Bounced, true},
		{"scheduled", spec{state: delivery.Scheduled, due: after(time.Hour)}, delivery.Delivered, false},
		{"delivered", spec{state: delivery.Delivered, attempts: 1, provider: "sendgrid", pmid: "pm-own", sent: after(-time.Minute)}, delivery.Bounced, false},
		{"bounced", spec{state: delivery.Bounced, attempts: 1, reason: "hard_bounce", provider: "sendgrid", pmid: "pm-own", sent: after(-time.Minute)},
			delivery.Delivered, false},
		{"failed", spec{state: delivery.Failed, attempts: 1, reason: "bad_address"}, delivery.Delivered, false},
		{"dead", spec{state: delivery.Dead, attempts: 5}, delivery.Delivered, false},
		{"skipped", spec{state: delivery.Skipped, reason: "opted_out"}, delivery.Delivered, false},
		{"expired", spec{state: delivery.Expired, reason: delivery.ReasonTTL}, delivery.Delivered, false},
		{"canceled", spec{state: delivery.Canceled, reason: delivery.ReasonCanceled}, delivery.Delivered, false},
	}
	rows := make([]Row, len(tests))
	var events []delivery.Event
	for i, tc := range tests {
		rows[i] = seed(t, h, tc.spec)
		e := delivery.Event{DeliveryID: rows[i].ID, State: tc.event, Provider: "sendgrid", ProviderMessageID: "pm-event",
			EventID: "e-" + rows[i].ID.String(), OccurredAt: occurred}
		if tc.event == delivery.Bounced {
			e.Reason = "hard_bounce 5.1.1"
		}
		events = append(events, e)
	}
	events = append(events, delivery.Event{DeliveryID: newID(), State: delivery.Delivered, EventID: "e-unknown", OccurredAt: occurred})
	t0 := clock(t, h)
	settle(t, h, events...)
	t1 := clock(t, h)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, e := rows[i], events[i]
			got := h.Get(t, r.ID)
			if !tc.moves {
				check(t, "a delivery no event moves", got, r)
				return
			}
			within(t, "updated_at of the settlement", &got.UpdatedAt, t0, t1)
			want := r
			want.State, want.Reason, want.DueAt, want.LeaseOwner, want.UpdatedAt = e.State, e.Reason, nil, "", got.UpdatedAt
			if want.SentAt == nil {
				want.SentAt = ptr(e.OccurredAt)
			}
			if want.Provider == "" {
				want.Provider = e.Provider
			}
			if want.ProviderMessageID == "" {
				want.ProviderMessageID = e.ProviderMessageID
			}
			check(t, "a settled delivery", got, want)
		})
	}
}

// testSettleEarliest: of several events for one delivery, the earliest counts (by the time it
// occurred, then by its id), in one call or over several; the provider and message id fill in
// only what is missing.
func testSettleEarliest(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	now := clock(t, h)
	sent := func(provider, pmid string) Row {
		return seed(t, h, spec{state: delivery.Sent, attempts: 1, provider: provider, pmid: pmid, sent: after(-time.Minute)})
	}
	event := func(r Row, st delivery.State, id string, at time.Time) delivery.Event {
		return delivery.Event{DeliveryID: r.ID, State: st, Reason: id, Provider: "twilio", ProviderMessageID: "SM-" + id, EventID: id, OccurredAt: at}
	}
	earlier, tie, bare, half := sent("sendgrid", "pm-1"), sent("sendgrid", "pm-2"), sent("", ""), sent("fake", "")
	settle(t, h,
		event(earlier, delivery.Bounced, "e-2", now.Add(-time.Second)),
		event(earlier, delivery.Delivered, "e-1", now.Add(-2*time.Second)),
		event(tie, delivery.Bounced, "e-b", now.Add(-time.Second)),
		event(tie, delivery.Delivered, "e-a", now.Add(-time.Second)),
		event(bare, delivery.Delivered, "e-x", now.Add(-time.Second)),
		event(half, delivery.Delivered, "e-y", now.Add(-time.Second)),
	)
	for _, c := range []struct {
		name                   string
		r                      Row
		reason, provider, pmid string
	}{
		{"the earlier event wins", earlier, "e-1", "sendgrid", "pm-1"},
		{"at the same time, the lower event id wins", tie, "e-a", "sendgrid", "pm-2"},
		{"provider and message id filled in", bare, "e-x", "twilio", "SM-e-x"},
		{"message id filled in, provider kept", half, "e-y", "fake", "SM-e-y"},
	} {
		got := h.Get(t, c.r.ID)
		if got.State != delivery.Delivered || got.Reason != c.reason || got.Provider != c.provider || got.ProviderMessageID != c.pmid {
			t.Errorf("%s: %s for %q by %q as %q; want delivered for %q by %q as %q",
				c.name, got.State, got.Reason, got.Provider, got.ProviderMessageID, c.reason, c.provider, c.pmid)
		}
	}
	// A later call's bounce finds the delivery delivered already.
	before := h.Get(t, earlier.ID)
	settle(t, h, event(earlier, delivery.Bounced, "e-0", now.Add(-time.Hour)))
	check(t, "a delivered delivery a later call's bounce came for", h.Get(t, earlier.ID), before)
}

// testOfNotification lists a notification's deliveries by id, without their content.
func testOfNotification(t *testing.T, setup func(t *testing.T) Harness) {
	h := setup(t)
	n := newID()
	var want []delivery.Delivery
	for _, sp := range []spec{
		{state: delivery.Queued, due: after(time.Minute), notification: n, channel: delivery.IOS},
		{state: delivery.Sent, attempts: 2, notification: n, channel: delivery.SMS, provider: "twilio", pmid: "SM1", sent: after(-time.Minute)},
		{state: delivery.Sending, attempts: 1, owner: worker, due: after(time.Minute), notification: n},
	} {
		want = append(want, read(seed(t, h, sp)))
	}
	seed(t, h, spec{state: delivery.Queued, due: after(time.Minute)})
	checkList(t, "OfNotification", ofNotification(t, h, n), sortByID(want))
}
