// Package deliverytest is the contract of a delivery store: Run checks every transition of a
// delivery's life (DESIGN.md, "A delivery's life") against a store, so that the in-memory store
// the services' unit tests use behaves as the PostgreSQL store their deployments use. Both run
// it, and so must any other implementation.
//
// The suite drives a store through its own API. It only seeds a delivery directly, in the state
// a test starts from, and reads one back with the bookkeeping the API does not return (the lease
// owner, the re-publish count) and its attempt log.
package deliverytest

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// Store is the whole API of a delivery store. The services each consume a narrow part of it;
// the contract covers all of it.
type Store interface {
	Create(ctx context.Context, ds []delivery.Delivery) error
	Unpublished(ctx context.Context, ids []uuid.UUID, at time.Time) error
	Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error)
	Record(ctx context.Context, worker string, attempts []delivery.Attempt) error
	Release(ctx context.Context, worker string, ids []uuid.UUID) error
	Reconcile(ctx context.Context, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]delivery.Due, int, error)
	Cancel(ctx context.Context, notificationID uuid.UUID, at time.Time) (int, error)
	DeadLetters(ctx context.Context, f delivery.DeadFilter, after uuid.UUID, limit int) ([]delivery.Delivery, error)
	Redrive(ctx context.Context, f delivery.DeadFilter, now time.Time, republishAfter time.Duration) ([]delivery.Due, error)
	EraseUser(ctx context.Context, userID string) error
	Settle(ctx context.Context, events []delivery.Event) error
	OfNotification(ctx context.Context, notificationID uuid.UUID) ([]delivery.Delivery, error)
	DueDigests(ctx context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error)
	Digest(ctx context.Context, id uuid.UUID) (delivery.DigestRecord, error)
	OpenDigest(ctx context.Context, app uuid.UUID, userID, category string, ch delivery.Channel, to string) (delivery.DigestRecord, bool, error)
	CloseDigest(ctx context.Context, id uuid.UUID, now time.Time,
		build func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error)) (*delivery.Delivery, error)
}

// Row is a delivery as a store keeps it: what its API returns, with the content, and the
// bookkeeping of its own transitions.
type Row struct {
	delivery.Delivery
	// LeaseOwner is the worker that holds a sending delivery's claim; "" for none.
	LeaseOwner string
	// Publishes counts the re-publishes (by the reconciler, or a re-drive).
	Publishes int
	// Unpublished marks a queued delivery whose message never reached its queue.
	Unpublished bool
}

// Logged is an entry of the attempt log.
type Logged struct {
	Drive, Attempt    int
	Worker            string
	Provider          string
	Outcome           string
	Reason            string
	Error             string
	ProviderMessageID string
	Started           time.Time
	Latency           time.Duration
}

// Harness is one store under test, empty, and the few ways around its API that the suite needs.
// Times are kept to the microsecond, as PostgreSQL keeps them.
type Harness struct {
	Store Store
	// ReleaseGrace is the store's: how long a released delivery waits before it is due.
	ReleaseGrace time.Duration
	// Now reads the store's clock, the one its claims, records, releases, erasures and
	// settlements take as now (PostgreSQL's now()). The suite places the times it seeds
	// relative to it, and checks the times the store sets between two readings of it.
	Now func(t *testing.T) time.Time
	// Seed stores r exactly as given, every field and no rule applied, as the state a test
	// starts from. Its UserID "" is a delivery to a raw address.
	Seed func(t *testing.T, r Row)
	// Get returns delivery id as stored, or fails the test.
	Get func(t *testing.T, id uuid.UUID) Row
	// Log returns the attempt log of delivery id, by drive and attempt.
	Log func(t *testing.T, id uuid.UUID) []Logged
}

// Run runs the contract against the stores setup returns: a new, empty one for each test that
// needs one to itself.
func Run(t *testing.T, setup func(t *testing.T) Harness) {
	tests := []struct {
		name string
		run  func(t *testing.T, setup func(t *testing.T) Harness)
	}{
		{"Create", testCreate},
		{"CreateRefuses", testCreateRefuses},
		{"NothingToDo", testNothingToDo},
		{"Claim", testClaim},
		{"ClaimBatch", testClaimBatch},
		{"ClaimMany", testClaimMany},
		{"ClaimConcurrent", testClaimConcurrent},
		{"Record", testRecord},
		{"RecordRetryDeadline", testRecordRetryDeadline},
		{"RecordAfterTakeover", testRecordAfterTakeover},
		{"RecordWithoutLease", testRecordWithoutLease},
		{"SentAlwaysLands", testSentAlwaysLands},
		{"StaleAttemptDoesNotOverwrite", testStaleAttempt},
		{"RecordBatch", testRecordBatch},
		{"RecordUnknown", testRecordUnknown},
		{"Life", testLife},
		{"Release", testRelease},
		{"Reconcile", testReconcile},
		{"ReconcileCreated", testReconcileCreated},
		{"ReconcileEndsEveryDelivery", testReconcileEnds},
		{"ReconcileLimit", testReconcileLimit},
		{"ReconcileExpiresFirst", testReconcileExpiresFirst},
		{"ReconcileConcurrent", testReconcileConcurrent},
		{"ReconcileHolds", testReconcileHolds},
		{"Unpublished", testUnpublished},
		{"Cancel", testCancel},
		{"DeadLetters", testDeadLetters},
		{"Redrive", testRedrive},
		{"RedriveLife", testRedriveLife},
		{"EraseUser", testEraseUser},
		{"Settle", testSettle},
		{"SettleEarliestWins", testSettleEarliest},
		{"OfNotification", testOfNotification},
		{"ChainReleasesOnFailure", testChainReleasesOnFailure},
		{"ChainSkipsOnSuccess", testChainSkipsOnSuccess},
		{"ChainWaitsForEarlierSteps", testChainWaits},
		{"ChainStepTimeout", testChainStepTimeout},
		{"ChainEventStops", testChainEventStops},
		{"ChainBounceReleases", testChainBounceReleases},
		{"ChainConcurrent", testChainConcurrent},
		{"ChainEnds", testChainEnds},
		{"ChainRedrive", testChainRedrive},
		{"DigestCollectsAndClosesOnce", testDigestCloses},
		{"DigestNotDue", testDigestNotDue},
		{"DigestOpensAnewAfterClose", testDigestAnew},
		{"DigestOfCanceledItems", testDigestCanceled},
		{"DigestItemExpires", testDigestExpires},
		{"DigestBuildFails", testDigestBuildFails},
		{"DigestEraseUser", testDigestEraseUser},
		{"DigestConcurrent", testDigestConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, setup) })
	}
}

// Workers and the lease they claim for.
const (
	worker = "worker-a"
	other  = "worker-b"
	lease  = 10 * time.Minute
)

// content has every field set, unicode, markup and nested data in the shape JSON decodes to,
// so that a store that loses or changes any of it shows.
func content() delivery.Content {
	return delivery.Content{
		Title:   "Sign-in from a new device",
		Body:    "Ünïcödé ✓ \"quoted\" <b>bold</b> & more",
		Subject: "Your code",
		HTML:    "<p>Your code is <b>123456</b></p>",
		Text:    "Your code is 123456",
		Data: map[string]any{
			"code":   "123456",
			"nested": map[string]any{"n": 2.5, "ok": true, "none": nil, "list": []any{"a", 2.0, map[string]any{}}},
		},
	}
}

// spec is a delivery as a test needs it before the call under test, its times relative to
// the store's clock.
type spec struct {
	state    delivery.State
	attempts int
	drive    int
	owner    string         // lease owner
	due      *time.Duration // due_at after now; nil: none
	ttl      time.Duration  // expires_at after now; 0: an hour
	// notification, when set, is the delivery's notification; a new one otherwise.
	notification uuid.UUID
	channel      delivery.Channel // "": email
	user         string           // "": a user of its own
	raw          bool             // sent to an address, no user
	reason       string
	publishes    int
	unpublished  bool
	provider     string
	pmid         string
	sent         *time.Duration // sent_at after now
	step         int            // place in a fallback chain; 0: none
	stepTimeout  time.Duration
}

func after(d time.Duration) *time.Duration { return &d }

// clock reads the store's clock, to the microsecond.
func clock(t *testing.T, h Harness) time.Time {
	t.Helper()
	return h.Now(t).Truncate(time.Microsecond).UTC()
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// appOfTests is the calling app of the deliveries the suite makes.
var appOfTests = uuid.MustParse("0190f5a2-7b3c-7d4e-8f90-a1b2c3d4e5f6")

// row builds the delivery sp describes, with the clock at now. The category's rules are the
// opposite of what a store defaults to, so that losing them shows.
func row(sp spec, now time.Time) Row {
	id := newID()
	r := Row{
		Delivery: delivery.Delivery{
			ID:                id,
			NotificationID:    sp.notification,
			UserID:            "user-" + id.String()[24:],
			AppID:             appOfTests,
			Channel:           delivery.Email,
			To:                "ada-" + id.String()[24:] + "@example.com",
			Category:          "security",
			Priority:          delivery.High,
			Critical:          true,
			DefaultOptIn:      false,
			State:             sp.state,
			Reason:            sp.reason,
			Content:           content(),
			Attempts:          sp.attempts,
			Drive:             sp.drive,
			Provider:          sp.provider,
			ProviderMessageID: sp.pmid,
			DueAt:             at(now, sp.due),
			ExpiresAt:         now.Add(time.Hour),
			// In the past, so that any change of the row shows.
			CreatedAt:   now.Add(-time.Hour),
			UpdatedAt:   now.Add(-time.Hour),
			SentAt:      at(now, sp.sent),
			Step:        sp.step,
			StepTimeout: sp.stepTimeout,
		},
		LeaseOwner:  sp.owner,
		Publishes:   sp.publishes,
		Unpublished: sp.unpublished,
	}
	if sp.ttl != 0 {
		r.ExpiresAt = now.Add(sp.ttl)
	}
	if r.NotificationID == uuid.Nil {
		r.NotificationID = newID()
	}
	if sp.channel != "" {
		r.Channel = sp.channel
	}
	if sp.user != "" {
		r.UserID = sp.user
	}
	if sp.raw {
		r.UserID = ""
	}
	return r
}

func at(now time.Time, d *time.Duration) *time.Time {
	if d == nil {
		return nil
	}
	return ptr(now.Add(*d))
}

func ptr[T any](v T) *T { return &v }

// seed stores the delivery sp describes and returns it as stored.
func seed(t *testing.T, h Harness, sp spec) Row {
	t.Helper()
	r := row(sp, clock(t, h))
	h.Seed(t, r)
	return r
}

// check compares a delivery as stored with the one wanted, field by field.
func check(t *testing.T, what string, got, want Row) {
	t.Helper()
	if d := diff(got, want); d != "" {
		t.Errorf("%s:\n%s", what, d)
	}
}

// unchanged checks that delivery r is still as it was.
func unchanged(t *testing.T, h Harness, r Row) {
	t.Helper()
	check(t, "a delivery that must not move", h.Get(t, r.ID), r)
}

// diff lists the fields in which got and want differ; "" if none. Times are compared as
// instants.
func diff(got, want any) string {
	var b strings.Builder
	diffValue(&b, "", reflect.ValueOf(normalize(got)), reflect.ValueOf(normalize(want)))
	return b.String()
}

// normalize returns v with every time in UTC, so that reflect.DeepEqual compares instants.
func normalize(v any) any {
	switch v := v.(type) {
	case Row:
		v.Delivery = normalize(v.Delivery).(delivery.Delivery)
		return v
	case delivery.Delivery:
		v.DueAt, v.SentAt = utcPtr(v.DueAt), utcPtr(v.SentAt)
		v.ExpiresAt, v.CreatedAt, v.UpdatedAt = v.ExpiresAt.UTC(), v.CreatedAt.UTC(), v.UpdatedAt.UTC()
		return v
	case Logged:
		v.Started = v.Started.UTC()
		return v
	}
	return v
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return ptr(t.UTC())
}

func diffValue(b *strings.Builder, path string, got, want reflect.Value) {
	if got.Kind() == reflect.Struct && got.Type() != reflect.TypeFor[time.Time]() {
		for i := range got.NumField() {
			f := got.Type().Field(i)
			name := f.Name
			if f.Anonymous {
				name = ""
			} else if path != "" {
				name = path + "." + name
			}
			diffValue(b, name, got.Field(i), want.Field(i))
		}
		return
	}
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		fmt.Fprintf(b, "\t%s: got %s, want %s\n", path, show(got), show(want))
	}
}

func show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "nil"
		}
		v = v.Elem()
	}
	if t, ok := v.Interface().(time.Time); ok {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%#v", v.Interface())
}

// within checks that a time the store set from its clock lies between two readings of it.
func within(t *testing.T, what string, got *time.Time, t0, t1 time.Time) {
	t.Helper()
	if got == nil || got.Before(t0) || got.After(t1) {
		t.Errorf("%s = %s, want within [%s, %s]", what, fmtTime(got), fmtTime(&t0), fmtTime(&t1))
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "nil"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func ids(rows ...Row) []uuid.UUID {
	out := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}
