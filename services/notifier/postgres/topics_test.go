package postgres_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/notifiertest"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// topicSend returns a topic send of app with its own notification, as SendToTopic makes them.
func topicSend(t *testing.T, app uuid.UUID, key string) (*notifier.Notification, *notifier.TopicSend) {
	t.Helper()
	n := notification(t, app, key)
	n.TopicSendID = n.ID
	ts := &notifier.TopicSend{ID: n.ID, AppID: app, Topic: "releases", State: notifier.TopicFanningOut, CreatedAt: t0,
		Request: &notifier.SendRequest{IdempotencyKey: key, RequestHash: []byte{1, 2, 3}, Category: "account",
			Channels: []delivery.Channel{delivery.Email, delivery.SMS}, Content: &notifier.Content{Subject: "Hi", Body: "There"},
			Data: map[string]any{"n": 1.5, "s": "x"}, Priority: delivery.High, TTL: time.Hour},
		Caller: appkey.Caller{AppID: app, AppName: "crm", AllowedCategories: []string{"account"}}}
	return n, ts
}

// TestTopicSendStore: a topic send is stored with its notification, once per idempotency key,
// and comes back as it was given; one owner at a time holds its lease, and only the holder,
// from the cursor it read, advances it; an expired lease is taken over with the cursor where
// the last committed page left it; a done topic send is claimed no more; its recipients'
// deliveries are counted by state.
func TestTopicSendStore(t *testing.T) {
	s, pool := open(t)
	ctx := t.Context()
	app := newID(t)
	n, ts := topicSend(t, app, "k1")
	if created, err := s.CreateTopicSend(ctx, n, ts); err != nil || !created {
		t.Fatalf("CreateTopicSend = %v, %v", created, err)
	}
	n2, ts2 := topicSend(t, app, "k1")
	if created, err := s.CreateTopicSend(ctx, n2, ts2); err != nil || created {
		t.Fatalf("CreateTopicSend with a used key = %v, %v; want not created", created, err)
	}
	if got := count(t, pool, `SELECT count(*) FROM notifier.topic_sends`); got != 1 {
		t.Fatalf("%d topic sends stored, want 1", got)
	}
	got, err := s.Notification(ctx, app, n.ID)
	if err != nil || got.TopicSendID != n.ID {
		t.Fatalf("the topic send's notification: %+v, %v", got, err)
	}
	back, err := s.TopicSend(ctx, n.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Request, ts.Request) || !reflect.DeepEqual(back.Caller, ts.Caller) || back.Topic != "releases" ||
		back.State != notifier.TopicFanningOut || back.Cursor != "" {
		t.Fatalf("stored %+v %+v\nread %+v %+v", ts.Request, ts.Caller, back.Request, back.Caller)
	}

	const lease = time.Minute
	a, err := s.ClaimTopicSend(ctx, "a", lease)
	if err != nil || a == nil || a.ID != n.ID {
		t.Fatalf("a's claim = %+v, %v", a, err)
	}
	if b, err := s.ClaimTopicSend(ctx, "b", lease); err != nil || b != nil {
		t.Fatalf("b's claim while a holds the lease = %+v, %v; want none", b, err)
	}
	page := notifier.TopicCounts{Recipients: 998, Skipped: 1, Failed: 1}
	for _, tc := range []struct {
		name, owner, from string
		ok                bool
	}{
		{"another owner", "b", "", false},
		{"from another cursor", "a", "elsewhere", false},
		{"the holder from its cursor", "a", "", true},
		{"the same page again", "a", "", false},
	} {
		from := *a
		from.Cursor = tc.from
		ok, err := s.AdvanceTopicSend(ctx, &from, tc.owner, "page2", page, false, lease)
		if err != nil || ok != tc.ok {
			t.Fatalf("%s: AdvanceTopicSend = %v, %v; want %v", tc.name, ok, err, tc.ok)
		}
	}
	a.Cursor = "page2"

	// a dies: its lease runs out (moved back in time here, rather than waited for).
	if _, err := pool.Exec(ctx, `UPDATE notifier.topic_sends SET lease_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	b, err := s.ClaimTopicSend(ctx, "b", lease)
	if err != nil || b == nil || b.Cursor != "page2" || b.Recipients != 998 || b.Skipped != 1 || b.Failed != 1 {
		t.Fatalf("b's claim of the expired lease = %+v, %v", b, err)
	}
	if ok, err := s.AdvanceTopicSend(ctx, a, "a", "page3", page, false, lease); err != nil || ok {
		t.Fatalf("a advanced after b took over: %v, %v", ok, err)
	}
	if ok, err := s.AdvanceTopicSend(ctx, b, "b", "", notifier.TopicCounts{Recipients: 2}, true, lease); err != nil || !ok {
		t.Fatalf("b's last page: %v, %v", ok, err)
	}
	if c, err := s.ClaimTopicSend(ctx, "c", lease); err != nil || c != nil {
		t.Fatalf("claim of a done topic send = %+v, %v", c, err)
	}

	// Two recipients' notifications: the deliveries of the topic send are counted by state.
	r1 := own(notification(t, app, notifier.RecipientKey(n.ID, "u1"), delivery.Queued, delivery.Skipped))
	r2 := own(notification(t, app, notifier.RecipientKey(n.ID, "u2"), delivery.Queued))
	other := own(notification(t, app, "", delivery.Queued))
	r1.TopicSendID, r2.TopicSendID = n.ID, n.ID
	if _, err := createAll(t, s, r1, r2, other); err != nil {
		t.Fatal(err)
	}
	done, err := s.TopicSend(ctx, n.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[delivery.State]int64{delivery.Queued: 2, delivery.Skipped: 1}
	if done.State != notifier.TopicDone || done.DoneAt == nil || done.Recipients != 1000 || !reflect.DeepEqual(done.Deliveries, want) {
		t.Fatalf("the done topic send: %+v, deliveries %v; want 1000 recipients and %v", done, done.Deliveries, want)
	}
	if got, err := s.Notification(ctx, app, r1.ID); err != nil || got.TopicSendID != n.ID {
		t.Fatalf("a recipient's notification: %+v, %v", got, err)
	}
}

// TestPruneTopicSends: retention deletes the done topic sends older than the cutoff whose own
// notification is gone, and no other; its statement reads the batch through the primary keys
// whatever the plan cache does, scanning no table.
func TestPruneTopicSends(t *testing.T) {
	_, pool := open(t)
	ctx := t.Context()
	const day = 24 * time.Hour
	now := time.Now()
	// n topic sends, one every ten minutes from 200 days ago: every tenth fanning out, every
	// seventh with its notification kept.
	const n = 3000
	tids := make([]uuid.UUID, n)
	states := make([]string, n)
	var kept []uuid.UUID
	for i := range n {
		tids[i] = ids.NewV7At(now.Add(-200*day + time.Duration(i)*10*time.Minute))
		states[i] = "done"
		if i%10 == 0 {
			states[i] = "fanning_out"
		}
		if i%7 == 0 {
			kept = append(kept, tids[i])
		}
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO notifier.topic_sends (id, app_id, topic, request, state, created_at)
		SELECT u.id, u.id, 'releases', '{}', u.state, now() FROM unnest($1::uuid[], $2::text[]) u(id, state)`, tids, states); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO notifier.notifications (id, app_id, category, priority, send_at, expires_at, created_at, topic_send_id)
		SELECT u.id, u.id, 'account', 'normal', now(), now(), now(), u.id FROM unnest($1::uuid[]) u(id)`, kept); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}

	cutoff := now.Add(-90 * day)
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		t.Run(mode, func(t *testing.T) {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `PREPARE prune_`+mode+`(uuid, uuid, int) AS `+postgres.PruneTopicSendsSQL); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(ctx, `EXPLAIN EXECUTE prune_`+mode+`('`+ids.FirstV7(now.Add(-150*day)).String()+`', '`+
				ids.FirstV7(cutoff).String()+`', 5000)`)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "Index Scan using topic_sends_pkey on topic_sends") ||
				strings.Contains(text, "Seq Scan") || strings.Contains(text, "Hash") || strings.Contains(text, "Merge") {
				t.Errorf("plan:\n%s\nwant topic_sends read through its primary key, and no table scanned", text)
			}
		})
	}

	var pruned int
	from := time.Time{}
	for {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, last, err := postgres.PruneTopicSends(ctx, tx, from, cutoff, 100)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		pruned += n
		if n < 100 {
			break
		}
		from = last
	}
	want := 0
	for i, id := range tids {
		old := ids.V7Time(id).Before(cutoff)
		if old && states[i] == "done" && i%7 != 0 {
			want++
		}
	}
	left := count(t, pool, `SELECT count(*) FROM notifier.topic_sends`)
	if pruned != want || left != n-want {
		t.Errorf("pruned %d topic sends, %d left; want %d pruned", pruned, left, want)
	}
	if got := count(t, pool, `SELECT count(*) FROM notifier.topic_sends WHERE id < $1 AND state = 'done'
		AND id NOT IN (SELECT id FROM notifier.notifications)`, ids.FirstV7(cutoff)); got != 0 {
		t.Errorf("%d prunable topic sends left", got)
	}
}

// TestTopicCancelStore: a canceled topic send, whether it was fanning out or done, is claimed
// and advanced no more; it ended when it was canceled, or still when it was done, and a second
// cancel changes nothing. Its recipients' notifications are paged through by id, its own left
// out, and their deliveries not yet being sent are canceled.
func TestTopicCancelStore(t *testing.T) {
	const lease = time.Minute
	canceledAt := t0.Add(time.Hour)
	for _, tc := range []struct {
		name string
		// before brings the claimed topic send to the state the cancel finds.
		before     func(t *testing.T, s *postgres.Store, ts *notifier.TopicSend)
		doneAt     func(before *notifier.TopicSend) *time.Time
		recipients int
	}{
		{name: "fanning out", before: func(*testing.T, *postgres.Store, *notifier.TopicSend) {},
			doneAt: func(*notifier.TopicSend) *time.Time { return &canceledAt }, recipients: 5},
		{name: "done", before: func(t *testing.T, s *postgres.Store, ts *notifier.TopicSend) {
			if ok, err := s.AdvanceTopicSend(t.Context(), ts, "a", "", notifier.TopicCounts{Recipients: 5}, true, lease); err != nil || !ok {
				t.Fatalf("the last page: %v, %v", ok, err)
			}
		}, doneAt: func(b *notifier.TopicSend) *time.Time { return b.DoneAt }, recipients: 5},
		{name: "canceled already", before: func(t *testing.T, s *postgres.Store, ts *notifier.TopicSend) {
			if err := s.CancelTopicSend(t.Context(), ts.ID, canceledAt); err != nil {
				t.Fatal(err)
			}
		}, doneAt: func(*notifier.TopicSend) *time.Time { return &canceledAt }, recipients: 5},
		{name: "no recipients", before: func(*testing.T, *postgres.Store, *notifier.TopicSend) {},
			doneAt: func(*notifier.TopicSend) *time.Time { return &canceledAt }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, pool := open(t)
			ctx := t.Context()
			app := newID(t)
			n, ts := topicSend(t, app, "k1")
			if _, err := s.CreateTopicSend(ctx, n, ts); err != nil {
				t.Fatal(err)
			}
			claimed, err := s.ClaimTopicSend(ctx, "a", lease)
			if err != nil || claimed == nil {
				t.Fatalf("claim = %+v, %v", claimed, err)
			}
			// Each recipient has one delivery queued and one a worker holds; another
			// notification of the app stands for the rest of the table.
			var recipients []uuid.UUID
			for i := range tc.recipients {
				r := notification(t, app, notifier.RecipientKey(n.ID, fmt.Sprint("u", i)), delivery.Queued, delivery.Sending)
				r.TopicSendID = n.ID
				if _, err := createAll(t, s, r); err != nil {
					t.Fatal(err)
				}
				recipients = append(recipients, r.ID)
			}
			other := notification(t, app, "", delivery.Queued)
			if _, err := createAll(t, s, other); err != nil {
				t.Fatal(err)
			}
			tc.before(t, s, claimed)
			before, err := s.TopicSend(ctx, n.ID, false)
			if err != nil {
				t.Fatal(err)
			}

			for i := range 2 { // the second cancel, a minute later, changes nothing
				if err := s.CancelTopicSend(ctx, n.ID, canceledAt.Add(time.Duration(i)*time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.TopicSend(ctx, n.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != notifier.TopicCanceled || !sameTime(got.DoneAt, tc.doneAt(before)) {
				t.Errorf("after the cancel: state %s, ended %v; want canceled, ended %v", got.State, got.DoneAt, tc.doneAt(before))
			}
			if c, err := s.ClaimTopicSend(ctx, "b", lease); err != nil || c != nil {
				t.Errorf("claim of a canceled topic send = %+v, %v", c, err)
			}
			if ok, err := s.AdvanceTopicSend(ctx, got, "a", "next", notifier.TopicCounts{Recipients: 1}, false, lease); err != nil || ok {
				t.Errorf("advance of a canceled topic send = %v, %v", ok, err)
			}

			// Paged two at a time: every recipient once, in id order, and nothing else.
			var listed []uuid.UUID
			after := uuid.Nil
			for {
				page, err := s.TopicRecipients(ctx, n.ID, after, 2)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > 0 {
					if _, err := s.CancelNotifications(ctx, page, canceledAt); err != nil {
						t.Fatal(err)
					}
				}
				listed = append(listed, page...)
				if len(page) < 2 {
					break
				}
				after = page[len(page)-1]
			}
			slices.SortFunc(recipients, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
			if !slices.Equal(listed, recipients) {
				t.Errorf("recipients paged %v, want %v", listed, recipients)
			}
			for _, tc := range []struct {
				state string
				want  int
			}{{"canceled", tc.recipients}, {"sending", tc.recipients}, {"queued", 1}} {
				if got := count(t, pool, `SELECT count(*) FROM delivery.deliveries WHERE state = $1`, tc.state); got != tc.want {
					t.Errorf("%d deliveries %s, want %d", got, tc.state, tc.want)
				}
			}
		})
	}
}

// TestTopicCancelRacesAdvance: a cancel and the advance of a page committed meanwhile, let go
// at once on the topic send's row: whichever wins, a page whose advance succeeded is among the
// recipients the cancel pages through afterwards, and one whose advance failed finds the topic
// send canceled (so that its fan-out cancels the page itself).
func TestTopicCancelRacesAdvance(t *testing.T) {
	const lease = time.Minute
	s, pool := open(t)
	ctx := t.Context()
	app := newID(t)
	outcomes := map[bool]int{}
	for round := range 10 {
		n, ts := topicSend(t, app, fmt.Sprint("k", round))
		if _, err := s.CreateTopicSend(ctx, n, ts); err != nil {
			t.Fatal(err)
		}
		claimed, err := s.ClaimTopicSend(ctx, "a", lease)
		if err != nil || claimed == nil || claimed.ID != n.ID {
			t.Fatalf("round %d: claim = %+v, %v", round, claimed, err)
		}
		page := notification(t, app, notifier.RecipientKey(n.ID, "u"), delivery.Queued)
		page.TopicSendID = n.ID
		if _, err := createAll(t, s, page); err != nil {
			t.Fatal(err)
		}

		// The row is held while both start, so that both wait on its lock.
		hold, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, `SELECT 1 FROM notifier.topic_sends WHERE id = $1 FOR UPDATE`, n.ID); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var advanced bool
		var advanceErr, cancelErr error
		var listed []uuid.UUID
		wg.Go(func() {
			advanced, advanceErr = s.AdvanceTopicSend(ctx, claimed, "a", "", notifier.TopicCounts{Recipients: 1}, true, lease)
		})
		wg.Go(func() {
			if cancelErr = s.CancelTopicSend(ctx, n.ID, t0); cancelErr == nil {
				listed, cancelErr = s.TopicRecipients(ctx, n.ID, uuid.Nil, 10)
			}
		})
		for deadline := time.Now().Add(time.Minute); ; { // bounds a broken run; not a timing assertion
			if count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the advance and the cancel never both waited on the row")
			}
			time.Sleep(time.Millisecond)
		}
		if err := hold.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if advanceErr != nil || cancelErr != nil {
			t.Fatalf("round %d: advance %v, cancel %v", round, advanceErr, cancelErr)
		}
		outcomes[advanced]++
		got, err := s.TopicSend(ctx, n.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != notifier.TopicCanceled {
			t.Errorf("round %d: state %s after the cancel, want canceled", round, got.State)
		}
		if advanced && !slices.Equal(listed, []uuid.UUID{page.ID}) {
			t.Errorf("round %d: the advance won but the cancel paged %v, want the page's %v", round, listed, page.ID)
		}
	}
	t.Logf("advance won %d rounds, the cancel %d", outcomes[true], outcomes[false])
}

// hookPublisher takes every message, and calls on (if set) with the number of each call.
type hookPublisher struct {
	calls atomic.Int32
	on    func(call int)
}

var _ notifier.Publisher = (*hookPublisher)(nil)

func (p *hookPublisher) Publish(context.Context, map[delivery.Channel][]uuid.UUID) error {
	call := p.calls.Add(1)
	if p.on != nil {
		p.on(int(call))
	}
	return nil
}

// everyone knows every user, each with an email address.
type everyone struct{}

func (everyone) Resolve(_ context.Context, ids []string, _ []notifier.Target) (*notifier.Recipients, error) {
	out := &notifier.Recipients{Users: map[string]notifier.User{}}
	for _, id := range ids {
		out.Users[id] = notifier.User{ID: id, Email: id + "@example.com"}
	}
	return out, nil
}

// TestTopicCancelFanOut runs the fan-out on the real store and cancels the topic send in the
// middle of it: before a page is committed (the cancel's paging misses it; the page's failed
// advance cancels it), after a page is committed and before its advance (the cancel's paging
// cancels it), and once it is done (twice). In each, the fan-out stops at the cancel's page,
// every recipient's deliveries end canceled (no worker took any), none stays queued, and
// GetNotification shows the topic send canceled with its deliveries counted.
func TestTopicCancelFanOut(t *testing.T) {
	const subscribers, pageSize = 50, 10
	for _, tc := range []struct {
		name string
		// When to cancel: at a subscriber page (its token), at a publish (its number), or, with
		// neither, once the fan-out is done.
		page    string
		publish int
		// recipients is how many subscribers got their notification before the fan-out stopped.
		recipients int
	}{
		{name: "before the third page is committed", page: "20", recipients: 30},
		{name: "after the second page is committed, before its advance", publish: 2, recipients: 20},
		{name: "once done", recipients: subscribers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, pool := open(t)
			ctx := t.Context()
			pub := &hookPublisher{}
			svc := newSender(t, s, deliveryStore(t, pool), pub, func() time.Time { return t0 })
			svc.Directory = everyone{}
			subs := &notifiertest.Subscribers{}
			for i := range subscribers {
				subs.IDs = append(subs.IDs, fmt.Sprintf("u%02d", i))
			}
			topics := notifier.NewTopics(notifier.Topics{Sender: svc, Store: s, Subscribers: subs, Log: svc.Log,
				Owner: "a", PageSize: pageSize, Interval: time.Millisecond})
			caller := appkey.Caller{AppID: newID(t), AppName: "crm"}
			res, err := topics.SendToTopic(ctx, caller, "releases", &notifier.SendRequest{IdempotencyKey: "release-2.0",
				RequestHash: []byte("h"), Category: "account", Content: &notifier.Content{Subject: "Hi", Body: "2.0 is out"}})
			if err != nil {
				t.Fatal(err)
			}
			id := res.Notification.ID
			// The hooks run in the fan-out's goroutines, the last case's cancels in the test's.
			var cancels, returned atomic.Int32
			cancel := func() {
				cancels.Add(1)
				if _, err := topics.CancelNotification(ctx, caller, id); err != nil {
					t.Errorf("CancelNotification: %v", err)
				}
				returned.Add(1)
			}
			// The hooks run in the fan-out, so the cancel comes exactly where the case puts it.
			subs.Before = func(page string) error {
				if tc.page != "" && page == tc.page && cancels.Load() == 0 {
					cancel()
				}
				return nil
			}
			pub.on = func(call int) {
				if call == tc.publish && cancels.Load() == 0 {
					cancel()
				}
			}

			runCtx, stop := context.WithCancel(ctx)
			ran := make(chan struct{})
			go func() {
				topics.Run(runCtx)
				close(ran)
			}()
			recipientsSQL := `SELECT count(*) FROM notifier.notifications WHERE topic_send_id = $1 AND id <> $1`
			unsentSQL := `SELECT count(*) FROM delivery.deliveries d JOIN notifier.notifications n ON n.id = d.notification_id
				WHERE n.topic_send_id = $1 AND d.state <> 'canceled'`
			for deadline := time.Now().Add(time.Minute); ; { // bounds a broken run; not a timing assertion
				ts, err := s.TopicSend(ctx, id, false)
				if err != nil {
					t.Fatal(err)
				}
				if ts.State == notifier.TopicDone && tc.page == "" && tc.publish == 0 {
					cancel()
					cancel()
					continue
				}
				if ts.State == notifier.TopicCanceled && returned.Load() == cancels.Load() &&
					count(t, pool, recipientsSQL, id) == tc.recipients &&
					count(t, pool, unsentSQL, id) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not stopped after a minute: %+v, %d recipients, %d deliveries not canceled", ts,
						count(t, pool, recipientsSQL, id), count(t, pool, unsentSQL, id))
				}
				time.Sleep(5 * time.Millisecond)
			}
			stop()
			<-ran

			// Once the fan-out is gone: nothing more was made, nothing left queued.
			if got := count(t, pool, recipientsSQL, id); got != tc.recipients {
				t.Errorf("%d recipients, want %d", got, tc.recipients)
			}
			if got := count(t, pool, unsentSQL, id); got != 0 {
				t.Errorf("%d recipients' deliveries not canceled", got)
			}
			if got := count(t, pool, `SELECT count(*) FROM delivery.deliveries WHERE state = 'queued'`); got != 0 {
				t.Errorf("%d deliveries queued", got)
			}
			if c, err := s.ClaimTopicSend(ctx, "b", time.Minute); err != nil || c != nil {
				t.Errorf("claim after the cancel = %+v, %v", c, err)
			}
			n, err := topics.GetNotification(ctx, caller, id)
			if err != nil {
				t.Fatal(err)
			}
			want := map[delivery.State]int64{delivery.Canceled: int64(tc.recipients)}
			if n.Topic == nil || n.Topic.State != notifier.TopicCanceled || !reflect.DeepEqual(n.Topic.Deliveries, want) {
				t.Errorf("GetNotification's topic send %+v, want canceled with deliveries %v", n.Topic, want)
			}
		})
	}
}
