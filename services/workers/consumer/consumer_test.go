package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/consumer"
	"github.com/heraldhq/herald/services/workers/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// notifierMigrations are the notifier's migrations: the deliveries table is the contract
// between the two services. Applying the files with the notifier's own migration code keeps the
// workers module free of a dependency on the notifier module.
const notifierMigrations = "../../notifier/postgres/migrations"

// ch is the channel every test runs on.
const ch = delivery.Email

// waitLimit bounds every wait for a condition: generous, because a slow machine must not fail a
// test, and only reached when something is broken.
const waitLimit = 30 * time.Second

// fastPolicy retries at once, so that tests of retries take milliseconds.
var fastPolicy = workers.Policy{MaxAttempts: 3, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.DiscardHandler)
	if err := pgdb.Migrate(ctx, pool, "notifier", os.DirFS(notifierMigrations), log); err != nil {
		return err
	}
	return postgres.Migrate(ctx, pool, log)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// opCtx bounds one operation of a polling loop, which must not pile up cleanups.
func opCtx(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), 10*time.Second)
}

// script is how the fake provider answers for one delivery.
type script struct {
	// transient fails this many calls transiently before the provider accepts; -1 fails every
	// call.
	transient int
	// permanent, when set, fails every call permanently with this reason.
	permanent string
	// release, when set, holds every call until it is closed (or the send times out).
	release chan struct{}
}

// fakeSender is a provider whose answers are scripted per delivery; unscripted deliveries are
// accepted. It keeps every message it was handed.
type fakeSender struct {
	mu       sync.Mutex
	scripts  map[uuid.UUID]script
	calls    map[uuid.UUID][]workers.Message
	inFlight int
	maxIn    int
	held     int
}

var _ workers.Sender = (*fakeSender)(nil)

func newFakeSender() *fakeSender {
	return &fakeSender{scripts: map[uuid.UUID]script{}, calls: map[uuid.UUID][]workers.Message{}}
}

func (f *fakeSender) Provider() string { return "fake" }

func (f *fakeSender) script(id uuid.UUID, s script) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts[id] = s
}

func (f *fakeSender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	f.mu.Lock()
	s := f.scripts[m.DeliveryID]
	f.calls[m.DeliveryID] = append(f.calls[m.DeliveryID], *m)
	n := len(f.calls[m.DeliveryID])
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()

	if s.release != nil {
		f.mu.Lock()
		f.held++
		f.mu.Unlock()
		var err error
		select {
		case <-s.release:
		case <-ctx.Done():
			err = ctx.Err()
		}
		f.mu.Lock()
		f.held--
		f.mu.Unlock()
		if err != nil {
			return workers.Result{}, workers.Transient(0, err)
		}
	}
	switch {
	case s.permanent != "":
		return workers.Result{}, workers.Permanent(s.permanent, errors.New("fake: refused"))
	case s.transient < 0 || n <= s.transient:
		return workers.Result{}, workers.Transient(0, errors.New("fake: unavailable"))
	}
	return workers.Result{ProviderMessageID: fmt.Sprintf("fake-%s-%d", m.DeliveryID, n)}, nil
}

// sent returns the messages the fake was handed for id.
func (f *fakeSender) sent(id uuid.UUID) []workers.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workers.Message(nil), f.calls[id]...)
}

// holding returns how many calls are held waiting for their release.
func (f *fakeSender) holding() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *fakeSender) maxInFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxIn
}

// spyStore is the real store, with every claim answer kept for the test to look at.
type spyStore struct {
	workers.Store
	mu      sync.Mutex
	answers []workers.Claim
}

var _ workers.Store = (*spyStore)(nil)

func (s *spyStore) Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]workers.Claim, error) {
	claims, err := s.Store.Claim(ctx, worker, lease, ids)
	s.mu.Lock()
	s.answers = append(s.answers, claims...)
	s.mu.Unlock()
	return claims, err
}

// answered reports whether some claim of id was answered with st.
func (s *spyStore) answered(id uuid.UUID, st workers.ClaimStatus) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.answers {
		if c.ID == id && c.Status == st {
			return true
		}
	}
	return false
}

// env is one test's PostgreSQL database and JetStream server, with the channel's stream.
type env struct {
	pool   *pgxpool.Pool
	store  *spyStore
	js     jetstream.JetStream
	sender *fakeSender
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := ctxT(t)
	url := pgtest.DB(t, "herald", migrate)
	pool, err := pgdb.Open(ctx, url, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return &env{pool: pool, store: &spyStore{Store: postgres.New(pool)}, js: js, sender: newFakeSender()}
}

// start starts a consumer on the test's channel with cfg, filled in with the test's sender and
// store, and returns a function that stops it. The consumer is stopped when the test ends if the
// test did not stop it.
func (e *env) start(t *testing.T, cfg consumer.Config) (stop func()) {
	t.Helper()
	cfg.Channel, cfg.Sender, cfg.Store, cfg.Log = ch, e.sender, e.store, testLogger()
	if cfg.WorkerID == "" {
		cfg.WorkerID = "worker-1"
	}
	if cfg.Policy.MaxAttempts == 0 {
		cfg.Policy = fastPolicy
	}
	c, err := consumer.Start(ctxT(t), e.js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(c.Stop) }
	t.Cleanup(stop)
	return stop
}

var content = delivery.Content{Subject: "Welcome", Text: "Hello there", HTML: "<p>Hello there</p>",
	Data: map[string]any{"k": "v"}}

// insert adds a queued delivery, in the shape the notifier writes it, and returns its id.
func (e *env) insert(t *testing.T) uuid.UUID {
	t.Helper()
	return e.insertExpiring(t, time.Hour)
}

func (e *env) insertExpiring(t *testing.T, ttl time.Duration) uuid.UUID {
	t.Helper()
	ctx := ctxT(t)
	id, nid := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	_, err := e.pool.Exec(ctx, `
		INSERT INTO notifier.notifications (id, app_id, category, priority, send_at, expires_at, created_at)
		VALUES ($1, $2, 'welcome', 'normal', now(), now() + $3::interval, now())`,
		nid, uuid.Must(uuid.NewV7()), ttl)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.pool.Exec(ctx, `
		INSERT INTO notifier.deliveries (id, notification_id, channel, address, category, priority,
			state, content, due_at, expires_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, 'welcome', 'normal', 'queued', $5, now() + interval '1 minute',
			now() + $6::interval, now(), now())`,
		id, nid, string(ch), "user-"+id.String()[:8]+"@example.com", content, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// publish puts delivery id on the channel's queue as the notifier does; n numbers the publishes
// of one delivery (see queue.MsgID).
func (e *env) publish(t *testing.T, id uuid.UUID, n int) {
	t.Helper()
	e.publishBody(t, []byte(id.String()), queue.MsgID(id, n))
}

func (e *env) publishBody(t *testing.T, body []byte, msgID string) {
	t.Helper()
	if _, err := e.js.Publish(ctxT(t), queue.Subject(ch), body, jetstream.WithMsgID(msgID)); err != nil {
		t.Fatal(err)
	}
}

// deliveryRow is what the tests look at in a delivery.
type deliveryRow struct {
	State, Reason, Provider, ProviderMessageID string
	Attempts                                   int
	LeaseOwner                                 *string
	Due                                        *time.Time
}

func (e *env) row(t *testing.T, id uuid.UUID) deliveryRow {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	var r deliveryRow
	err := e.pool.QueryRow(ctx, `SELECT state, reason, provider, provider_message_id, attempts,
			lease_owner, due_at
		FROM notifier.deliveries WHERE id = $1`, id).Scan(&r.State, &r.Reason, &r.Provider,
		&r.ProviderMessageID, &r.Attempts, &r.LeaseOwner, &r.Due)
	if err != nil {
		t.Fatalf("delivery %s: %v", id, err)
	}
	return r
}

// outcomes returns the attempt log of delivery id, as "attempt:outcome" in attempt order.
func (e *env) outcomes(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	rows, err := e.pool.Query(ctxT(t), `SELECT attempt || ':' || outcome FROM workers.attempts
		WHERE delivery_id = $1 ORDER BY attempt`, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds, and fails the test with cond's last word if it does not
// within waitLimit.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", waitLimit, what, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until delivery id is in state.
func (e *env) waitState(t *testing.T, id uuid.UUID, state delivery.State) {
	t.Helper()
	waitFor(t, fmt.Sprintf("delivery %s to be %s", id, state), func() (bool, string) {
		r := e.row(t, id)
		return r.State == string(state), fmt.Sprintf("%+v", r)
	})
}

func (e *env) consumerInfo(t *testing.T) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := opCtx(t)
	defer cancel()
	cons, err := e.js.Consumer(ctx, queue.Stream(ch), queue.Consumer(ch))
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// waitAnswered waits until every message on the channel is answered: nothing waits to be
// delivered, nothing delivered waits for its ack, and the work queue holds no message (it drops
// one when it is acked or terminated).
func (e *env) waitAnswered(t *testing.T) {
	t.Helper()
	waitFor(t, "every message to be acked", func() (bool, string) {
		ci, err := e.consumerInfo(t)
		if err != nil {
			return false, err.Error()
		}
		ctx, cancel := opCtx(t)
		defer cancel()
		stream, err := e.js.Stream(ctx, queue.Stream(ch))
		if err != nil {
			return false, err.Error()
		}
		si, err := stream.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return ci.NumAckPending == 0 && ci.NumPending == 0 && si.State.Msgs == 0,
			fmt.Sprintf("ack pending %d, pending %d, in stream %d", ci.NumAckPending, ci.NumPending, si.State.Msgs)
	})
}

func checkOutcomes(t *testing.T, e *env, id uuid.UUID, want ...string) {
	t.Helper()
	if got := e.outcomes(t, id); !slices.Equal(got, want) {
		t.Errorf("attempt log of %s = %q, want %q", id, got, want)
	}
}

func checkCalls(t *testing.T, e *env, id uuid.UUID, want int) []workers.Message {
	t.Helper()
	got := e.sender.sent(id)
	if len(got) != want {
		t.Errorf("provider called %d times for %s, want %d", len(got), id, want)
	}
	for i, m := range got {
		if m.Attempt != i+1 {
			t.Errorf("call %d for %s has attempt %d", i+1, id, m.Attempt)
		}
	}
	return got
}

func TestSendsQueuedDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	id := e.insert(t)
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Sent)
	e.waitAnswered(t)
	calls := checkCalls(t, e, id, 1)
	if len(calls) == 1 {
		m := calls[0]
		if m.DeliveryID != id || m.Channel != ch || m.To != "user-"+id.String()[:8]+"@example.com" ||
			m.Category != "welcome" || m.Priority != delivery.Normal || !reflect.DeepEqual(m.Content, content) ||
			m.ExpiresAt.Before(time.Now()) {
			t.Errorf("provider was handed %+v", m)
		}
	}
	r := e.row(t, id)
	if r.Provider != "fake" || r.ProviderMessageID != "fake-"+id.String()+"-1" || r.Attempts != 1 ||
		r.LeaseOwner != nil || r.Due != nil {
		t.Errorf("row = %+v", r)
	}
	checkOutcomes(t, e, id, "1:sent")
}

func TestRetriesTransientFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	id := e.insert(t)
	e.sender.script(id, script{transient: 1})
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Sent)
	e.waitAnswered(t)
	checkCalls(t, e, id, 2)
	if r := e.row(t, id); r.Attempts != 2 || r.ProviderMessageID != "fake-"+id.String()+"-2" {
		t.Errorf("row = %+v, want sent on attempt 2", r)
	}
	checkOutcomes(t, e, id, "1:retry", "2:sent")
}

func TestDeadAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	policy := workers.Policy{MaxAttempts: 4, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	e.start(t, consumer.Config{Policy: policy})
	id := e.insert(t)
	e.sender.script(id, script{transient: -1})
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Dead)
	e.waitAnswered(t)
	checkCalls(t, e, id, policy.MaxAttempts)
	if r := e.row(t, id); r.Attempts != policy.MaxAttempts || r.Reason != "provider_unavailable" || r.Due != nil {
		t.Errorf("row = %+v, want dead after %d attempts", r, policy.MaxAttempts)
	}
	checkOutcomes(t, e, id, "1:retry", "2:retry", "3:retry", "4:dead")
}

func TestPermanentFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	id := e.insert(t)
	e.sender.script(id, script{permanent: "bad_address"})
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Failed)
	e.waitAnswered(t)
	checkCalls(t, e, id, 1)
	if r := e.row(t, id); r.Attempts != 1 || r.Reason != "bad_address" || r.Due != nil {
		t.Errorf("row = %+v, want failed with reason bad_address after one attempt", r)
	}
	checkOutcomes(t, e, id, "1:failed")
}

// TestNothingToDo: messages for deliveries that need no send are acked without calling the
// provider.
func TestNothingToDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})

	unknown := uuid.Must(uuid.NewV7())
	expired := e.insertExpiring(t, -time.Second)
	sent := e.insert(t)
	if _, err := e.pool.Exec(ctxT(t), `UPDATE notifier.deliveries SET state = 'sent', due_at = NULL WHERE id = $1`, sent); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{unknown, expired, sent} {
		e.publish(t, id, 0)
	}
	e.publishBody(t, []byte("not a delivery id"), "malformed-1")

	e.waitAnswered(t)
	for _, id := range []uuid.UUID{unknown, expired, sent} {
		checkCalls(t, e, id, 0)
		checkOutcomes(t, e, id)
	}
	if r := e.row(t, expired); r.State != "expired" || r.Reason != "ttl" || r.Attempts != 0 {
		t.Errorf("expired delivery: row %+v, want expired (ttl) without attempts", r)
	}
	if r := e.row(t, sent); r.State != "sent" || r.Attempts != 0 {
		t.Errorf("sent delivery: row %+v, want untouched", r)
	}
}

// TestDuplicatePublish: a delivery published twice, as after a re-publish by the reconciler, is
// sent once, and both messages are answered.
func TestDuplicatePublish(t *testing.T) {
	t.Parallel()
	// A second message that finds the first in flight comes back after the lease (and a second),
	// so the lease is short; it still outlasts by far the few milliseconds from the first claim
	// to the second, and so does the send timeout, which ends a held send.
	cfg := consumer.Config{Concurrency: 4, Lease: 5 * time.Second, SendTimeout: 4 * time.Second}

	t.Run("back to back", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, cfg)
		id := e.insert(t)
		e.publish(t, id, 0)
		e.publish(t, id, 1)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	})

	t.Run("while the first is being sent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, cfg)
		id := e.insert(t)
		release := make(chan struct{})
		e.sender.script(id, script{release: release})
		e.publish(t, id, 0)
		waitFor(t, "the first send", func() (bool, string) {
			n := e.sender.holding()
			return n == 1, fmt.Sprintf("%d sends held", n)
		})
		e.publish(t, id, 1)
		waitFor(t, "the second message to find the delivery busy", func() (bool, string) {
			return e.store.answered(id, workers.Busy), e.row(t, id).State
		})
		close(release)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
		if !e.store.answered(id, workers.Done) {
			t.Error("the second message was answered without a claim finding the delivery done")
		}
	})

	t.Run("after it was sent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, cfg)
		id := e.insert(t)
		e.publish(t, id, 0)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		e.publish(t, id, 1)
		waitFor(t, "the second message to find the delivery done", func() (bool, string) {
			return e.store.answered(id, workers.Done), ""
		})
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	})
}

// TestStopWaitsForSends stops a consumer while provider calls are held: Stop returns only after
// they are released, with their outcomes recorded; deliveries not yet claimed stay queued and a
// new consumer finishes everything.
func TestStopWaitsForSends(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// An ack wait longer than any wait of the test: a message that the stopped consumer kept
	// without answering would come back only after it, and fail the test.
	cfg := consumer.Config{Concurrency: 3, Lease: time.Minute, SendTimeout: 30 * time.Second, AckWait: 10 * time.Minute}
	stop := e.start(t, cfg)

	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the consumer's stop, should the test end early
	held := []uuid.UUID{e.insert(t), e.insert(t), e.insert(t)}
	e.sender.script(held[0], script{release: release})
	e.sender.script(held[1], script{release: release, permanent: "bad_address"})
	e.sender.script(held[2], script{release: release, transient: 1})
	for _, id := range held {
		e.publish(t, id, 0)
	}
	waitFor(t, "every send slot to be held", func() (bool, string) {
		n := e.sender.holding()
		return n == len(held), fmt.Sprintf("%d sends held", n)
	})
	// More than the consumer can take while its slots are held.
	waiting := []uuid.UUID{e.insert(t), e.insert(t)}
	for _, id := range waiting {
		e.publish(t, id, 0)
	}
	// Every message has reached the consumer: those it cannot take are in its buffer.
	waitFor(t, "every message to be delivered to the consumer", func() (bool, string) {
		ci, err := e.consumerInfo(t)
		if err != nil {
			return false, err.Error()
		}
		n := len(held) + len(waiting)
		return ci.NumAckPending == n && ci.NumPending == 0,
			fmt.Sprintf("ack pending %d, pending %d", ci.NumAckPending, ci.NumPending)
	})

	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned while provider calls were in flight")
	case <-time.After(200 * time.Millisecond): // a chance to return early, if it were broken
	}
	releaseAll()
	select {
	case <-stopped:
	case <-time.After(waitLimit):
		t.Fatalf("Stop did not return within %v of the sends' release", waitLimit)
	}

	// Every outcome is recorded by the time Stop returns.
	for id, want := range map[uuid.UUID]string{held[0]: "sent", held[1]: "failed", held[2]: "retrying"} {
		if r := e.row(t, id); r.State != want || r.LeaseOwner != nil {
			t.Errorf("held delivery %s: row %+v, want %s", id, r, want)
		}
		checkOutcomes(t, e, id, map[string]string{"sent": "1:sent", "failed": "1:failed", "retrying": "1:retry"}[want])
	}
	// Nothing is left claimed: the others were either never claimed, or finished.
	for _, id := range waiting {
		if r := e.row(t, id); r.State != "queued" && r.State != "sent" {
			t.Errorf("waiting delivery %s: row %+v, want queued (or sent)", id, r)
		}
	}

	// A new consumer takes over what was handed back, without waiting for the ack wait to pass.
	cfg.WorkerID = "worker-2"
	e.start(t, cfg)
	for _, id := range append(held, waiting...) {
		want := delivery.Sent
		if id == held[1] {
			want = delivery.Failed
		}
		e.waitState(t, id, want)
	}
	e.waitAnswered(t)
	checkCalls(t, e, held[0], 1)
	checkCalls(t, e, held[1], 1)
	checkCalls(t, e, held[2], 2)
	checkOutcomes(t, e, held[2], "1:retry", "2:sent")
	for _, id := range waiting {
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	}
}

// TestManyDeliveries pushes a backlog through a small consumer: every delivery is sent exactly
// once, and no more provider calls than Concurrency are ever in flight.
func TestManyDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n, concurrency = 300, 4
	e.start(t, consumer.Config{Concurrency: concurrency, BatchSize: 16})
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.insert(t)
		if i%10 == 0 {
			e.sender.script(ids[i], script{transient: 1})
		}
	}
	for _, id := range ids {
		e.publish(t, id, 0)
	}
	waitFor(t, "every delivery to be sent", func() (bool, string) {
		ctx, cancel := opCtx(t)
		defer cancel()
		var left int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.deliveries WHERE state <> 'sent'`).Scan(&left)
		return err == nil && left == 0, fmt.Sprintf("%d not sent (err %v)", left, err)
	})
	e.waitAnswered(t)
	for i, id := range ids {
		want := 1
		if i%10 == 0 {
			want = 2
		}
		checkCalls(t, e, id, want)
	}
	if got := e.sender.maxInFlight(); got > concurrency {
		t.Errorf("%d provider calls in flight at once, want at most %d", got, concurrency)
	}
}
