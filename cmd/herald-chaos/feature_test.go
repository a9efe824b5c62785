package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/inbox"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	notifierpg "github.com/heraldhq/herald/services/notifier/postgres"
)

// featureDB returns a database with the delivery and inbox schemas.
func featureDB(t *testing.T) *pgxpool.Pool {
	url := pgtest.DB(t, "chaos_features", func(ctx context.Context, url string) error {
		pool, err := pgdb.Open(ctx, url, 2)
		if err != nil {
			return err
		}
		defer pool.Close()
		log := slog.New(slog.DiscardHandler)
		if err := deliverypg.Migrate(ctx, pool, log); err != nil {
			return err
		}
		if err := notifierpg.Migrate(ctx, pool, log); err != nil {
			return err
		}
		return inboxpg.Migrate(ctx, pool, log)
	})
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func testDelivery(ch delivery.Channel, to string, st delivery.State) delivery.Delivery {
	now := time.Now()
	return delivery.Delivery{ID: uuid.Must(uuid.NewV7()), NotificationID: uuid.Must(uuid.NewV7()), Channel: ch,
		To: to, Category: "account", Priority: delivery.Normal, State: st, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
}

// TestCheckInbox: an acknowledged inbox delivery counts as stored when its user's inbox holds
// it and it is terminal; one sent and not stored, stored for another user, or not terminal is
// lost; one failed is terminal for a reason of its own; a message that no acknowledged send
// asked for is a stray; and the unread counts are summed over the inbox users.
func TestCheckInbox(t *testing.T) {
	db := featureDB(t)
	store := deliverypg.New(db)
	t.Cleanup(store.Close)
	box := inboxpg.New(db)

	alice, bob := inboxUser(0), inboxUser(chainEvery)
	h := newHistory(nil)
	var ds []delivery.Delivery
	stored := func(d delivery.Delivery, user string) {
		if _, err := box.Deliver(t.Context(), &inbox.Message{ID: d.ID, UserID: user, NotificationID: d.NotificationID,
			Category: "account", Title: "t", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		state          delivery.State
		user, storedAs string // storedAs "" for not stored
	}{
		{delivery.Sent, alice, alice},  // stored
		{delivery.Delivered, bob, bob}, // stored, and read (opened)
		{delivery.Sent, alice, ""},     // lost: sent, never stored
		{delivery.Sent, alice, bob},    // lost: stored for someone else
		{delivery.Queued, alice, ""},   // lost: never terminal
		{delivery.Failed, alice, ""},   // terminal for a reason of its own
	} {
		d := testDelivery(delivery.Inbox, tc.user, tc.state)
		ds = append(ds, d)
		h.inbox[d.ID.String()] = tc.user
		if tc.storedAs != "" {
			stored(d, tc.storedAs)
		}
	}
	unasked := testDelivery(delivery.Inbox, bob, delivery.Sent) // an unknown send's
	ds = append(ds, unasked)
	stored(unasked, bob)
	h.inbox[uuid.Must(uuid.NewV7()).String()] = alice // acknowledged, no row at all
	if err := store.Create(t.Context(), ds); err != nil {
		t.Fatal(err)
	}

	p := &phase{db: db, h: h, log: t.Logf, unread: box.UnreadCount}
	v := &verdict{lostStates: map[string]int64{}, terminalFailed: map[string]int64{}}
	if err := p.checkInbox(t.Context(), v); err != nil {
		t.Fatal(err)
	}
	if v.inboxSent != 7 || v.inboxStored != 2 || v.lost != 4 || v.terminalFailed["inbox failed"] != 1 {
		t.Errorf("sent %d, stored %d, lost %d (%v), failed %v; want 7, 2, 4, 1", v.inboxSent, v.inboxStored, v.lost, v.lostStates, v.terminalFailed)
	}
	if v.lostStates["inbox missing"] != 1 || v.lostStates["inbox queued"] != 1 || v.lostStates["inbox sent"] != 2 {
		t.Errorf("lost states %v, want inbox missing=1 queued=1 sent=2", v.lostStates)
	}
	if v.inboxExtra != 1 || v.strays != 1 || v.inboxRows != 4 || v.inboxUnread != 4 {
		t.Errorf("extra %d, strays %d, rows %d, unread %d; want 1, 1, 4, 4", v.inboxExtra, v.strays, v.inboxRows, v.inboxUnread)
	}
	if bad := v.violations(); len(bad) == 0 {
		t.Error("no violation for the lost inbox deliveries")
	}
}

// TestCheckDigests: an acknowledged item is done when it is DIGESTED in a closed digest whose
// delivery is terminal, and lost otherwise; the digests' deliveries join the tracker as
// acknowledged ones, so that a repeat is a duplicate and no receipt is a stray; a digest with
// two deliveries, or left open, is a violation.
func TestCheckDigests(t *testing.T) {
	db := featureDB(t)
	store := deliverypg.New(db)
	t.Cleanup(store.Close)
	ctx := t.Context()

	user := digestUser(0)
	to := user + "@example.com"
	app := uuid.Must(uuid.NewV7())
	// digest inserts a digest of user, and its delivery in the given state (none: "").
	digest := func(closed bool, st delivery.State) (uuid.UUID, *delivery.Delivery) {
		id := uuid.Must(uuid.NewV7())
		var d *delivery.Delivery
		var deliveryID *uuid.UUID
		if st != "" {
			dd := testDelivery(delivery.Email, to, st)
			dd.NotificationID = id
			if err := store.Create(ctx, []delivery.Delivery{dd}); err != nil {
				t.Fatal(err)
			}
			d, deliveryID = &dd, &dd.ID
		}
		if _, err := db.Exec(ctx, `INSERT INTO delivery.digests (id, app_id, user_id, category, channel, address, template,
			closed, close_at, created_at, delivery_id) VALUES ($1, $2, $3, 'account', 'email', $4, $5, $6, now(), now(), $7)`,
			id, app, user, to, digestTemplate, closed, deliveryID); err != nil {
			t.Fatal(err)
		}
		return id, d
	}
	sent, sentDelivery := digest(true, delivery.Sent)
	again, againDelivery := digest(true, delivery.Sent)
	pending, _ := digest(true, delivery.Queued)
	// a digest with a second delivery (the first is the one the digest names)
	double, _ := digest(true, delivery.Sent)
	second := testDelivery(delivery.Email, to, delivery.Sent)
	second.NotificationID = double
	open, _ := digest(false, "")

	h := newHistory(loopstack.NewTracker(time.Now()))
	var items []delivery.Delivery
	for _, tc := range []struct {
		state  delivery.State
		digest uuid.UUID
	}{
		{delivery.Digested, sent},
		{delivery.Digested, sent},
		{delivery.Digested, again},
		{delivery.Digested, double},
		{delivery.Digested, pending}, // lost: the digest's delivery is not terminal
		{delivery.Scheduled, open},   // lost: its digest never closed
	} {
		d := testDelivery(delivery.Email, to, tc.state)
		d.DigestID = tc.digest
		items = append(items, d)
		h.digestItems = append(h.digestItems, d.ID.String())
	}
	if err := store.Create(ctx, append(items, second)); err != nil {
		t.Fatal(err)
	}
	h.t.ReceiveID(sentDelivery.ID.String(), time.Now())
	h.t.ReceiveID(againDelivery.ID.String(), time.Now())
	h.t.ReceiveID(againDelivery.ID.String(), time.Now())

	p := &phase{db: db, h: h, log: t.Logf}
	v := &verdict{lostStates: map[string]int64{}, terminalFailed: map[string]int64{}}
	if err := p.checkDigests(ctx, v); err != nil {
		t.Fatal(err)
	}
	if v.digestItems != 6 || v.digestItemsDone != 4 || v.lost != 2 ||
		v.lostStates["digest item digested"] != 1 || v.lostStates["digest item scheduled"] != 1 {
		t.Errorf("items %d, done %d, lost %d (%v); want 6, 4, 2 (digested=1 scheduled=1)", v.digestItems, v.digestItemsDone, v.lost, v.lostStates)
	}
	if v.digests != 4 || v.digestsMulti != 1 || v.digestsOpen != 1 || v.digestsReceived != 2 || v.digestDuplicates != 1 {
		t.Errorf("digests %d, multi %d, open %d, received %d, again %d; want 4, 1, 1, 2, 1",
			v.digests, v.digestsMulti, v.digestsOpen, v.digestsReceived, v.digestDuplicates)
	}
	if h.t.Strays() != 0 || h.t.Queued.Load() != 4 {
		t.Errorf("strays %d, tracked %d after the check; want 0, 4", h.t.Strays(), h.t.Queued.Load())
	}
	v.lost, v.lostStates = 0, map[string]int64{}
	if msgs := v.violations(); len(msgs) != 2 {
		t.Errorf("violations %q, want the digest with two deliveries and the open one", msgs)
	}
}

// TestCheckTopics: a topic send counts as done from its row; each subscriber's deliveries are
// counted per channel (exactly one, none, more than one); the email deliveries join the tracker
// and the inbox ones the inbox check.
func TestCheckTopics(t *testing.T) {
	db := featureDB(t)
	store := deliverypg.New(db)
	t.Cleanup(store.Close)
	ctx := t.Context()

	send, app := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if _, err := db.Exec(ctx, `INSERT INTO notifier.topic_sends (id, app_id, topic, request, state, created_at)
		VALUES ($1, $2, $3, '{}', 'fanning_out', now())`, send, app, topicName); err != nil {
		t.Fatal(err)
	}
	var ds []delivery.Delivery
	for k, channels := range [][]delivery.Channel{
		{delivery.Email, delivery.Inbox},                 // one each
		{delivery.Email},                                 // the inbox missing
		{delivery.Email, delivery.Email, delivery.Inbox}, // two emails
	} {
		n := uuid.Must(uuid.NewV7())
		if _, err := db.Exec(ctx, `INSERT INTO notifier.notifications (id, app_id, category, user_id, priority, send_at,
			expires_at, created_at, topic_send_id) VALUES ($1, $2, 'account', $3, 'normal', now(), now() + interval '1h', now(), $4)`,
			n, app, topicUser(k), send); err != nil {
			t.Fatal(err)
		}
		for _, ch := range channels {
			d := testDelivery(ch, topicUser(k), delivery.Sent)
			d.NotificationID = n
			ds = append(ds, d)
		}
	}
	if err := store.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}

	h := newHistory(loopstack.NewTracker(time.Now()))
	h.topicSends = []string{send.String()}
	p := &phase{db: db, h: h, log: t.Logf}
	v := &verdict{lostStates: map[string]int64{}, terminalFailed: map[string]int64{}}
	if err := p.checkTopics(ctx, v); err != nil {
		t.Fatal(err)
	}
	if v.topicSends != 1 || v.topicDone != 0 || v.topicSubscribers != topicSubscribers || v.topicOnce != 4 ||
		v.topicMissing != 1+2*(topicSubscribers-3) || v.topicDoubled != 1 {
		t.Errorf("sends %d, done %d, subscribers %d, once %d, missing %d, doubled %d; want 1, 0, %d, 4, %d, 1", v.topicSends,
			v.topicDone, v.topicSubscribers, v.topicOnce, v.topicMissing, v.topicDoubled, topicSubscribers, 1+2*(topicSubscribers-3))
	}
	if len(h.inbox) != 2 || h.t.Queued.Load() != 4 {
		t.Errorf("inbox deliveries %d, tracked %d; want 2, 4", len(h.inbox), h.t.Queued.Load())
	}
	if msgs := v.violations(); len(msgs) != 2 {
		t.Errorf("violations %q, want the topic send not done, and the subscribers' deliveries", msgs)
	}
}
