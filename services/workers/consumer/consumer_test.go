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
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/consumer"
	wevents "github.com/heraldhq/herald/services/workers/events"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// ch is the channel every test runs on.
const ch = delivery.Email

// waitLimit bounds every wait for a condition: generous, because a slow machine must not fail a
// test, and only reached when something is broken.
const waitLimit = 30 * time.Second

// republishAfter is the test reconciler's deadline for queued deliveries, as in production: far
// beyond any test, so that its passes publish only what is due for another reason (a retry).
const republishAfter = time.Minute

// fastPolicy retries after a few milliseconds, so that tests of retries take no time.
var fastPolicy = workers.Policy{MaxAttempts: 3, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
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
	return deliverypg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
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
	// permanent, when set, fails every call permanently with this reason, and effect.
	permanent string
	effect    workers.Effect
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
	id  uuid.UUID
	err error
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

func (f *fakeSender) script(s script, ids ...uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.scripts[id] = s
	}
}

// setFallback scripts every delivery that has no script of its own.
func (f *fakeSender) setFallback(s script) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fallback = s
}

func (f *fakeSender) Send(ctx context.Context, m *workers.Message) (res workers.Result, err error) {
	defer func() {
		f.mu.Lock()
		f.log = append(f.log, call{id: m.DeliveryID, err: err})
		f.inFlight--
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
		return workers.Result{}, workers.PermanentWithEffect(s.permanent, s.effect, time.Time{}, errors.New("fake: refused"))
	case s.transient < 0 || n <= s.transient:
		return workers.Result{}, workers.Transient(s.retryAfter, errors.New("fake: unavailable"))
	}
	return workers.Result{ProviderMessageID: fmt.Sprintf("fake-%s-%d", m.DeliveryID, n)}, nil
}

// sent returns the messages the fake was handed for id.
func (f *fakeSender) sent(id uuid.UUID) []workers.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[id])
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

// callLog returns the calls that have returned, in the order they returned.
func (f *fakeSender) callLog() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// claimCall is one Claim the consumer made.
type claimCall struct {
	asked, got []uuid.UUID
	// circuit is the consumer's circuit state when it claimed.
	circuit string
}

// spyStore is the real store, with every claim kept for the test to look at.
type spyStore struct {
	workers.Store
	mu      sync.Mutex
	circuit func() string
	calls   []claimCall
}

var _ workers.Store = (*spyStore)(nil)

func (s *spyStore) Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error) {
	s.mu.Lock()
	state := ""
	if s.circuit != nil {
		state = s.circuit()
	}
	s.mu.Unlock()
	claimed, err := s.Store.Claim(ctx, worker, lease, ids)
	c := claimCall{asked: slices.Clone(ids), circuit: state}
	for _, d := range claimed {
		c.got = append(c.got, d.ID)
	}
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	return claimed, err
}

func (s *spyStore) watch(circuit func() string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.circuit = circuit
}

// claims returns the claims made so far.
func (s *spyStore) claims() []claimCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// asked returns how many times the consumer asked to claim id.
func (s *spyStore) asked(id uuid.UUID) int {
	n := 0
	for _, c := range s.claims() {
		for _, a := range c.asked {
			if a == id {
				n++
			}
		}
	}
	return n
}

// env is one test's PostgreSQL database and JetStream server, with the channel's stream.
type env struct {
	pool   *pgxpool.Pool
	pg     *deliverypg.Store
	store  *spyStore
	nc     *nats.Conn
	js     jetstream.JetStream
	sender *fakeSender
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := ctxT(t)
	url := pgtest.DB(t, "delivery", migrate)
	pool, err := pgdb.Open(ctx, url, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	pg := deliverypg.New(pool)
	t.Cleanup(pg.Close)
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
	return &env{pool: pool, pg: pg, store: &spyStore{Store: pg}, nc: nc, js: js, sender: newFakeSender()}
}

// start starts a consumer on the test's channel with cfg, filled in with the test's sender and
// store, and returns it with a function that stops it. The consumer is stopped when the test
// ends if the test did not stop it.
func (e *env) start(t *testing.T, cfg consumer.Config) (c *consumer.Consumer, stop func()) {
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
	e.store.watch(c.CircuitState)
	var once sync.Once
	stop = func() { once.Do(c.Stop) }
	t.Cleanup(stop)
	return c, stop
}

var content = delivery.Content{Subject: "Welcome", Text: "Hello there", HTML: "<p>Hello there</p>",
	Data: map[string]any{"k": "v"}}

// address returns the address of the test delivery id.
func address(id uuid.UUID) string { return "user-" + id.String()[:8] + "@example.com" }

// create stores n queued deliveries through the store, in the shape the notifier creates them,
// each changed by the options, and returns their ids.
func (e *env) create(t *testing.T, n int, options ...func(*delivery.Delivery)) []uuid.UUID {
	t.Helper()
	now := time.Now()
	ds := make([]delivery.Delivery, n)
	ids := make([]uuid.UUID, n)
	for i := range ds {
		id := uuid.Must(uuid.NewV7())
		ids[i] = id
		ds[i] = delivery.Delivery{ID: id, NotificationID: uuid.Must(uuid.NewV7()), UserID: "user-" + id.String()[:8],
			Channel: ch, To: address(id), Category: "welcome", Priority: delivery.Normal, DefaultOptIn: true,
			State: delivery.Queued, Content: content, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
		for _, o := range options {
			o(&ds[i])
		}
		due := now.Add(republishAfter)
		if ds[i].ExpiresAt.Before(due) {
			due = ds[i].ExpiresAt
		}
		ds[i].DueAt = &due
	}
	if err := e.pg.Create(ctxT(t), ds); err != nil {
		t.Fatal(err)
	}
	return ids
}

// create1 is create of one delivery.
func (e *env) create1(t *testing.T, options ...func(*delivery.Delivery)) uuid.UUID {
	t.Helper()
	return e.create(t, 1, options...)[0]
}

// publish puts ids on the channel's queue as one message, as the notifier does, and returns its
// stream sequence.
func (e *env) publish(t *testing.T, ids ...uuid.UUID) uint64 {
	t.Helper()
	return e.publishBody(t, queue.EncodeBatch(ids))
}

func (e *env) publishBody(t *testing.T, body []byte) uint64 {
	t.Helper()
	ack, err := e.js.Publish(ctxT(t), queue.Subject(ch), body, jetstream.WithMsgID(uuid.Must(uuid.NewV7()).String()))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// reconcile does what a pass of the notifier's reconciler at now does: it takes the deliveries
// due by then, queues them again, and publishes those not held as one message. It returns them.
func (e *env) reconcile(t *testing.T, now time.Time) []uuid.UUID {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	dues, _, err := e.pg.Reconcile(ctx, now, republishAfter, queue.MaxBatch, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, d := range dues {
		if !d.Held {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) > 0 {
		e.publish(t, ids...)
	}
	return ids
}

// reconcileUntil runs reconciler passes until every one of ids is in a terminal state.
func (e *env) reconcileUntil(t *testing.T, ids []uuid.UUID) {
	t.Helper()
	waitFor(t, "every delivery to end", func() (bool, string) {
		e.reconcile(t, time.Now())
		ctx, cancel := opCtx(t)
		defer cancel()
		var left int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE id = ANY($1)
			AND state IN ('scheduled', 'queued', 'sending', 'retrying')`, ids).Scan(&left)
		return err == nil && left == 0, fmt.Sprintf("%d not done (err %v)", left, err)
	})
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
	err := e.pool.QueryRow(ctx, `SELECT state, reason, provider, provider_message_id, attempts, lease_owner, due_at
		FROM delivery.deliveries WHERE id = $1`, id).Scan(&r.State, &r.Reason, &r.Provider,
		&r.ProviderMessageID, &r.Attempts, &r.LeaseOwner, &r.Due)
	if err != nil {
		t.Fatalf("delivery %s: %v", id, err)
	}
	return r
}

// attempt is an entry of the attempt log.
type attempt struct {
	outcome string
	started time.Time
}

// attempts returns the attempt log of delivery id, in attempt order.
func (e *env) attempts(t *testing.T, id uuid.UUID) []attempt {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	rows, err := e.pool.Query(ctx, `SELECT attempt || ':' || outcome, started_at FROM delivery.attempts
		WHERE delivery_id = $1 ORDER BY drive, attempt`, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attempt, error) {
		var a attempt
		err := r.Scan(&a.outcome, &a.started)
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// outcomes returns the attempt log of delivery id, as "attempt:outcome" in attempt order.
func (e *env) outcomes(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	var out []string
	for _, a := range e.attempts(t, id) {
		out = append(out, a.outcome)
	}
	return out
}

// attemptCount returns how many attempts are recorded, for every delivery.
func (e *env) attemptCount(t *testing.T) int {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.attempts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
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

// waitSent waits until every one of ids is sent.
func (e *env) waitSent(t *testing.T, ids []uuid.UUID) {
	t.Helper()
	waitFor(t, "every delivery to be sent", func() (bool, string) {
		ctx, cancel := opCtx(t)
		defer cancel()
		var left int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE id = ANY($1) AND state <> 'sent'`,
			ids).Scan(&left)
		return err == nil && left == 0, fmt.Sprintf("%d not sent (err %v)", left, err)
	})
}

// queueState is what the channel's queue holds: messages in the stream, those delivered and
// not answered, those not delivered yet, and those delivered more than once and not answered.
type queueState struct {
	InStream, AckPending, Pending, Redelivered int
}

func (e *env) queueState(t *testing.T) (queueState, error) {
	ctx, cancel := opCtx(t)
	defer cancel()
	cons, err := e.js.Consumer(ctx, queue.Stream(ch), queue.Consumer(ch))
	if err != nil {
		return queueState{}, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return queueState{}, err
	}
	stream, err := e.js.Stream(ctx, queue.Stream(ch))
	if err != nil {
		return queueState{}, err
	}
	si, err := stream.Info(ctx)
	if err != nil {
		return queueState{}, err
	}
	return queueState{InStream: int(si.State.Msgs), AckPending: ci.NumAckPending, Pending: int(ci.NumPending),
		Redelivered: ci.NumRedelivered}, nil
}

// waitQueue waits until the channel's queue is in state want.
func (e *env) waitQueue(t *testing.T, what string, want queueState) {
	t.Helper()
	waitFor(t, what, func() (bool, string) {
		q, err := e.queueState(t)
		if err != nil {
			return false, err.Error()
		}
		return q == want, fmt.Sprintf("%+v", q)
	})
}

// waitAnswered waits until every message on the channel is acked or terminated: the work queue
// holds none (it drops one when it is acked or terminated), and none waits to be delivered or
// answered.
func (e *env) waitAnswered(t *testing.T) {
	t.Helper()
	e.waitQueue(t, "every message to be answered", queueState{})
}

func checkOutcomes(t *testing.T, e *env, id uuid.UUID, want ...string) {
	t.Helper()
	if got := e.outcomes(t, id); !slices.Equal(got, want) {
		t.Errorf("attempt log of %s = %q, want %q", id, got, want)
	}
}

// checkCalls checks that the provider was called want times for id, with the attempts numbered
// from 1: no attempt was counted without a call.
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

// readEvents reads every event on subject from the events stream.
func (e *env) readEvents(t *testing.T, subject string) []events.Event {
	t.Helper()
	ctx, cancel := opCtx(t)
	defer cancel()
	oc, err := e.js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := oc.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for msg := range batch.Messages() {
		var ev events.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("event %q: %v", msg.Data(), err)
		}
		out = append(out, ev)
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSendsQueuedDelivery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body func(uuid.UUID) []byte
	}{
		{"batch of one", func(id uuid.UUID) []byte { return queue.EncodeBatch([]uuid.UUID{id}) }},
		// Messages queued by a notifier from before batches are still delivered.
		{"legacy text body", func(id uuid.UUID) []byte { return []byte(id.String()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.start(t, consumer.Config{})
			id := e.create1(t)
			e.publishBody(t, tt.body(id))

			e.waitState(t, id, delivery.Sent)
			e.waitAnswered(t)
			calls := checkCalls(t, e, id, 1)
			if len(calls) == 1 {
				m := calls[0]
				if m.DeliveryID != id || m.Channel != ch || m.To != address(id) || m.UserID != "user-"+id.String()[:8] ||
					m.Category != "welcome" || m.Priority != delivery.Normal || !reflect.DeepEqual(m.Content, content) ||
					m.ExpiresAt.Before(time.Now()) || m.Attempt != 1 {
					t.Errorf("provider was handed %+v", m)
				}
			}
			r := e.row(t, id)
			if r.Provider != "fake" || r.ProviderMessageID != "fake-"+id.String()+"-1" || r.Attempts != 1 ||
				r.LeaseOwner != nil || r.Due != nil {
				t.Errorf("row = %+v", r)
			}
			checkOutcomes(t, e, id, "1:sent")
		})
	}
}

// TestRetriesTransientFailure: a transient failure is recorded as a retry, due after its
// backoff, and the message is acked at once: the retry comes back through the reconciler, which
// publishes it when it is due, and the next attempt is counted as the second.
func TestRetriesTransientFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	id := e.create1(t)
	e.sender.script(script{transient: 1}, id)
	e.publish(t, id)

	e.waitState(t, id, delivery.Retrying)
	e.waitAnswered(t)
	if r := e.row(t, id); r.Attempts != 1 || r.Reason != "provider_unavailable" || r.LeaseOwner != nil || r.Due == nil {
		t.Errorf("row = %+v, want retrying after attempt 1, with a due time", r)
	}
	checkCalls(t, e, id, 1)

	e.reconcileUntil(t, []uuid.UUID{id})
	e.waitAnswered(t)
	checkCalls(t, e, id, 2)
	if r := e.row(t, id); r.State != "sent" || r.Attempts != 2 || r.ProviderMessageID != "fake-"+id.String()+"-2" {
		t.Errorf("row = %+v, want sent on attempt 2", r)
	}
	checkOutcomes(t, e, id, "1:retry", "2:sent")
}

// retryDue checks that delivery id waits, retrying, for a backoff of wait after its last
// attempt, and returns when it is due. The attempt decided its retry after it started and before
// the test saw it recorded, so the due time lies between the two, each plus wait.
func retryDue(t *testing.T, e *env, id uuid.UUID, wait time.Duration) time.Time {
	t.Helper()
	seen := time.Now()
	r := e.row(t, id)
	as := e.attempts(t, id)
	if r.State != "retrying" || r.Due == nil || len(as) == 0 {
		t.Fatalf("row = %+v, attempts %v, want retrying with a due time", r, as)
	}
	last := as[len(as)-1].started
	// The attempt log keeps microseconds.
	if r.Due.Before(last.Add(wait-time.Microsecond)) || r.Due.After(seen.Add(wait)) {
		t.Errorf("after attempt %d (started %v, seen recorded %v), due at %v: want a wait of %v",
			len(as), last, seen, *r.Due, wait)
	}
	return *r.Due
}

// TestDeadAfterMaxAttempts: a provider that fails forever turns the delivery dead after exactly
// the policy's attempts, each retry due after the policy's growing backoff and published by the
// reconciler no sooner; the dead letter is announced once and logged, and the delivery is not
// tried again.
func TestDeadAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := events.Ensure(ctxT(t), e.js, 1); err != nil {
		t.Fatal(err)
	}
	// No jitter: each backoff is the policy's lower bound. The backoffs are long: the test runs
	// the reconciler at each due time rather than waiting for it.
	policy := workers.Policy{MaxAttempts: 5, BaseBackoff: time.Minute, MaxBackoff: time.Hour}
	logs := &logBuffer{}
	e.start(t, consumer.Config{Policy: policy, Jitter: func() float64 { return 0 }, BreakerFailures: 100,
		Announcer: &wevents.Announcer{JS: e.js}, Log: logs.logger()})
	id := e.create1(t, func(d *delivery.Delivery) { d.ExpiresAt = time.Now().Add(24 * time.Hour) })
	e.sender.script(script{transient: -1}, id)
	e.publish(t, id)

	for k := 1; k < policy.MaxAttempts; k++ {
		waitFor(t, fmt.Sprintf("attempt %d to be recorded", k), func() (bool, string) {
			got := e.outcomes(t, id)
			return len(got) == k, fmt.Sprint(got)
		})
		due := retryDue(t, e, id, policy.Backoff(k, 0, 0))
		if got := e.reconcile(t, due.Add(-time.Microsecond)); slices.Contains(got, id) {
			t.Fatalf("the reconciler published retry %d before it was due", k)
		}
		if got := e.reconcile(t, due); !slices.Equal(got, []uuid.UUID{id}) {
			t.Fatalf("the reconciler published %v when retry %d was due, want %s", got, k, id)
		}
	}
	e.waitState(t, id, delivery.Dead)
	e.waitAnswered(t)
	checkCalls(t, e, id, policy.MaxAttempts)
	if r := e.row(t, id); r.Attempts != policy.MaxAttempts || r.Reason != "provider_unavailable" || r.Due != nil {
		t.Errorf("row = %+v, want dead after %d attempts", r, policy.MaxAttempts)
	}
	checkOutcomes(t, e, id, "1:retry", "2:retry", "3:retry", "4:retry", "5:dead")

	// Nothing is due any more: no reconciler brings a dead letter back, and a message that did
	// (a late duplicate) finds nothing to do.
	if got := e.reconcile(t, time.Now().Add(48*time.Hour)); len(got) != 0 {
		t.Errorf("the reconciler published %v after the delivery died", got)
	}
	if r := e.row(t, id); r.State != "dead" {
		t.Errorf("row = %+v after the reconciler passed its ttl, want still dead (re-drivable)", r)
	}
	e.publish(t, id)
	e.waitAnswered(t)
	checkCalls(t, e, id, policy.MaxAttempts)
	dead := e.readEvents(t, events.Dead)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1: %+v", len(dead), dead)
	}
	if d := dead[0]; d.DeliveryID != id || d.Channel != ch || d.Category != "welcome" ||
		d.Reason != "provider_unavailable" || d.Address != "" {
		t.Errorf("dead letter %+v", d)
	}
	if got := logs.lines("level=WARN", `msg="dead letter"`, "delivery_id="+id.String(), "attempts=5",
		"reason=provider_unavailable"); len(got) != 1 {
		t.Errorf("dead letter logged %d times, want once: %q", len(got), got)
	}
}

// TestRetryAfter: a provider's Retry-After outweighs a shorter backoff: the retry is not due,
// and not published, before it.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{}) // fastPolicy: backoffs of 20 ms at most
	id := e.create1(t)
	const retryAfter = 2 * time.Minute // a 429 with Retry-After: 120
	e.sender.script(script{transient: 1, retryAfter: retryAfter}, id)
	e.publish(t, id)

	e.waitState(t, id, delivery.Retrying)
	due := retryDue(t, e, id, retryAfter)
	if got := e.reconcile(t, due.Add(-time.Microsecond)); len(got) != 0 {
		t.Fatalf("the reconciler published %v before the Retry-After", got)
	}
	if got := e.reconcile(t, due); !slices.Equal(got, []uuid.UUID{id}) {
		t.Fatalf("the reconciler published %v once due, want %s", got, id)
	}
	e.waitState(t, id, delivery.Sent)
	e.waitAnswered(t)
	checkCalls(t, e, id, 2)
	checkOutcomes(t, e, id, "1:retry", "2:sent")
}

func TestPermanentFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		effect workers.Effect
		// subject is the event that announces the effect; "" for none.
		subject string
	}{
		{"no effect on the address", workers.NoEffect, ""},
		{"the recipient opted out at the provider", workers.OptOut, events.OptedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if err := events.Ensure(ctxT(t), e.js, 1); err != nil {
				t.Fatal(err)
			}
			e.start(t, consumer.Config{Announcer: &wevents.Announcer{JS: e.js}})
			id := e.create1(t)
			e.sender.script(script{permanent: "bad_address", effect: tt.effect}, id)
			e.publish(t, id)

			e.waitState(t, id, delivery.Failed)
			e.waitAnswered(t)
			checkCalls(t, e, id, 1)
			if r := e.row(t, id); r.Attempts != 1 || r.Reason != "bad_address" || r.Due != nil || r.LeaseOwner != nil {
				t.Errorf("row = %+v, want failed with reason bad_address after one attempt", r)
			}
			checkOutcomes(t, e, id, "1:failed")
			if tt.subject == "" {
				return
			}
			var got []events.Event
			waitFor(t, "the effect to be announced", func() (bool, string) {
				got = e.readEvents(t, tt.subject)
				return len(got) > 0, "no event"
			})
			if len(got) != 1 || got[0].DeliveryID != id || got[0].Address != address(id) || got[0].Reason != "bad_address" {
				t.Errorf("announced %+v, want one event for %s", got, id)
			}
		})
	}
}

// TestNothingToDo: a message whose deliveries need no send is acked without calling the
// provider, and leaves them as they were.
func TestNothingToDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})

	unknown := uuid.Must(uuid.NewV7())
	expired := e.create1(t, func(d *delivery.Delivery) { d.ExpiresAt = time.Now().Add(-time.Second) })
	sent := e.create1(t)
	e.finish(t, sent, delivery.Sent)
	ids := []uuid.UUID{unknown, expired, sent}
	e.publish(t, ids...)
	e.publish(t, expired)

	e.waitAnswered(t)
	for _, id := range ids {
		checkCalls(t, e, id, 0)
	}
	checkOutcomes(t, e, expired)
	// Expiring is the reconciler's job; a worker only leaves an expired delivery alone.
	if r := e.row(t, expired); r.State != "queued" || r.Attempts != 0 || r.LeaseOwner != nil {
		t.Errorf("expired delivery: row %+v, want untouched", r)
	}
	if r := e.row(t, sent); r.State != "sent" || r.Attempts != 1 || r.Provider != "elsewhere" {
		t.Errorf("sent delivery: row %+v, want untouched", r)
	}
}

// finish makes delivery id end in state as another worker would have: claimed and recorded.
func (e *env) finish(t *testing.T, id uuid.UUID, state delivery.State) {
	t.Helper()
	ctx := ctxT(t)
	claimed, err := e.pg.Claim(ctx, "worker-elsewhere", time.Minute, []uuid.UUID{id})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim %s: %d claimed, %v", id, len(claimed), err)
	}
	err = e.pg.Record(ctx, "worker-elsewhere", []delivery.Attempt{{DeliveryID: id, Attempt: 1, State: state,
		Reason: "elsewhere", Provider: "elsewhere", Started: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMalformedMessageIsTerminated: a message that carries no delivery ids is a bug somewhere;
// it is terminated, not acked (so its advisory tells operators) nor handed back (so it does not
// come back forever), and the messages after it go on.
func TestMalformedMessageIsTerminated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	terminated, err := e.nc.SubscribeSync(fmt.Sprintf("%s.%s.%s", "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED",
		queue.Stream(ch), queue.Consumer(ch)))
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, consumer.Config{})
	// The batch format's byte, then one id too many.
	tooMany := append(queue.EncodeBatch(nil), make([]byte, 16*(queue.MaxBatch+1))...)
	bodies := []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"text that is no id", []byte("not a delivery id")},
		{"the batch format alone", queue.EncodeBatch(nil)},
		{"a cut id", queue.EncodeBatch([]uuid.UUID{uuid.Must(uuid.NewV7())})[:10]},
		{"more ids than a batch holds", tooMany},
	}
	want := map[uint64]string{}
	for _, b := range bodies {
		want[e.publishBody(t, b.body)] = b.name
	}
	id := e.create1(t)
	e.publish(t, id)

	e.waitState(t, id, delivery.Sent)
	e.waitAnswered(t)
	for range bodies {
		msg, err := terminated.NextMsg(waitLimit)
		if err != nil {
			t.Fatalf("terminations: %v (still waiting for %v)", err, want)
		}
		var adv struct {
			StreamSeq uint64 `json:"stream_seq"`
		}
		if err := json.Unmarshal(msg.Data, &adv); err != nil {
			t.Fatal(err)
		}
		if _, ok := want[adv.StreamSeq]; !ok {
			t.Errorf("message %d terminated, not one of the malformed ones %v", adv.StreamSeq, want)
		}
		delete(want, adv.StreamSeq)
	}
	checkCalls(t, e, id, 1)
}

// TestDuplicatePublish: a delivery published twice, as after a re-publish by the reconciler, is
// sent once, and every message is answered.
func TestDuplicatePublish(t *testing.T) {
	t.Parallel()

	t.Run("twice in one message", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, consumer.Config{})
		id, other := e.create1(t), e.create1(t)
		e.publish(t, id, other, id)
		e.waitSent(t, []uuid.UUID{id, other})
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkCalls(t, e, other, 1)
		checkOutcomes(t, e, id, "1:sent")
	})

	t.Run("back to back", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, consumer.Config{Concurrency: 4})
		id := e.create1(t)
		e.publish(t, id)
		e.publish(t, id)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	})

	t.Run("while the first is being sent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, consumer.Config{Concurrency: 4})
		id := e.create1(t)
		release := make(chan struct{})
		e.sender.script(script{release: release}, id)
		e.publish(t, id)
		waitFor(t, "the first send", func() (bool, string) {
			n := e.sender.holding()
			return n == 1, fmt.Sprintf("%d sends held", n)
		})
		e.publish(t, id)
		// The second message finds the delivery held by a live worker: nothing to do, so it is
		// acked at once, while the first waits for its send.
		e.waitQueue(t, "the second message to be acked", queueState{InStream: 1, AckPending: 1})
		close(release)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	})

	t.Run("after it was sent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.start(t, consumer.Config{})
		id := e.create1(t)
		e.publish(t, id)
		e.waitState(t, id, delivery.Sent)
		e.waitAnswered(t)
		e.publish(t, id)
		waitFor(t, "the second message to be claimed", func() (bool, string) {
			n := e.store.asked(id)
			return n == 2, fmt.Sprintf("asked %d times", n)
		})
		e.waitAnswered(t)
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	})
}

// fakeGate answers the re-check: it fails its first fail calls, and skips the deliveries in
// skip with their reason.
type fakeGate struct {
	mu   sync.Mutex
	fail int
	skip map[uuid.UUID]string
}

var _ workers.Gate = (*fakeGate)(nil)

func (g *fakeGate) Check(_ context.Context, msgs []*workers.Message) (map[uuid.UUID]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail > 0 {
		g.fail--
		return nil, errors.New("fake gate: contacts unavailable")
	}
	out := map[uuid.UUID]string{}
	for _, m := range msgs {
		if reason, ok := g.skip[m.DeliveryID]; ok {
			out[m.DeliveryID] = reason
		}
	}
	return out, nil
}

// TestSkippedAtSend: a delivery the re-check stops (the recipient opted out after the
// notification was accepted) is recorded skipped with the reason, without a provider call; the
// others of its message go.
func TestSkippedAtSend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.create(t, 3)
	gate := &fakeGate{skip: map[uuid.UUID]string{ids[1]: "opted_out"}}
	e.start(t, consumer.Config{Gate: gate})
	e.publish(t, ids...)

	e.waitState(t, ids[1], delivery.Skipped)
	e.waitSent(t, []uuid.UUID{ids[0], ids[2]})
	e.waitAnswered(t)
	checkCalls(t, e, ids[1], 0)
	if r := e.row(t, ids[1]); r.Reason != "opted_out" || r.LeaseOwner != nil || r.Due != nil {
		t.Errorf("skipped delivery: row %+v", r)
	}
	checkOutcomes(t, e, ids[1], "1:skipped")
	for _, id := range []uuid.UUID{ids[0], ids[2]} {
		checkCalls(t, e, id, 1)
	}
}

// TestBatchClaimedInRounds: a message of many ids is claimed in rounds, none larger than
// BatchSize, each id once; the message is acked only once every delivery is recorded, and not
// redelivered.
func TestBatchClaimedInRounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n, batchSize = 100, 6
	e.start(t, consumer.Config{Concurrency: 4, BatchSize: batchSize})
	ids := e.create(t, n)
	last := ids[n-1]
	release := make(chan struct{})
	e.sender.script(script{release: release}, last)
	e.publish(t, ids...)

	waitFor(t, "all but the last to be sent", func() (bool, string) {
		ctx, cancel := opCtx(t)
		defer cancel()
		var sent int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE id = ANY($1) AND state = 'sent'`,
			ids).Scan(&sent)
		return err == nil && sent == n-1 && e.sender.holding() == 1, fmt.Sprintf("%d sent (err %v)", sent, err)
	})
	if q, err := e.queueState(t); err != nil || q != (queueState{InStream: 1, AckPending: 1}) {
		t.Errorf("while a delivery is being sent, the queue is %+v (err %v), want its message unanswered", q, err)
	}
	close(release)
	e.waitSent(t, ids)
	e.waitAnswered(t)

	claims := e.store.claims()
	for _, c := range claims {
		if len(c.asked) > batchSize {
			t.Errorf("a claim of %d ids, more than BatchSize %d", len(c.asked), batchSize)
		}
	}
	if len(claims) < n/batchSize {
		t.Errorf("%d ids claimed in %d rounds", n, len(claims))
	}
	for _, id := range ids {
		if k := e.store.asked(id); k != 1 {
			t.Errorf("%s asked for %d times, want once", id, k)
		}
		checkCalls(t, e, id, 1)
	}
}

// TestBatchPartlyDone: of a message's deliveries, only those that may be sent are sent: the
// ones already done, held by another worker, past their ttl or unknown are left alone, and the
// message is acked.
func TestBatchPartlyDone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	ids := e.create(t, 6)
	queued := []uuid.UUID{ids[0], ids[5]}
	sent, failed, canceled, held := ids[1], ids[2], ids[3], ids[4]
	e.finish(t, sent, delivery.Sent)
	e.finish(t, failed, delivery.Failed)
	ctx := ctxT(t)
	var nid uuid.UUID
	if err := e.pool.QueryRow(ctx, `SELECT notification_id FROM delivery.deliveries WHERE id = $1`, canceled).Scan(&nid); err != nil {
		t.Fatal(err)
	}
	if n, err := e.pg.Cancel(ctx, nid, time.Now()); err != nil || n != 1 {
		t.Fatalf("cancel: %d canceled, %v", n, err)
	}
	if claimed, err := e.pg.Claim(ctx, "worker-other", 10*time.Minute, []uuid.UUID{held}); err != nil || len(claimed) != 1 {
		t.Fatalf("claim by another worker: %d claimed, %v", len(claimed), err)
	}
	expired := e.create1(t, func(d *delivery.Delivery) { d.ExpiresAt = time.Now().Add(-time.Second) })
	unknown := uuid.Must(uuid.NewV7())
	e.publish(t, append(ids, expired, unknown)...)

	e.waitSent(t, queued)
	e.waitAnswered(t)
	for _, id := range queued {
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	}
	for _, id := range []uuid.UUID{sent, failed, canceled, held, expired, unknown} {
		checkCalls(t, e, id, 0)
	}
	want := map[uuid.UUID]string{sent: "sent", failed: "failed", canceled: "canceled", held: "sending", expired: "queued"}
	for id, state := range want {
		if r := e.row(t, id); r.State != state {
			t.Errorf("%s delivery: row %+v", state, r)
		}
	}
	if r := e.row(t, held); r.LeaseOwner == nil || *r.LeaseOwner != "worker-other" || r.Attempts != 1 {
		t.Errorf("held delivery: row %+v, want still the other worker's", r)
	}
	checkOutcomes(t, e, held)
}

// TestBatchGivenBack: when some deliveries of a message go back unsent, the message is handed
// back once the others are recorded; when it comes again, the recorded ones are not sent again
// and the ones given back are sent, their give-back not counted as an attempt.
func TestBatchGivenBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  consumer.Config
		// gate, when set, re-checks the deliveries.
		gate *fakeGate
		// failing fails once, transiently.
		failing int
	}{
		// One sender: the deliveries go one after another, and the failure of the third opens
		// the circuit while the fourth is claimed, and before the rest are.
		{name: "the circuit opens mid-batch", failing: 2,
			cfg: consumer.Config{Concurrency: 1, BreakerFailures: 1, BreakerCooldown: time.Second}},
		// The first round's check fails: its deliveries go back; the next rounds go.
		{name: "the gate cannot re-check", gate: &fakeGate{fail: 1}, failing: -1,
			cfg: consumer.Config{Concurrency: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			const n = 8
			ids := e.create(t, n)
			if tt.failing >= 0 {
				e.sender.script(script{transient: 1}, ids[tt.failing])
			}
			cfg := tt.cfg
			if tt.gate != nil {
				cfg.Gate = tt.gate
			}
			e.start(t, cfg)
			e.publish(t, ids...)

			e.waitSent(t, ids)
			e.waitAnswered(t)
			for i, id := range ids {
				if i == tt.failing {
					checkCalls(t, e, id, 2)
					checkOutcomes(t, e, id, "1:retry", "2:sent")
					continue
				}
				checkCalls(t, e, id, 1)
				checkOutcomes(t, e, id, "1:sent")
			}
			// The message came back: its first delivery, recorded before, was looked at twice.
			if k := e.store.asked(ids[0]); k != 2 {
				t.Errorf("the first delivery was asked for %d times, want twice (the message handed back once)", k)
			}
		})
	}
}

// TestHeartbeatKeepsSlowMessage: a message whose deliveries take longer than the ack wait (a
// slow provider) is kept from it while it is worked on: it is not redelivered, and no delivery
// is claimed twice.
func TestHeartbeatKeepsSlowMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const ackWait = 2 * time.Second
	e.start(t, consumer.Config{Concurrency: 1, AckWait: ackWait, SendTimeout: time.Minute, Lease: 2 * time.Minute})
	ids := e.create(t, 3)
	release := make(chan struct{})
	e.sender.script(script{release: release}, ids[0])
	e.publish(t, ids...)
	waitFor(t, "the first send", func() (bool, string) {
		n := e.sender.holding()
		return n == 1, fmt.Sprintf("%d sends held", n)
	})

	// The provider takes a few ack waits to answer.
	time.Sleep(3 * ackWait)
	if q, err := e.queueState(t); err != nil || q != (queueState{InStream: 1, AckPending: 1}) {
		t.Errorf("queue %+v (err %v) while the send is held, want the message pending once, not redelivered", q, err)
	}
	close(release)
	e.waitSent(t, ids)
	e.waitAnswered(t)
	for _, id := range ids {
		if k := e.store.asked(id); k != 1 {
			t.Errorf("%s asked for %d times, want once: the message came back", id, k)
		}
		checkCalls(t, e, id, 1)
	}
}

// TestOpenCircuitGivesBackClaimed: a delivery claimed before the circuit opened, and about to
// be sent when it did, goes back unsent and unrecorded, its attempt not counted, and its message
// stays with JetStream. (The cooldown and send timeout outlast the test, so that nothing here
// depends on timing.)
func TestOpenCircuitGivesBackClaimed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, second := e.create1(t), e.create1(t)
	gate := &holdingGate{id: second, held: make(chan struct{}), letGo: make(chan struct{})}
	var letGoOnce sync.Once
	letGo := func() { letGoOnce.Do(func() { close(gate.letGo) }) }
	t.Cleanup(letGo) // before the consumer's stop, should the test end early
	logs := &logBuffer{}
	c, _ := e.start(t, consumer.Config{Concurrency: 2, BreakerFailures: 1, BreakerCooldown: 10 * time.Minute,
		SendTimeout: 10 * time.Minute, Lease: 20 * time.Minute, Gate: gate, Log: logs.logger()})
	failing := make(chan struct{})
	e.sender.script(script{transient: 1, release: failing}, first)

	e.publish(t, first)
	waitFor(t, "the first send", func() (bool, string) {
		n := e.sender.holding()
		return n == 1, fmt.Sprintf("%d sends held", n)
	})
	e.publish(t, second)
	select {
	case <-gate.held: // second is claimed, on its way to a sender
	case <-time.After(waitLimit):
		t.Fatal("the second delivery never reached the gate")
	}
	close(failing) // the first call fails, which opens the circuit before the failure is recorded
	e.waitState(t, first, delivery.Retrying)
	if s := c.CircuitState(); s != "open" {
		t.Fatalf("circuit %s after the failure, want open", s)
	}
	letGo()
	waitFor(t, "the second delivery to be given back", func() (bool, string) {
		lines := logs.lines(`msg="giving the delivery back unsent"`, "delivery_id="+second.String(), "reason=circuit_open")
		r := e.row(t, second)
		return len(lines) == 1 && r.State == "queued" && r.LeaseOwner == nil, fmt.Sprintf("%+v, %q", r, lines)
	})
	if r := e.row(t, second); r.Attempts != 0 {
		t.Errorf("row = %+v, want no attempt counted", r)
	}
	checkCalls(t, e, second, 0)
	checkOutcomes(t, e, second)
	checkOutcomes(t, e, first, "1:retry")
	// The first message is acked (its retry is the reconciler's); the second waits in the work
	// queue for the circuit.
	e.waitQueue(t, "the first message to be acked", queueState{InStream: 1, AckPending: 1})
}

// holdingGate holds the first check that holds delivery id until it is told to let go; it lets
// everything else through at once.
type holdingGate struct {
	id    uuid.UUID
	held  chan struct{} // closed when the check is held
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

// TestOpenCircuitClaimsNothing: once the circuit opens, the consumer claims nothing more until
// the probe: the rest of the message under way waits for it, unclaimed.
func TestOpenCircuitClaimsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// One sender, two slots: the first two deliveries are claimed together; the claim loop
	// then waits for the slot that the first one's failure frees.
	e.start(t, consumer.Config{Concurrency: 1, BreakerFailures: 1, BreakerCooldown: time.Second})
	ids := e.create(t, 4)
	e.sender.script(script{transient: 1}, ids[0])
	e.publish(t, ids...)

	e.waitSent(t, ids)
	e.waitAnswered(t)
	for _, c := range e.store.claims() {
		if c.circuit == "open" {
			t.Errorf("claimed %v while the circuit was open", c.asked)
		}
	}
	checkCalls(t, e, ids[0], 2)
	checkOutcomes(t, e, ids[0], "1:retry", "2:sent")
	for _, id := range ids[1:] {
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	}
}

// TestProbeClaimsOne: after the cooldown, the half-open circuit lets exactly one delivery
// through: it is claimed alone and nothing else is claimed or sent until it is answered; then
// the circuit closes and the rest go.
func TestProbeClaimsOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, _ := e.start(t, consumer.Config{Concurrency: 4, BreakerFailures: 1, BreakerCooldown: time.Second})
	first := e.create1(t)
	e.sender.script(script{transient: 1}, first)
	e.publish(t, first)
	e.waitState(t, first, delivery.Retrying)
	if s := c.CircuitState(); s != "open" {
		t.Fatalf("circuit %s after the failure, want open", s)
	}
	ids := e.create(t, 8)
	release := make(chan struct{})
	e.sender.setFallback(script{release: release})
	e.publish(t, ids...)

	waitFor(t, "the probe", func() (bool, string) {
		n := e.sender.holding()
		return n == 1, fmt.Sprintf("%d sends held", n)
	})
	// A chance for anything else to be claimed or sent, if it could be.
	time.Sleep(200 * time.Millisecond)
	probing := 0
	for _, cl := range e.store.claims() {
		for _, id := range cl.got {
			if slices.Contains(ids, id) {
				probing++
			}
		}
		if cl.circuit == "half-open" && len(cl.asked) != 1 {
			t.Errorf("the half-open circuit claimed %d ids at once, want 1", len(cl.asked))
		}
	}
	if probing != 1 || e.sender.busy() != 1 {
		t.Errorf("%d deliveries claimed and %d calls in flight during the probe, want 1 of each", probing, e.sender.busy())
	}
	if s := c.CircuitState(); s != "half-open" {
		t.Errorf("circuit %s during the probe, want half-open", s)
	}
	close(release)
	e.waitSent(t, ids)
	e.waitAnswered(t)
	if s := c.CircuitState(); s != "closed" {
		t.Errorf("circuit %s after the probe succeeded, want closed", s)
	}
	for _, id := range ids {
		checkCalls(t, e, id, 1)
	}
}

// TestCircuitOpensOnTimeouts: a provider that stops answering opens the circuit after
// BreakerFailures failed calls; while it is open, no attempt is spent; once it answers again
// and the cooldown is over, a probe closes the circuit and every delivery is sent, each with
// no more attempts counted than provider calls made.
func TestCircuitOpensOnTimeouts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const failures, concurrency = 3, 2
	logs := &logBuffer{}
	c, _ := e.start(t, consumer.Config{Concurrency: concurrency, SendTimeout: 300 * time.Millisecond,
		Lease: 5 * time.Second, BreakerFailures: failures, BreakerCooldown: 2 * time.Second, Log: logs.logger(),
		Policy: workers.Policy{MaxAttempts: 10, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	e.sender.setFallback(script{release: make(chan struct{})}) // never released: every call times out
	ids := e.create(t, 6)
	e.publish(t, ids...)

	waitFor(t, "the circuit to open", func() (bool, string) {
		s := c.CircuitState()
		return s == "open", s
	})
	waitFor(t, "the calls in flight to end and be recorded", func() (bool, string) {
		calls, rows := len(e.sender.callLog()), e.attemptCount(t)
		return e.sender.busy() == 0 && rows == calls, fmt.Sprintf("%d calls, %d attempts recorded", calls, rows)
	})

	e.sender.setFallback(script{}) // the provider answers again
	e.reconcileUntil(t, ids)
	e.waitAnswered(t)
	if s := c.CircuitState(); s != "closed" {
		t.Errorf("circuit %s after the deliveries went, want closed", s)
	}
	for _, id := range ids {
		calls := e.sender.sent(id)
		checkCalls(t, e, id, len(calls)) // attempts numbered 1, 2, ...: none was spent without a call
		if r := e.row(t, id); r.State != "sent" || r.Attempts != len(calls) {
			t.Errorf("delivery %s: row %+v for %d calls", id, r, len(calls))
		}
	}
	// Past the calls that opened the circuit and those in flight then, every failed call was a
	// probe, which opened it again.
	failed := 0
	for _, cl := range e.sender.callLog() {
		if cl.err != nil {
			failed++
		}
	}
	probes := len(logs.lines(`msg="circuit open; channel paused"`, "probe_failed=true"))
	if failed > failures+concurrency-1+probes {
		t.Errorf("%d failed calls, want at most %d before the circuit opened and %d failed probes",
			failed, failures+concurrency-1, probes)
	}
}

// TestConfigErrorPausesChannel: a configuration error opens the circuit at once, gives the
// delivery back without counting the attempt, and says so in the log; once the credentials work
// again, the delivery goes, and so do the ones that came meanwhile.
func TestConfigErrorPausesChannel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := &logBuffer{}
	c, _ := e.start(t, consumer.Config{BreakerCooldown: time.Second, Log: logs.logger()})
	e.sender.setFallback(script{config: true})
	id := e.create1(t)
	e.publish(t, id)

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
	later := e.create1(t)
	e.publish(t, later)

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
}

// TestRateLimit: a call the channel's rate cannot fit within the lease does not wait for it:
// its delivery goes back unsent, its attempt not counted, and comes again with its message.
// Every delivery is sent once.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := &logBuffer{}
	// One call a second, no burst, and a lease that leaves 100 ms to wait for the rate: of
	// deliveries claimed together, the first goes and the others would wait a second or more.
	e.start(t, consumer.Config{Concurrency: 2, RatePerSecond: 1, Burst: 1, SendTimeout: time.Second,
		Lease: 1200 * time.Millisecond, Log: logs.logger()})
	ids := e.create(t, 3)
	e.publish(t, ids...)

	e.waitSent(t, ids)
	e.waitAnswered(t)
	for _, id := range ids {
		checkCalls(t, e, id, 1)
		checkOutcomes(t, e, id, "1:sent")
	}
	if got := logs.lines(`msg="giving the delivery back unsent"`, "reason=rate_limited"); len(got) == 0 {
		t.Error("no delivery was given back for the rate")
	}
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
	_, stop := e.start(t, cfg)

	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the consumer's stop, should the test end early
	held := e.create(t, 3)
	e.sender.script(script{release: release}, held[0])
	e.sender.script(script{release: release, permanent: "bad_address"}, held[1])
	e.sender.script(script{release: release, transient: 1}, held[2])
	for _, id := range held {
		e.publish(t, id)
	}
	waitFor(t, "every send slot to be held", func() (bool, string) {
		n := e.sender.holding()
		return n == len(held), fmt.Sprintf("%d sends held", n)
	})
	// More than the consumer can take while its senders are held.
	waiting := e.create(t, 8)
	e.publish(t, waiting...)
	waitFor(t, "every message to be delivered to the consumer", func() (bool, string) {
		q, err := e.queueState(t)
		if err != nil {
			return false, err.Error()
		}
		return q.AckPending == len(held)+1 && q.Pending == 0, fmt.Sprintf("%+v", q)
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

	// A new consumer takes over what was handed back, without waiting for the ack wait to pass;
	// the reconciler publishes the retry.
	cfg.WorkerID = "worker-2"
	e.start(t, cfg)
	all := append(slices.Clone(held), waiting...)
	e.reconcileUntil(t, all)
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

// TestManyDeliveries pushes a backlog of messages of every size through a small consumer: every
// delivery is sent exactly once (retries twice), no more provider calls than Concurrency are ever
// in flight, and every message is acked.
func TestManyDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n, concurrency = 300, 4
	e.start(t, consumer.Config{Concurrency: concurrency, BatchSize: 16})
	ids := e.create(t, n)
	for i, id := range ids {
		if i%10 == 0 {
			e.sender.script(script{transient: 1}, id)
		}
	}
	for start, size := 0, 1; start < n; start, size = start+size, size*2 {
		e.publish(t, ids[start:min(start+size, n)]...)
	}
	e.reconcileUntil(t, ids)
	e.waitAnswered(t)
	for i, id := range ids {
		want := 1
		if i%10 == 0 {
			want = 2
		}
		checkCalls(t, e, id, want)
		if r := e.row(t, id); r.State != "sent" {
			t.Errorf("delivery %s: row %+v, want sent", id, r)
		}
	}
	if got := e.sender.maxInFlight(); got > concurrency {
		t.Errorf("%d provider calls in flight at once, want at most %d", got, concurrency)
	}
}
