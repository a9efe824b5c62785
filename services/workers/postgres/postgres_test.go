package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// notifierMigrations are the notifier's migrations. The workers update the notifier's deliveries
// table, so the tests need it; applying the files with the notifier's own migration code keeps
// the workers module free of a dependency on the notifier module.
const notifierMigrations = "../../notifier/postgres/migrations"

var quiet = slog.New(slog.DiscardHandler)

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pgdb.Migrate(ctx, pool, "notifier", os.DirFS(notifierMigrations), quiet); err != nil {
		return err
	}
	return postgres.Migrate(ctx, pool, quiet)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newStore returns a store on a fresh, migrated database, and a pool to inspect it with.
func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.DB(t, "herald", migrate)
	pool, err := pgdb.Open(ctxT(t), url, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return postgres.New(pool), pool
}

// fixture is a delivery row as a test needs it before the call under test.
type fixture struct {
	state    delivery.State
	attempts int
	owner    string         // lease owner; "" is NULL
	due      *time.Duration // due_at relative to now; nil is NULL
	ttl      time.Duration  // expires_at relative to now; 0 is an hour
	// rawAddress: the delivery has no user id (sent to an address, not a user).
	rawAddress bool
}

func after(d time.Duration) *time.Duration { return &d }

var content = delivery.Content{
	Subject: "Your code",
	Text:    "Your code is 123456",
	HTML:    "<p>Your code is <b>123456</b></p>",
	Data:    map[string]any{"code": "123456", "nested": map[string]any{"n": 2.5, "ok": true}},
}

// want is the message a claim of a delivery inserted by insert must return, but for Attempt.
type inserted struct {
	id  uuid.UUID
	msg workers.Message
}

// insert adds a notification and one delivery of it, in the shape the notifier writes them.
func insert(t testing.TB, pool *pgxpool.Pool, f fixture) inserted {
	t.Helper()
	ctx := ctxT(t)
	now := time.Now()
	if f.ttl == 0 {
		f.ttl = time.Hour
	}
	expires := now.Add(f.ttl).Truncate(time.Microsecond)
	var due *time.Time
	if f.due != nil {
		d := now.Add(*f.due).Truncate(time.Microsecond)
		due = &d
	}
	var owner *string
	if f.owner != "" {
		owner = &f.owner
	}
	in := inserted{id: uuid.Must(uuid.NewV7())}
	// The category's rules are the opposite of the columns' defaults, so that reading them
	// shows.
	in.msg = workers.Message{
		DeliveryID:     in.id,
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.Email,
		To:             "ada-" + in.id.String()[:8] + "@example.com",
		UserID:         "user-" + in.id.String()[:8],
		Category:       "security",
		Critical:       true,
		DefaultOptIn:   false,
		Priority:       delivery.High,
		Content:        content,
		ExpiresAt:      expires,
	}
	var user *string
	if f.rawAddress {
		in.msg.UserID = ""
	} else {
		user = &in.msg.UserID
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO notifier.notifications (id, app_id, category, priority, send_at, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $5)`,
		in.msg.NotificationID, uuid.Must(uuid.NewV7()), in.msg.Category, string(in.msg.Priority),
		now.Add(-time.Hour), expires)
	if err != nil {
		t.Fatal(err)
	}
	// updated_at lies in the past so that any update of the row shows.
	_, err = pool.Exec(ctx, `
		INSERT INTO notifier.deliveries (id, notification_id, channel, address, user_id, category,
			critical, default_opt_in, priority, state, content, attempts, lease_owner, due_at, expires_at,
			created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)`,
		in.id, in.msg.NotificationID, string(in.msg.Channel), in.msg.To, user, in.msg.Category,
		in.msg.Critical, in.msg.DefaultOptIn, string(in.msg.Priority), string(f.state), in.msg.Content,
		f.attempts, owner, due, expires, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// row is a delivery as the database holds it.
type row struct {
	State, Reason, LastError, Provider, ProviderMessageID string
	LeaseOwner                                            *string
	Attempts                                              int
	DueAt, SentAt                                         *time.Time
	UpdatedAt                                             time.Time
}

func (r row) String() string {
	owner, due, sent := "NULL", "NULL", "NULL"
	if r.LeaseOwner != nil {
		owner = *r.LeaseOwner
	}
	if r.DueAt != nil {
		due = r.DueAt.UTC().Format(time.RFC3339Nano)
	}
	if r.SentAt != nil {
		sent = r.SentAt.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{state=%s reason=%q last_error=%q provider=%q pmid=%q lease_owner=%s attempts=%d due_at=%s sent_at=%s updated_at=%s}",
		r.State, r.Reason, r.LastError, r.Provider, r.ProviderMessageID, owner, r.Attempts, due, sent,
		r.UpdatedAt.UTC().Format(time.RFC3339Nano))
}

func get(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) row {
	t.Helper()
	var r row
	err := pool.QueryRow(ctxT(t), `
		SELECT state, reason, last_error, provider, provider_message_id, lease_owner, attempts, due_at,
			sent_at, updated_at
		FROM notifier.deliveries WHERE id = $1`, id).Scan(&r.State, &r.Reason, &r.LastError, &r.Provider,
		&r.ProviderMessageID, &r.LeaseOwner, &r.Attempts, &r.DueAt, &r.SentAt, &r.UpdatedAt)
	if err != nil {
		t.Fatalf("delivery %s: %v", id, err)
	}
	return r
}

// attemptRow is a row of the attempt log.
type attemptRow struct {
	Attempt                                                 int
	Worker, Provider, Outcome, Reason, Error, ProviderMsgID string
	StartedAt                                               time.Time
	LatencyUS                                               int64
}

func attemptRows(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) []attemptRow {
	t.Helper()
	rows, err := pool.Query(ctxT(t), `
		SELECT attempt, worker, provider, outcome, reason, error, provider_message_id, started_at, latency_us
		FROM workers.attempts WHERE delivery_id = $1 ORDER BY attempt`, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attemptRow, error) {
		var a attemptRow
		err := r.Scan(&a.Attempt, &a.Worker, &a.Provider, &a.Outcome, &a.Reason, &a.Error, &a.ProviderMsgID,
			&a.StartedAt, &a.LatencyUS)
		a.StartedAt = a.StartedAt.UTC()
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dbNow is the database's clock, read outside any transaction.
func dbNow(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	if err := pool.QueryRow(ctxT(t), "SELECT clock_timestamp()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// expireLease moves a sending delivery's lease expiry into the past, as if its worker had died.
func expireLease(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) {
	t.Helper()
	tag, err := pool.Exec(ctxT(t), `UPDATE notifier.deliveries SET due_at = now() - interval '1 second'
		WHERE id = $1 AND state = 'sending'`, id)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		t.Fatalf("delivery %s is not sending", id)
	}
}

func claimOne(t *testing.T, s *postgres.Store, worker string, lease time.Duration, id uuid.UUID) workers.Claim {
	t.Helper()
	claims, err := s.Claim(ctxT(t), worker, lease, []uuid.UUID{id})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if len(claims) != 1 || claims[0].ID != id {
		t.Fatalf("Claim(%s) = %+v, want one answer for it", id, claims)
	}
	return claims[0]
}

// mustClaim claims id for worker and returns the message.
func mustClaim(t *testing.T, s *postgres.Store, worker string, id uuid.UUID) *workers.Message {
	t.Helper()
	c := claimOne(t, s, worker, time.Hour, id)
	if c.Status != workers.Claimed || c.Message == nil {
		t.Fatalf("Claim(%s) = %+v, want Claimed with a message", id, c)
	}
	return c.Message
}

// checkMessage compares a claimed message with the delivery that was inserted.
func checkMessage(t *testing.T, got *workers.Message, in inserted, attempt int) {
	t.Helper()
	if got == nil {
		t.Fatal("no message")
	}
	want := in.msg
	want.Attempt = attempt
	g := *got
	if !g.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("ExpiresAt = %v, want %v", g.ExpiresAt, want.ExpiresAt)
	}
	g.ExpiresAt, want.ExpiresAt = time.Time{}, time.Time{}
	if g.AcceptedAt.IsZero() {
		t.Error("AcceptedAt is not set")
	}
	g.AcceptedAt = time.Time{} // the database's clock, set when the fixture was inserted
	if !reflect.DeepEqual(g, want) {
		t.Errorf("message:\n got %+v\nwant %+v", g, want)
	}
}

const (
	lease  = 10 * time.Minute
	worker = "worker-a"
	other  = "worker-b"
)

// claimCase is one kind of delivery handed to Claim, with the answer it must get and the row it
// must leave.
type claimCase struct {
	name    string
	fixture fixture
	// prepare, when set, brings the delivery into its state through the store itself.
	prepare func(t *testing.T, s *postgres.Store, pool *pgxpool.Pool, id uuid.UUID)
	status  workers.ClaimStatus
	// attempt is the claimed message's attempt.
	attempt int
	// unchanged: the row must not move; otherwise check inspects it.
	unchanged bool
	check     func(t *testing.T, before, after row)
}

func claimCases() []claimCase {
	claimed := func(attempts int) func(t *testing.T, before, after row) {
		return func(t *testing.T, _, r row) {
			t.Helper()
			if r.State != "sending" || r.LeaseOwner == nil || *r.LeaseOwner != worker || r.Attempts != attempts {
				t.Errorf("row = %v, want sending, leased to %s, %d attempts", r, worker, attempts)
			}
		}
	}
	expired := func(t *testing.T, _, r row) {
		t.Helper()
		if r.State != "expired" || r.Reason != "ttl" || r.DueAt != nil || r.LeaseOwner != nil {
			t.Errorf("row = %v, want expired, reason ttl, no due_at, no lease", r)
		}
	}
	cases := []claimCase{
		{name: "queued", fixture: fixture{state: delivery.Queued, due: after(time.Minute)},
			status: workers.Claimed, attempt: 1, check: claimed(1)},
		{name: "queued, to a raw address", fixture: fixture{state: delivery.Queued, due: after(time.Minute), rawAddress: true},
			status: workers.Claimed, attempt: 1, check: claimed(1)},
		{name: "retrying", fixture: fixture{state: delivery.Retrying, attempts: 3, due: after(time.Minute)},
			status: workers.Claimed, attempt: 4, check: claimed(4)},
		{name: "sending under another worker's live lease",
			fixture: fixture{state: delivery.Sending, attempts: 2, owner: other, due: after(time.Minute)},
			status:  workers.Busy, unchanged: true},
		{name: "sending under an expired lease",
			fixture: fixture{state: delivery.Sending, attempts: 2, owner: other, due: after(-time.Second)},
			status:  workers.Claimed, attempt: 3, check: claimed(3)},
		{name: "queued past its ttl", fixture: fixture{state: delivery.Queued, due: after(time.Minute), ttl: -time.Second},
			status: workers.Done, check: expired},
		{name: "retrying past its ttl",
			fixture: fixture{state: delivery.Retrying, attempts: 1, due: after(time.Minute), ttl: -time.Second},
			status:  workers.Done, check: expired},
		{name: "sending under an expired lease past its ttl",
			fixture: fixture{state: delivery.Sending, attempts: 1, owner: other, due: after(-time.Second), ttl: -time.Second},
			status:  workers.Done, check: expired},
		{name: "scheduled", fixture: fixture{state: delivery.Scheduled, due: after(time.Hour)},
			status: workers.Done, unchanged: true},
		{name: "claimed by the store for another worker", fixture: fixture{state: delivery.Queued},
			prepare: func(t *testing.T, s *postgres.Store, _ *pgxpool.Pool, id uuid.UUID) {
				if c := claimOne(t, s, other, lease, id); c.Status != workers.Claimed {
					t.Fatalf("first claim: %+v", c)
				}
			},
			status: workers.Busy, unchanged: true},
		{name: "lease of another worker expired after a claim through the store", fixture: fixture{state: delivery.Queued},
			prepare: func(t *testing.T, s *postgres.Store, pool *pgxpool.Pool, id uuid.UUID) {
				if c := claimOne(t, s, other, lease, id); c.Status != workers.Claimed {
					t.Fatalf("first claim: %+v", c)
				}
				expireLease(t, pool, id)
			},
			status: workers.Claimed, attempt: 2, check: claimed(2)},
	}
	for _, st := range []delivery.State{delivery.Sent, delivery.Delivered, delivery.Bounced, delivery.Failed,
		delivery.Dead, delivery.Skipped, delivery.Expired, delivery.Canceled} {
		cases = append(cases, claimCase{name: string(st), fixture: fixture{state: st, attempts: 1},
			status: workers.Done, unchanged: true})
	}
	// A terminal delivery past its ttl stays what it is.
	cases = append(cases, claimCase{name: "sent past its ttl", fixture: fixture{state: delivery.Sent, attempts: 1, ttl: -time.Second},
		status: workers.Done, unchanged: true})
	return cases
}

// checkClaim checks one answer and the row it left.
func checkClaim(t *testing.T, tc claimCase, in inserted, c workers.Claim, before, after row, t0, t1 time.Time) {
	t.Helper()
	if c.ID != in.id {
		t.Fatalf("answer for %s, want %s", c.ID, in.id)
	}
	if c.Status != tc.status {
		t.Fatalf("status = %v, want %v (row now %v)", c.Status, tc.status, after)
	}
	switch c.Status {
	case workers.Claimed:
		checkMessage(t, c.Message, in, tc.attempt)
		// due_at = now() + lease, where now() is the statement's start.
		if after.DueAt == nil {
			t.Fatalf("claimed row has no due_at: %v", after)
		}
		if start := after.DueAt.Add(-lease); start.Before(t0) || start.After(t1) {
			t.Errorf("due_at - lease = %v, want within [%v, %v]", start, t0, t1)
		}
		if !after.UpdatedAt.After(before.UpdatedAt) {
			t.Errorf("updated_at did not move: %v", after)
		}
	case workers.Busy:
		if c.Message != nil {
			t.Errorf("busy answer carries a message: %+v", c.Message)
		}
		if before.DueAt == nil || !c.RetryAt.Equal(*before.DueAt) {
			t.Errorf("RetryAt = %v, want the lease expiry %v", c.RetryAt, before.DueAt)
		}
	case workers.Done:
		if c.Message != nil || !c.RetryAt.IsZero() {
			t.Errorf("done answer carries more: %+v", c)
		}
	}
	if tc.unchanged {
		if !reflect.DeepEqual(before, after) {
			t.Errorf("row changed:\nbefore %v\n after %v", before, after)
		}
	}
	if tc.check != nil {
		tc.check(t, before, after)
	}
}

func TestClaim(t *testing.T) {
	s, pool := newStore(t)
	for _, tc := range claimCases() {
		t.Run(tc.name, func(t *testing.T) {
			in := insert(t, pool, tc.fixture)
			if tc.prepare != nil {
				tc.prepare(t, s, pool, in.id)
			}
			before := get(t, pool, in.id)
			t0 := dbNow(t, pool)
			c := claimOne(t, s, worker, lease, in.id)
			t1 := dbNow(t, pool)
			checkClaim(t, tc, in, c, before, get(t, pool, in.id), t0, t1)
			if n := len(attemptRows(t, pool, in.id)); n != 0 {
				t.Errorf("claim logged %d attempts", n)
			}
		})
	}
}

func TestClaimUnknown(t *testing.T) {
	s, _ := newStore(t)
	id := uuid.Must(uuid.NewV7())
	c := claimOne(t, s, worker, lease, id)
	if c.Status != workers.Done || c.Message != nil {
		t.Errorf("Claim(unknown) = %+v, want Done", c)
	}
}

func TestClaimNothing(t *testing.T) {
	s, _ := newStore(t)
	claims, err := s.Claim(ctxT(t), worker, lease, nil)
	if err != nil || len(claims) != 0 {
		t.Errorf("Claim(no ids) = %+v, %v; want nothing", claims, err)
	}
}

// TestClaimBatch hands every kind of delivery, and unknown ids, to one Claim: each id gets
// exactly one answer, the one it gets alone.
func TestClaimBatch(t *testing.T) {
	s, pool := newStore(t)
	cases := claimCases()
	ins := make([]inserted, len(cases))
	befores := make([]row, len(cases))
	var ids []uuid.UUID
	for i, tc := range cases {
		ins[i] = insert(t, pool, tc.fixture)
		if tc.prepare != nil {
			tc.prepare(t, s, pool, ins[i].id)
		}
		befores[i] = get(t, pool, ins[i].id)
		ids = append(ids, ins[i].id)
	}
	unknown := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	ids = append(ids, unknown...)
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })

	t0 := dbNow(t, pool)
	claims, err := s.Claim(ctxT(t), worker, lease, ids)
	t1 := dbNow(t, pool)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uuid.UUID]workers.Claim{}
	for _, c := range claims {
		if _, dup := byID[c.ID]; dup {
			t.Errorf("two answers for %s", c.ID)
		}
		byID[c.ID] = c
	}
	if len(claims) != len(ids) {
		t.Errorf("%d answers for %d ids", len(claims), len(ids))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := byID[ins[i].id]
			if !ok {
				t.Fatal("no answer")
			}
			checkClaim(t, tc, ins[i], c, befores[i], get(t, pool, ins[i].id), t0, t1)
		})
	}
	for _, id := range unknown {
		if c, ok := byID[id]; !ok || c.Status != workers.Done {
			t.Errorf("unknown id %s: %+v (answered: %v), want Done", id, c, ok)
		}
	}
}

// TestClaimConcurrent races two workers for the same deliveries, handed over in different orders:
// each delivery goes to exactly one of them, and the other is told it is busy.
func TestClaimConcurrent(t *testing.T) {
	s, pool := newStore(t)
	const rounds, perRound = 150, 16
	for round := range rounds {
		ids := make([]uuid.UUID, perRound)
		for i := range ids {
			st := delivery.Queued
			if i%2 == 1 {
				st = delivery.Retrying
			}
			ids[i] = insert(t, pool, fixture{state: st, attempts: i % 2, due: after(time.Minute)}).id
		}
		names := []string{worker, other}
		answers := make([][]workers.Claim, len(names))
		errs := make([]error, len(names))
		var start, wg sync.WaitGroup
		start.Add(1)
		for w, name := range names {
			mine := append([]uuid.UUID(nil), ids...)
			rand.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			wg.Go(func() {
				start.Wait()
				answers[w], errs[w] = s.Claim(context.Background(), name, lease, mine)
			})
		}
		start.Done()
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s: Claim: %v", round, names[w], err)
			}
		}
		owner := map[uuid.UUID]string{}
		busy := map[uuid.UUID]int{}
		for w, claims := range answers {
			if len(claims) != perRound {
				t.Fatalf("round %d: %s got %d answers for %d ids", round, names[w], len(claims), perRound)
			}
			for _, c := range claims {
				switch c.Status {
				case workers.Claimed:
					if prev, ok := owner[c.ID]; ok {
						t.Fatalf("round %d: delivery %s claimed by %s and %s", round, c.ID, prev, names[w])
					}
					owner[c.ID] = names[w]
				case workers.Busy:
					busy[c.ID]++
				default:
					t.Errorf("round %d: %s: delivery %s answered %v", round, names[w], c.ID, c.Status)
				}
			}
		}
		for _, id := range ids {
			if _, ok := owner[id]; !ok || busy[id] != 1 {
				t.Fatalf("round %d: delivery %s: owner %q, %d busy answers; want one owner and one busy", round, id, owner[id], busy[id])
			}
			r := get(t, pool, id)
			if r.State != "sending" || r.LeaseOwner == nil || *r.LeaseOwner != owner[id] {
				t.Fatalf("round %d: delivery %s: row %v, want sending leased to %s", round, id, r, owner[id])
			}
		}
	}
}

// attempt builds an attempt of message m with outcome o.
func attempt(m *workers.Message, o workers.Outcome) workers.Attempt {
	a := workers.Attempt{
		Message:  m,
		Provider: "fake",
		Outcome:  o,
		Started:  time.Now().Add(-3 * time.Millisecond).Truncate(time.Microsecond),
		Latency:  2500 * time.Microsecond,
	}
	switch o {
	case workers.OutcomeSent:
		a.ProviderMessageID = "pm-" + m.DeliveryID.String()
	case workers.OutcomeRetry:
		a.Reason, a.Error = "provider_unavailable", "transient: 503 service unavailable"
		a.RetryAt = time.Now().Add(30 * time.Second).Truncate(time.Microsecond)
	case workers.OutcomeFailed:
		a.Reason, a.Error = "bad_address", "permanent (bad_address): no such mailbox"
	case workers.OutcomeSkipped:
		// Decided before any provider call, as the consumer records it.
		a.Provider, a.Reason, a.Latency = "", "opted_out", 0
	}
	return a
}

func dead(m *workers.Message) workers.Attempt {
	a := attempt(m, workers.OutcomeRetry)
	a.Dead, a.RetryAt = true, time.Time{}
	return a
}

func record(t *testing.T, s *postgres.Store, worker string, as ...workers.Attempt) {
	t.Helper()
	if err := s.Record(ctxT(t), worker, as); err != nil {
		t.Fatalf("Record: %v", err)
	}
}

// logged is the attempt row that recording a by worker must leave.
func logged(worker string, a workers.Attempt, outcome string) attemptRow {
	return attemptRow{
		Attempt: a.Message.Attempt, Worker: worker, Provider: a.Provider, Outcome: outcome,
		Reason: a.Reason, Error: a.Error, ProviderMsgID: a.ProviderMessageID,
		StartedAt: a.Started.UTC(), LatencyUS: a.Latency.Microseconds(),
	}
}

func checkAttempts(t *testing.T, pool *pgxpool.Pool, id uuid.UUID, want ...attemptRow) {
	t.Helper()
	if got := attemptRows(t, pool, id); !reflect.DeepEqual(got, want) {
		t.Errorf("attempt log:\n got %+v\nwant %+v", got, want)
	}
}

const grace = 7 * time.Minute

func TestRecord(t *testing.T) {
	s, pool := newStore(t)
	s.RetryGrace = grace

	// terminal checks a delivery that left sending for good.
	terminal := func(t *testing.T, r row, state string, a workers.Attempt) {
		t.Helper()
		if r.State != state || r.Reason != a.Reason || r.LastError != a.Error || r.Provider != a.Provider ||
			r.DueAt != nil || r.LeaseOwner != nil || r.SentAt != nil || r.ProviderMessageID != "" {
			t.Errorf("row = %v, want %s with reason %q, error %q, provider %q, no due_at, no lease, no sent_at",
				r, state, a.Reason, a.Error, a.Provider)
		}
	}
	tests := []struct {
		name    string
		outcome func(m *workers.Message) workers.Attempt
		logged  string
		check   func(t *testing.T, r row, a workers.Attempt, t0, t1 time.Time)
	}{
		{
			name:    "sent",
			outcome: func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeSent) },
			logged:  "sent",
			check: func(t *testing.T, r row, a workers.Attempt, t0, t1 time.Time) {
				if r.State != "sent" || r.Provider != "fake" || r.ProviderMessageID != a.ProviderMessageID ||
					r.DueAt != nil || r.LeaseOwner != nil || r.Reason != "" || r.LastError != "" {
					t.Errorf("row = %v, want sent by fake as %s, no due_at, no lease", r, a.ProviderMessageID)
				}
				if r.SentAt == nil || r.SentAt.Before(t0) || r.SentAt.After(t1) {
					t.Errorf("sent_at = %v, want within [%v, %v]", r.SentAt, t0, t1)
				}
			},
		},
		{
			name:    "retry",
			outcome: func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeRetry) },
			logged:  "retry",
			check: func(t *testing.T, r row, a workers.Attempt, _, _ time.Time) {
				if r.State != "retrying" || r.Reason != a.Reason || r.LastError != a.Error || r.LeaseOwner != nil ||
					r.SentAt != nil {
					t.Errorf("row = %v, want retrying with reason %q and error %q, no lease", r, a.Reason, a.Error)
				}
				if want := a.RetryAt.Add(grace); r.DueAt == nil || !r.DueAt.Equal(want) {
					t.Errorf("due_at = %v, want RetryAt + RetryGrace = %v", r.DueAt, want)
				}
			},
		},
		{
			name:    "failed",
			outcome: func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeFailed) },
			logged:  "failed",
			check: func(t *testing.T, r row, a workers.Attempt, _, _ time.Time) {
				terminal(t, r, "failed", a)
			},
		},
		{
			name:    "dead",
			outcome: dead,
			logged:  "dead",
			check: func(t *testing.T, r row, a workers.Attempt, _, _ time.Time) {
				terminal(t, r, "dead", a)
			},
		},
		{
			name:    "skipped",
			outcome: func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeSkipped) },
			logged:  "skipped",
			check: func(t *testing.T, r row, a workers.Attempt, _, _ time.Time) {
				terminal(t, r, "skipped", a)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := insert(t, pool, fixture{state: delivery.Retrying, attempts: 2, due: after(time.Minute)})
			m := mustClaim(t, s, worker, in.id)
			a := tc.outcome(m)
			t0 := dbNow(t, pool)
			record(t, s, worker, a)
			t1 := dbNow(t, pool)
			r := get(t, pool, in.id)
			if r.Attempts != 3 {
				t.Errorf("attempts = %d, want 3", r.Attempts)
			}
			tc.check(t, r, a, t0, t1)
			checkAttempts(t, pool, in.id, logged(worker, a, tc.logged))

			// The same attempt again, as after a retried Record whose first try did commit:
			// no error, no second log row, and the row stays as the first Record left it.
			record(t, s, worker, a)
			if again := get(t, pool, in.id); !reflect.DeepEqual(again, r) {
				t.Errorf("recording again moved the row:\nbefore %v\n after %v", r, again)
			}
			checkAttempts(t, pool, in.id, logged(worker, a, tc.logged))
		})
	}
}

// TestRecordAfterTakeover: a worker whose lease expired and was taken over by another still
// records a sent outcome (the provider has the message), but nothing else; its attempt is
// logged either way.
func TestRecordAfterTakeover(t *testing.T) {
	s, pool := newStore(t)
	tests := []struct {
		name    string
		outcome func(m *workers.Message) workers.Attempt
		logged  string
		lands   bool
	}{
		{"sent", func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeSent) }, "sent", true},
		{"retry", func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeRetry) }, "retry", false},
		{"failed", func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeFailed) }, "failed", false},
		{"dead", dead, "dead", false},
		{"skipped", func(m *workers.Message) workers.Attempt { return attempt(m, workers.OutcomeSkipped) }, "skipped", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
			first := mustClaim(t, s, worker, in.id)
			expireLease(t, pool, in.id)
			second := mustClaim(t, s, other, in.id)
			if first.Attempt != 1 || second.Attempt != 2 {
				t.Fatalf("attempts %d and %d, want 1 and 2", first.Attempt, second.Attempt)
			}
			before := get(t, pool, in.id)

			a := tc.outcome(first)
			record(t, s, worker, a)
			r := get(t, pool, in.id)
			if tc.lands {
				if r.State != "sent" || r.LeaseOwner != nil || r.DueAt != nil || r.SentAt == nil ||
					r.ProviderMessageID != a.ProviderMessageID {
					t.Errorf("row = %v, want sent by the first worker, lease cleared", r)
				}
			} else if !reflect.DeepEqual(r, before) {
				t.Errorf("outcome of a lost lease moved the row:\nbefore %v\n after %v", before, r)
			}
			checkAttempts(t, pool, in.id, logged(worker, a, tc.logged))

			// The new owner finishes: its sent lands unless the first one's did; its attempt is
			// logged next to the first.
			b := attempt(second, workers.OutcomeSent)
			record(t, s, other, b)
			final := get(t, pool, in.id)
			if final.State != "sent" || final.LeaseOwner != nil {
				t.Errorf("row = %v, want sent", final)
			}
			if tc.lands && !reflect.DeepEqual(final, r) {
				t.Errorf("second sent moved a sent row:\nbefore %v\n after %v", r, final)
			}
			checkAttempts(t, pool, in.id, logged(worker, a, tc.logged), logged(other, b, "sent"))
		})
	}
}

// TestRecordWithoutLease: outcomes other than sent need the worker's live claim; without it the
// row stays as it is, and the attempt is still logged.
func TestRecordWithoutLease(t *testing.T) {
	s, pool := newStore(t)
	unclaimed := func(_ *testing.T, in inserted) *workers.Message {
		m := in.msg
		m.Attempt = 1
		return &m
	}
	tests := []struct {
		name    string
		fixture fixture
		// claim returns the message the worker recorded an outcome for.
		claim func(t *testing.T, in inserted) *workers.Message
	}{
		{"queued, never claimed", fixture{state: delivery.Queued, attempts: 1, due: after(time.Minute)},
			unclaimed},
		{"sending for another worker", fixture{state: delivery.Sending, attempts: 1, owner: other, due: after(time.Minute)},
			unclaimed},
		{"expired", fixture{state: delivery.Expired, attempts: 1}, unclaimed},
		{"already sent", fixture{state: delivery.Sent, attempts: 1}, unclaimed},
		{"lease expired and requeued by the reconciler", fixture{state: delivery.Queued, due: after(time.Minute)},
			func(t *testing.T, in inserted) *workers.Message {
				m := mustClaim(t, s, worker, in.id)
				if _, err := pool.Exec(ctxT(t), `UPDATE notifier.deliveries
					SET state = 'queued', lease_owner = NULL, due_at = now() + interval '1 minute'
					WHERE id = $1`, in.id); err != nil {
					t.Fatal(err)
				}
				return m
			}},
	}
	for _, tc := range tests {
		for _, o := range []string{"retry", "failed", "dead", "skipped"} {
			t.Run(tc.name+"/"+o, func(t *testing.T) {
				in := insert(t, pool, tc.fixture)
				m := tc.claim(t, in)
				before := get(t, pool, in.id)
				var a workers.Attempt
				switch o {
				case "retry":
					a = attempt(m, workers.OutcomeRetry)
				case "failed":
					a = attempt(m, workers.OutcomeFailed)
				case "dead":
					a = dead(m)
				case "skipped":
					a = attempt(m, workers.OutcomeSkipped)
				}
				record(t, s, worker, a)
				if r := get(t, pool, in.id); !reflect.DeepEqual(r, before) {
					t.Errorf("row moved:\nbefore %v\n after %v", before, r)
				}
				checkAttempts(t, pool, in.id, logged(worker, a, o))
			})
		}
	}
}

// TestRecordSentAfterRequeue: a sent outcome lands even after the reconciler took the delivery
// back from a worker it thought dead.
func TestRecordSentAfterRequeue(t *testing.T) {
	s, pool := newStore(t)
	in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
	m := mustClaim(t, s, worker, in.id)
	if _, err := pool.Exec(ctxT(t), `UPDATE notifier.deliveries
		SET state = 'queued', lease_owner = NULL, due_at = now() + interval '1 minute' WHERE id = $1`, in.id); err != nil {
		t.Fatal(err)
	}
	a := attempt(m, workers.OutcomeSent)
	record(t, s, worker, a)
	if r := get(t, pool, in.id); r.State != "sent" || r.DueAt != nil || r.SentAt == nil {
		t.Errorf("row = %v, want sent", r)
	}
	checkAttempts(t, pool, in.id, logged(worker, a, "sent"))
	if c := claimOne(t, s, other, lease, in.id); c.Status != workers.Done {
		t.Errorf("claim of the re-published message = %+v, want Done", c)
	}
}

// TestRecordBatch records several outcomes in one call, as the consumer does.
func TestRecordBatch(t *testing.T) {
	s, pool := newStore(t)
	s.RetryGrace = grace
	var ins []inserted
	var msgs []*workers.Message
	for range 5 {
		in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
		ins = append(ins, in)
	}
	for _, in := range ins {
		msgs = append(msgs, mustClaim(t, s, worker, in.id))
	}
	as := []workers.Attempt{
		attempt(msgs[0], workers.OutcomeSent),
		attempt(msgs[1], workers.OutcomeRetry),
		attempt(msgs[2], workers.OutcomeFailed),
		dead(msgs[3]),
		attempt(msgs[4], workers.OutcomeSkipped),
	}
	record(t, s, worker, as...)
	for i, want := range []string{"sent", "retrying", "failed", "dead", "skipped"} {
		if r := get(t, pool, ins[i].id); r.State != want || r.LeaseOwner != nil {
			t.Errorf("delivery %d: row %v, want %s", i, r, want)
		}
	}
	for i, want := range []string{"sent", "retry", "failed", "dead", "skipped"} {
		checkAttempts(t, pool, ins[i].id, logged(worker, as[i], want))
	}
	if r := get(t, pool, ins[1].id); r.DueAt == nil || !r.DueAt.Equal(as[1].RetryAt.Add(grace)) {
		t.Errorf("retry due_at = %v, want %v", r.DueAt, as[1].RetryAt.Add(grace))
	}
	record(t, s, worker) // nothing to record
}

// TestLife walks one delivery through two transient failures to a send, as the consumer does.
func TestLife(t *testing.T) {
	s, pool := newStore(t)
	in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
	var want []attemptRow
	for n := 1; n <= 3; n++ {
		m := mustClaim(t, s, worker, in.id)
		checkMessage(t, m, in, n)
		o := workers.OutcomeRetry
		if n == 3 {
			o = workers.OutcomeSent
		}
		a := attempt(m, o)
		a.RetryAt = time.Now().Add(-time.Second) // the backoff is over by the next claim
		record(t, s, worker, a)
		want = append(want, logged(worker, a, map[workers.Outcome]string{workers.OutcomeRetry: "retry", workers.OutcomeSent: "sent"}[o]))
	}
	r := get(t, pool, in.id)
	if r.State != "sent" || r.Attempts != 3 || r.LastError != "" || r.Reason != "" {
		t.Errorf("row = %v, want sent after 3 attempts, with the last error cleared", r)
	}
	checkAttempts(t, pool, in.id, want...)
	if c := claimOne(t, s, other, lease, in.id); c.Status != workers.Done {
		t.Errorf("claim after sent = %+v, want Done", c)
	}
}

// TestRetryWaitsForItsBackoff: a message for a retrying delivery that comes before its backoff
// ends (a duplicate publish) does not cut the backoff short.
func TestRetryWaitsForItsBackoff(t *testing.T) {
	s, pool := newStore(t)
	s.RetryGrace = grace
	in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
	m := mustClaim(t, s, worker, in.id)
	a := attempt(m, workers.OutcomeRetry)
	a.RetryAt = time.Now().Add(time.Hour)
	record(t, s, worker, a)
	c := claimOne(t, s, other, lease, in.id)
	if c.Status != workers.Busy || !c.RetryAt.Equal(a.RetryAt.Truncate(time.Microsecond)) {
		t.Fatalf("claim during the backoff = %+v, want Busy until %v", c, a.RetryAt)
	}
	if r := get(t, pool, in.id); r.State != "retrying" || r.Attempts != 1 {
		t.Fatalf("row = %v, want retrying after one attempt", r)
	}
}

// TestRelease gives claims back: the worker's own claims go back to queued, their attempt not
// counted, with the reconciler's deadline; claims it does not hold stay as they are.
func TestRelease(t *testing.T) {
	s, pool := newStore(t)
	s.RetryGrace = grace
	mine := []inserted{
		insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)}),
		insert(t, pool, fixture{state: delivery.Retrying, attempts: 2, due: after(time.Minute)}),
	}
	for _, in := range mine {
		mustClaim(t, s, worker, in.id)
	}
	theirs := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
	mustClaim(t, s, other, theirs.id)
	sent := insert(t, pool, fixture{state: delivery.Sent, attempts: 1})
	untouched := map[uuid.UUID]row{theirs.id: get(t, pool, theirs.id), sent.id: get(t, pool, sent.id)}

	t0 := dbNow(t, pool)
	ids := []uuid.UUID{mine[0].id, mine[1].id, theirs.id, sent.id, uuid.Must(uuid.NewV7())}
	if err := s.Release(ctxT(t), worker, ids); err != nil {
		t.Fatalf("Release: %v", err)
	}
	t1 := dbNow(t, pool)
	for i, want := range []int{0, 2} {
		r := get(t, pool, mine[i].id)
		if r.State != "queued" || r.LeaseOwner != nil || r.Attempts != want {
			t.Errorf("released delivery %d: row %v, want queued, no lease, %d attempts", i, r, want)
		}
		if r.DueAt == nil || r.DueAt.Add(-grace).Before(t0) || r.DueAt.Add(-grace).After(t1) {
			t.Errorf("released delivery %d: due_at %v, want now() + RetryGrace", i, r.DueAt)
		}
		if n := len(attemptRows(t, pool, mine[i].id)); n != 0 {
			t.Errorf("released delivery %d: %d attempts logged", i, n)
		}
	}
	for id, before := range untouched {
		if r := get(t, pool, id); !reflect.DeepEqual(r, before) {
			t.Errorf("delivery %s not ours moved:\nbefore %v\n after %v", id, before, r)
		}
	}
	// The next claim counts the same attempt again.
	if m := mustClaim(t, s, other, mine[1].id); m.Attempt != 3 {
		t.Errorf("attempt after release = %d, want 3", m.Attempt)
	}
}

// TestSentAlwaysLands: the provider has the message, so a sent outcome is recorded even if the
// delivery was expired or failed meanwhile (a slow send outliving its lease and ttl).
func TestSentAlwaysLands(t *testing.T) {
	for _, meanwhile := range []string{"expired", "failed", "dead", "canceled"} {
		t.Run(meanwhile, func(t *testing.T) {
			s, pool := newStore(t)
			in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
			m := mustClaim(t, s, worker, in.id)
			if _, err := pool.Exec(t.Context(), `UPDATE notifier.deliveries SET state = $2, lease_owner = NULL WHERE id = $1`,
				in.id, meanwhile); err != nil {
				t.Fatal(err)
			}
			record(t, s, worker, attempt(m, workers.OutcomeSent))
			if r := get(t, pool, in.id); r.State != "sent" {
				t.Fatalf("row = %v, want sent", r)
			}
		})
	}
}

// TestStaleAttemptDoesNotOverwrite: an outcome of an earlier attempt, recorded late by a worker
// that has since claimed the delivery again, does not overwrite the newer claim.
func TestStaleAttemptDoesNotOverwrite(t *testing.T) {
	s, pool := newStore(t)
	in := insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)})
	first := mustClaim(t, s, worker, in.id)
	// The lease runs out and the same worker claims the delivery again.
	if _, err := pool.Exec(t.Context(), `UPDATE notifier.deliveries SET due_at = now() - interval '1 second' WHERE id = $1`, in.id); err != nil {
		t.Fatal(err)
	}
	second := mustClaim(t, s, worker, in.id)
	if second.Attempt != first.Attempt+1 {
		t.Fatalf("second claim is attempt %d, want %d", second.Attempt, first.Attempt+1)
	}
	record(t, s, worker, attempt(first, workers.OutcomeFailed))
	if r := get(t, pool, in.id); r.State != "sending" {
		t.Fatalf("a stale failure moved the row to %s", r.State)
	}
}

// TestConcurrentCallsShareStatements: the channels' consumers claim and record at once, and the
// store merges their calls into shared statements; each call still gets the answers for its own
// deliveries only, and every outcome lands.
func TestConcurrentCallsShareStatements(t *testing.T) {
	s, pool := newStore(t)
	const calls, each = 8, 5
	ids := make([][]uuid.UUID, calls)
	for c := range ids {
		for range each {
			ids[c] = append(ids[c], insert(t, pool, fixture{state: delivery.Queued, due: after(time.Minute)}).id)
		}
	}
	msgs := make([][]*workers.Message, calls)
	var wg sync.WaitGroup
	for c := range calls {
		wg.Go(func() {
			claims, err := s.Claim(ctxT(t), worker, lease, ids[c])
			if err != nil {
				t.Errorf("call %d: Claim: %v", c, err)
				return
			}
			if len(claims) != each {
				t.Errorf("call %d: %d answers for its %d ids", c, len(claims), each)
			}
			for i, cl := range claims {
				if cl.ID != ids[c][i] || cl.Status != workers.Claimed {
					t.Errorf("call %d: answer %d is %s %v, want %s claimed", c, i, cl.ID, cl.Status, ids[c][i])
					continue
				}
				msgs[c] = append(msgs[c], cl.Message)
			}
		})
	}
	wg.Wait()
	for c := range calls {
		wg.Go(func() {
			var as []workers.Attempt
			for _, m := range msgs[c] {
				as = append(as, attempt(m, workers.OutcomeSent))
			}
			if err := s.Record(ctxT(t), worker, as); err != nil {
				t.Errorf("call %d: Record: %v", c, err)
			}
		})
	}
	wg.Wait()
	for c := range calls {
		for _, id := range ids[c] {
			if r := get(t, pool, id); r.State != string(delivery.Sent) {
				t.Errorf("delivery %s is %s, want sent", id, r.State)
			}
		}
	}
}

// BenchmarkClaimAndRecord is the workers' database work for one delivery: claimed in a batch
// of 64, then its outcome recorded in a batch of 64, on a real PostgreSQL (fsync off, as in
// every test). The deliveries are inserted with the timer stopped.
func BenchmarkClaimAndRecord(b *testing.B) {
	const batch = 64
	s, pool := newStore(b)
	ctx := ctxT(b)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		ids := make([]uuid.UUID, batch)
		for i := range ids {
			ids[i] = insert(b, pool, fixture{state: delivery.Queued, due: after(time.Minute), rawAddress: true}).id
		}
		b.StartTimer()
		claims, err := s.Claim(ctx, worker, lease, ids)
		if err != nil || len(claims) != batch {
			b.Fatalf("Claim = %d claims, %v", len(claims), err)
		}
		as := make([]workers.Attempt, len(claims))
		for i, c := range claims {
			as[i] = attempt(c.Message, workers.OutcomeSent)
		}
		if err := s.Record(ctx, worker, as); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "µs/delivery")
}
