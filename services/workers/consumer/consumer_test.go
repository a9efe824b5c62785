package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/consumer"
	wevents "github.com/heraldhq/herald/services/workers/events"
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

// logBuffer keeps what a consumer logged, for a test to look at.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.Lines(b.buf.String()) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			out = append(out, line)
		}
	}
	return out
}

// logger logs to b, and to stderr too when the tests are verbose.
func (b *logBuffer) logger() *slog.Logger {
	var w io.Writer = b
	if testing.Verbose() {
		w = io.MultiWriter(b, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
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
	// retryAfter is the wait the transient failures ask for (a 429's Retry-After).
	retryAfter time.Duration
	// permanent, when set, fails every call permanently with this reason.
	permanent string
	// config fails every call with a configuration error (credentials refused).
	config bool
	// release, when set, holds every call until it is closed (or the send times out).
	release chan struct{}
	// err, when set, fails the first call with it; providerID, when set, is the message id the
	// provider answers when it accepts.
	err        error
	providerID string
}

// call is one call the fake provider got.
type call struct {
	id         uuid.UUID
	attempt    int
	start, end time.Time
	err        error
}

// fakeSender is a provider whose answers are scripted per delivery; unscripted deliveries are
// accepted. It keeps every message it was handed.
type fakeSender struct {
	mu       sync.Mutex
	scripts  map[uuid.UUID]script
	fallback script // for deliveries without a script of their own
	calls    map[uuid.UUID][]workers.Message
	log      []call
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

// setFallback scripts every delivery that has no script of its own.
func (f *fakeSender) setFallback(s script) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fallback = s
}

func (f *fakeSender) Send(ctx context.Context, m *workers.Message) (res workers.Result, err error) {
	start := time.Now()
	defer func() {
		end := time.Now()
		f.mu.Lock()
		f.log = append(f.log, call{id: m.DeliveryID, attempt: m.Attempt, start: start, end: end, err: err})
		f.mu.Unlock()
	}()
	f.mu.Lock()
	s, ok := f.scripts[m.DeliveryID]
	if !ok {
		s = f.fallback
	}
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
	case s.err != nil && n == 1:
		return workers.Result{}, s.err
	case s.providerID != "" && n > 1:
		return workers.Result{ProviderMessageID: s.providerID}, nil
	case s.config:
		return workers.Result{}, workers.Misconfigured(errors.New("fake: credentials refused"))
	case s.permanent != "":
		return workers.Result{}, workers.Permanent(s.permanent, errors.New("fake: refused"))
	case s.transient < 0 || n <= s.transient:
		return workers.Result{}, workers.Transient(s.retryAfter, errors.New("fake: unavailable"))
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

// busy returns how many calls are in flight.
func (f *fakeSender) busy() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inFlight
}

// callLog returns the calls that have returned, in the order they returned; with ids, only
// the calls for those deliveries.
func (f *fakeSender) callLog(ids ...uuid.UUID) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.log {
		if len(ids) == 0 || slices.Contains(ids, c.id) {
			out = append(out, c)
		}
	}
	return out
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
	_, stop = e.startConsumer(t, cfg)
	return stop
}

// startConsumer is start, which also returns the consumer.
func (e *env) startConsumer(t *testing.T, cfg consumer.Config) (c *consumer.Consumer, stop func()) {
	t.Helper()
	cfg.Channel, cfg.Sender, cfg.Store = ch, e.sender, e.store
	if cfg.Log == nil {
		cfg.Log = testLogger()
	}
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
	return c, stop
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

// attemptStarts returns when each attempt of delivery id started, in attempt order.
func (e *env) attemptStarts(t *testing.T, id uuid.UUID) []time.Time {
	t.Helper()
	rows, err := e.pool.Query(ctxT(t), `SELECT started_at FROM workers.attempts WHERE delivery_id = $1
		ORDER BY attempt`, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// attemptCount returns how many attempts are recorded, for every delivery.
func (e *env) attemptCount(t *testing.T) int {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM workers.attempts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitSent waits until every one of ids is sent.
func (e *env) waitSent(t *testing.T, ids []uuid.UUID) {
	t.Helper()
	waitFor(t, "every delivery to be sent", func() (bool, string) {
		ctx, cancel := opCtx(t)
		defer cancel()
		var left int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.deliveries WHERE id = ANY($1) AND state <> 'sent'`,
			ids).Scan(&left)
		return err == nil && left == 0, fmt.Sprintf("%d not sent (err %v)", left, err)
	})
}

// deadLetters reads every dead-letter event on the events stream, waiting a little for more.
func (e *env) deadLetters(t *testing.T) []map[string]any {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	oc, err := e.js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Dead}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := oc.Fetch(100, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for msg := range batch.Messages() {
		var ev map[string]any
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("dead letter %q: %v", msg.Data(), err)
		}
		out = append(out, ev)
	}
	if err := batch.Error(); err != nil {
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

// TestDeadAfterMaxAttempts: a provider that fails forever turns the delivery dead after exactly
// the policy's attempts, with growing backoffs; the dead letter is announced once and logged,
// and the delivery is not tried again.
func TestDeadAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := events.Ensure(ctxT(t), e.js, 1); err != nil {
		t.Fatal(err)
	}
	// No jitter: each backoff is the policy's lower bound, and each is longer than the one
	// before by far more than the redelivery's noise.
	policy := workers.Policy{MaxAttempts: 5, BaseBackoff: 400 * time.Millisecond, MaxBackoff: 4 * time.Second}
	logs := &logBuffer{}
	e.start(t, consumer.Config{Policy: policy, Jitter: func() float64 { return 0 }, BreakerFailures: 100,
		Announcer: &wevents.Announcer{JS: e.js}, Log: logs.logger()})
	id := e.insert(t)
	e.sender.script(id, script{transient: -1})
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Dead)
	e.waitAnswered(t)
	checkCalls(t, e, id, policy.MaxAttempts)
	if r := e.row(t, id); r.Attempts != policy.MaxAttempts || r.Reason != "provider_unavailable" || r.Due != nil {
		t.Errorf("row = %+v, want dead after %d attempts", r, policy.MaxAttempts)
	}
	checkOutcomes(t, e, id, "1:retry", "2:retry", "3:retry", "4:retry", "5:dead")

	starts := e.attemptStarts(t, id)
	var prev time.Duration
	for k := 1; k < len(starts); k++ {
		gap, least := starts[k].Sub(starts[k-1]), policy.Backoff(k, 0, 0)
		// The column keeps microseconds.
		if gap < least-time.Microsecond {
			t.Errorf("attempt %d came %v after attempt %d, want at least %v", k+1, gap, k, least)
		}
		if gap < prev {
			t.Errorf("attempt %d came %v after attempt %d, sooner than the gap of %v before", k+1, gap, k, prev)
		}
		prev = gap
	}

	// A dead delivery's message is gone (waitAnswered): nothing can bring it back.
	time.Sleep(500 * time.Millisecond)
	checkCalls(t, e, id, policy.MaxAttempts)
	dead := e.deadLetters(t)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1: %v", len(dead), dead)
	}
	want := map[string]any{"delivery_id": id.String(), "channel": string(ch), "category": "welcome",
		"reason": "provider_unavailable"}
	for k, v := range want {
		if dead[0][k] != v {
			t.Errorf("dead letter %s = %v, want %v", k, dead[0][k], v)
		}
	}
	if _, ok := dead[0]["address"]; ok {
		t.Errorf("dead letter carries an address: %v", dead[0])
	}
	if got := logs.lines("level=WARN", `msg="dead letter"`, "delivery_id="+id.String(), "attempts=5",
		"reason=provider_unavailable"); len(got) != 1 {
		t.Errorf("dead letter logged %d times, want once: %q", len(got), got)
	}
}

// TestRetryAfter: a provider's Retry-After outweighs a shorter backoff.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{}) // fastPolicy: backoffs of 20 ms at most
	id := e.insert(t)
	const retryAfter = 2 * time.Second // a 429 with Retry-After: 2
	e.sender.script(id, script{transient: 1, retryAfter: retryAfter})
	e.publish(t, id, 0)

	e.waitState(t, id, delivery.Sent)
	e.waitAnswered(t)
	checkCalls(t, e, id, 2)
	checkOutcomes(t, e, id, "1:retry", "2:sent")
	calls := e.sender.callLog(id)
	if len(calls) == 2 {
		if gap := calls[1].start.Sub(calls[0].end); gap < retryAfter {
			t.Errorf("retried %v after the 429, want at least %v", gap, retryAfter)
		}
	}
	if starts := e.attemptStarts(t, id); len(starts) == 2 && starts[1].Sub(starts[0]) < retryAfter {
		t.Errorf("attempt 2 started %v after attempt 1, want at least %v", starts[1].Sub(starts[0]), retryAfter)
	}
}

// TestCircuitOpensOnTimeouts: a provider that stops answering opens the circuit after
// BreakerFailures failed calls; while it is open, no attempt is spent; once it answers again
// and the cooldown is over, one probe closes the circuit and every delivery is sent, each with
// no more attempts counted than provider calls made.
func TestCircuitOpensOnTimeouts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const failures, concurrency, sendTimeout, cooldown = 3, 2, 300 * time.Millisecond, 3 * time.Second
	c, _ := e.startConsumer(t, consumer.Config{Concurrency: concurrency, SendTimeout: sendTimeout, Lease: 5 * time.Second,
		BreakerFailures: failures, BreakerCooldown: cooldown,
		Policy: workers.Policy{MaxAttempts: 10, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	e.sender.setFallback(script{release: make(chan struct{})}) // never released: every call times out
	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = e.insert(t)
		e.publish(t, ids[i], 0)
	}

	waitFor(t, "the circuit to open", func() (bool, string) {
		s := c.CircuitState()
		return s == "open", s
	})
	waitFor(t, "the calls in flight to end and be recorded", func() (bool, string) {
		calls, rows := len(e.sender.callLog()), e.attemptCount(t)
		return e.sender.busy() == 0 && rows == calls, fmt.Sprintf("%d calls, %d attempts recorded", calls, rows)
	})
	// The circuit opened when the failures-th call ended, or later; no probe can start before
	// the cooldown has passed since.
	var ends []time.Time
	for _, cl := range e.sender.callLog() {
		ends = append(ends, cl.end)
	}
	slices.SortFunc(ends, time.Time.Compare)
	if len(ends) < failures {
		t.Fatalf("the circuit opened after %d calls, want %d failures", len(ends), failures)
	}
	noProbeBefore := ends[failures-1].Add(cooldown)

	before := e.attemptCount(t)
	time.Sleep(time.Second)
	after := e.attemptCount(t)
	if time.Now().Before(noProbeBefore) { // else a slow machine left no window to look at
		if after != before {
			t.Errorf("%d attempts recorded while the circuit was open", after-before)
		}
		if s := c.CircuitState(); s != "open" {
			t.Errorf("circuit %s during its cooldown", s)
		}
	}

	e.sender.setFallback(script{}) // the provider answers again
	e.waitSent(t, ids)
	e.waitAnswered(t)
	if s := c.CircuitState(); s != "closed" {
		t.Errorf("circuit %s after the deliveries went, want closed", s)
	}
	var early, firstOK int
	for i, cl := range e.sender.callLog() {
		if cl.start.Before(noProbeBefore) {
			early++
		}
		if cl.err == nil && firstOK == 0 {
			firstOK = i + 1
			if cl.start.Before(noProbeBefore) {
				t.Errorf("first call to succeed started %v before the cooldown could be over",
					noProbeBefore.Sub(cl.start))
			}
		}
	}
	if early > failures+concurrency-1 {
		t.Errorf("%d calls before the cooldown, want at most %d (the failures and the calls in flight)",
			early, failures+concurrency-1)
	}
	for _, id := range ids {
		calls := e.sender.sent(id)
		checkCalls(t, e, id, len(calls)) // attempts numbered 1, 2, ...: none was spent without a call
		if r := e.row(t, id); r.Attempts != len(calls) {
			t.Errorf("delivery %s: %d attempts counted for %d calls", id, r.Attempts, len(calls))
		}
	}
}

// holdingGate holds the first batch that holds delivery id until it is told to let go, past
// the consumer's own deadline for the check; it lets everything else through at once.
type holdingGate struct {
	id    uuid.UUID
	held  chan struct{} // closed when the batch is held
	letGo chan struct{}
	once  sync.Once
}

var _ workers.Gate = (*holdingGate)(nil)

func (g *holdingGate) Check(_ context.Context, msgs []*workers.Message) (map[uuid.UUID]string, error) {
	if !slices.ContainsFunc(msgs, func(m *workers.Message) bool { return m.DeliveryID == g.id }) {
		return nil, nil
	}
	hold := false
	g.once.Do(func() { hold = true })
	if hold {
		close(g.held)
		<-g.letGo
	}
	return nil, nil
}

// TestOpenCircuitGivesBackClaimed: a delivery claimed before the circuit opened, and about to
// be sent when it did, goes back unsent and unrecorded, its attempt not counted, and its message
// stays with JetStream. (The other tests see deliveries sent after the cooldown; this one's
// cooldown and send timeout outlast it, so that nothing here depends on timing.)
func TestOpenCircuitGivesBackClaimed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, second := e.insert(t), e.insert(t)
	gate := &holdingGate{id: second, held: make(chan struct{}), letGo: make(chan struct{})}
	var letGoOnce sync.Once
	letGo := func() { letGoOnce.Do(func() { close(gate.letGo) }) }
	t.Cleanup(letGo) // before the consumer's stop, should the test end early
	logs := &logBuffer{}
	c, _ := e.startConsumer(t, consumer.Config{Concurrency: 2, BreakerFailures: 1, BreakerCooldown: 10 * time.Minute,
		SendTimeout: 10 * time.Minute, Lease: 20 * time.Minute, Gate: gate, Log: logs.logger()})
	failing := make(chan struct{})
	e.sender.script(first, script{transient: 1, release: failing})

	e.publish(t, first, 0)
	waitFor(t, "the first send", func() (bool, string) {
		n := e.sender.holding()
		return n == 1, fmt.Sprintf("%d sends held", n)
	})
	e.publish(t, second, 0)
	select {
	case <-gate.held: // second is claimed, on its way to a sender
	case <-time.After(waitLimit):
		t.Fatal("the second delivery never reached the gate")
	}
	close(failing) // the first call fails, which opens the circuit before the failure is recorded
	waitFor(t, "the first failure to be recorded", func() (bool, string) {
		got := e.outcomes(t, first)
		return slices.Equal(got, []string{"1:retry"}), fmt.Sprint(got)
	})
	if s := c.CircuitState(); s != "open" {
		t.Fatalf("circuit %s after the failure, want open", s)
	}
	letGo()
	waitFor(t, "the second delivery to be given back", func() (bool, string) {
		lines := logs.lines(`msg="circuit open; giving the delivery back"`, "delivery_id="+second.String())
		r := e.row(t, second)
		return len(lines) == 1 && r.State == "queued" && r.LeaseOwner == nil, fmt.Sprintf("%+v, %q", r, lines)
	})
	if r := e.row(t, second); r.Attempts != 0 {
		t.Errorf("row = %+v, want no attempt counted", r)
	}
	checkCalls(t, e, second, 0)
	checkOutcomes(t, e, second)
	// Neither message was acked or terminated: both wait in the work queue for the circuit.
	ctx, cancel := opCtx(t)
	defer cancel()
	stream, err := e.js.Stream(ctx, queue.Stream(ch))
	if err != nil {
		t.Fatal(err)
	}
	si, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != 2 {
		t.Errorf("work queue holds %d messages, want 2", si.State.Msgs)
	}
}

// TestConfigErrorPausesChannel: a configuration error opens the circuit at once, gives the
// delivery back without counting the attempt, and says so in the log; once the credentials work
// again, the delivery goes, and so do the ones that came meanwhile.
func TestConfigErrorPausesChannel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const cooldown = time.Second
	logs := &logBuffer{}
	c, _ := e.startConsumer(t, consumer.Config{BreakerCooldown: cooldown, Log: logs.logger()})
	e.sender.setFallback(script{config: true})
	id := e.insert(t)
	e.publish(t, id, 0)

	waitFor(t, "the circuit to open", func() (bool, string) {
		s := c.CircuitState()
		return s == "open", s
	})
	waitFor(t, "the delivery to be given back", func() (bool, string) {
		r := e.row(t, id)
		return r.State == "queued" && r.LeaseOwner == nil, fmt.Sprintf("%+v", r)
	})
	if r := e.row(t, id); r.Attempts != 0 {
		t.Errorf("row = %+v, want no attempt counted", r)
	}
	checkOutcomes(t, e, id)
	if got := logs.lines("level=ERROR", `msg="provider configuration error; channel paused"`, "provider=fake",
		"fake: credentials refused"); len(got) == 0 {
		t.Error("the configuration error was not logged")
	}
	later := e.insert(t)
	e.publish(t, later, 0)

	e.sender.setFallback(script{})
	e.waitSent(t, []uuid.UUID{id, later})
	e.waitAnswered(t)
	if s := c.CircuitState(); s != "closed" {
		t.Errorf("circuit %s, want closed", s)
	}
	for _, m := range e.sender.sent(id) {
		if m.Attempt != 1 {
			t.Errorf("a call for %s had attempt %d: a configuration error was counted", id, m.Attempt)
		}
	}
	if r := e.row(t, id); r.Attempts != 1 {
		t.Errorf("row = %+v, want sent on attempt 1", r)
	}
	checkOutcomes(t, e, id, "1:sent")
	checkCalls(t, e, later, 1)
	checkOutcomes(t, e, later, "1:sent")
	calls := e.sender.callLog()
	for _, cl := range calls[1:] {
		// The circuit opened when the first call ended, or later.
		if cl.start.Before(calls[0].end.Add(cooldown)) {
			t.Errorf("a call started %v after the configuration error, before the cooldown of %v",
				cl.start.Sub(calls[0].end), cooldown)
		}
	}
}

// TestRateLimit: provider calls keep to the channel's rate.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n, burst, perSecond = 8, 2, 5.0
	e.start(t, consumer.Config{Concurrency: 4, RatePerSecond: perSecond, Burst: burst})
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.insert(t)
	}
	published := time.Now()
	for _, id := range ids {
		e.publish(t, id, 0)
	}
	e.waitSent(t, ids)
	e.waitAnswered(t)
	for _, id := range ids {
		checkCalls(t, e, id, 1)
	}

	var starts []time.Time
	for _, cl := range e.sender.callLog() {
		starts = append(starts, cl.start)
	}
	slices.SortFunc(starts, time.Time.Compare)
	tokens := func(k int) time.Duration { return time.Duration(float64(k) / perSecond * float64(time.Second)) }
	// The bucket held burst tokens when the first call took one, after the publish; every call
	// beyond them waited for a new token.
	if got, least := starts[n-1].Sub(published), tokens(n-burst); got < least {
		t.Errorf("%d calls within %v of the publish, want at least %v", n, got, least)
	}
	// The first call may be recorded a little after it took its token: allow it one.
	if got, least := starts[n-1].Sub(starts[0]), tokens(n-burst-1); got < least {
		t.Errorf("%d calls within %v, want at least %v", n, got, least)
	}
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
