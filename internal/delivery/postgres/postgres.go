// Package postgres keeps deliveries and their attempt log in PostgreSQL (schema "delivery") and
// makes every transition of a delivery's life there (see DESIGN.md, "A delivery's life"): each
// is one conditional statement, so two workers never both own a delivery and a late or repeated
// message finds nothing to do. It is the only writer of its tables; the notifier, the workers and
// the reconciler reach it through narrow interfaces of their own, and other packages may read
// the tables in their own queries (statistics, joins).
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema of the deliveries and the attempt log.
const Schema = "delivery"

// Migrate brings the delivery schema up to date. Every service that uses the store runs it; an
// advisory lock lets them start together.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// DB is what a Store runs its statements on: a pool, or a transaction of the caller's.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error)
	// Begin starts a transaction (a savepoint in a transaction), for the transitions that take
	// more than one statement (CloseDigest).
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store makes the transitions of deliveries. Claims and records of concurrent callers (the
// channels' consumers of a workers process) are merged into shared statements, so the database
// sees one claim and one record statement per round for every channel, not one per channel.
type Store struct {
	db DB
	// ReleaseGrace is how long a delivery given back unsent (Release) waits for its message to
	// come back before the reconciler publishes it again.
	ReleaseGrace time.Duration

	claims  *batch.Batcher[claimCall, []delivery.Delivery]
	records *batch.Batcher[recordCall, struct{}]
}

// New returns a Store on pool. Close stops its merging of calls.
func New(pool *pgxpool.Pool) *Store {
	s := &Store{db: pool, ReleaseGrace: time.Minute}
	// Two statements of each kind at most in flight: under load the calls that arrive while
	// both run share the next one.
	s.claims = batch.New(s.claimBatch, 16, 2)
	s.records = batch.New(s.recordBatch, 16, 2)
	return s
}

// In returns the store's transitions run in tx, one statement per call, so that they commit
// with whatever else tx writes.
func (s *Store) In(tx pgx.Tx) *Store {
	return &Store{db: tx, ReleaseGrace: s.ReleaseGrace}
}

// Close stops merging calls; Claim and Record fail after it.
func (s *Store) Close() {
	if s.claims != nil {
		s.claims.Close()
		s.records.Close()
	}
}

// createColumns are the columns Create writes, in the order of its rows' values.
var createColumns = []string{"id", "notification_id", "user_id", "channel", "address", "category", "priority",
	"critical", "default_opt_in", "state", "reason", "content", "due_at", "expires_at", "created_at", "updated_at",
	"app_id", "step", "step_timeout", "digest_id"}

// Create stores new deliveries with COPY: no statement to plan, and values encoded in binary by
// their column's type, not by reflection over parameters. A delivery with a Digest is collected
// into its recipient's open digest (see collect), whose id Create sets in its DigestID.
func (s *Store) Create(ctx context.Context, ds []delivery.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	if slices.ContainsFunc(ds, func(d delivery.Delivery) bool { return d.InDigest() }) {
		// The items must commit with the lock collect takes on their digests' rows (see
		// digest.go): in a transaction of their own, or a savepoint of the caller's.
		tx, err := s.db.Begin(ctx)
		if err != nil {
			return pgdb.Err(err)
		}
		defer tx.Rollback(ctx)
		in := s.In(tx)
		if err := in.collect(ctx, ds); err != nil {
			return err
		}
		if err := in.copy(ctx, ds); err != nil {
			return err
		}
		return pgdb.Err(tx.Commit(ctx))
	}
	return s.copy(ctx, ds)
}

// copy stores ds with COPY.
func (s *Store) copy(ctx context.Context, ds []delivery.Delivery) error {
	rows := make([][]any, len(ds))
	for i := range ds {
		d := &ds[i]
		content, err := json.Marshal(d.Content)
		if err != nil {
			return fmt.Errorf("encode content of delivery %s: %w", d.ID, err)
		}
		rows[i] = []any{pgdb.UUID(d.ID), pgdb.UUID(d.NotificationID), pgdb.Text(d.UserID), string(d.Channel), d.To,
			d.Category, string(d.Priority), d.Critical, d.DefaultOptIn, string(d.State), d.Reason, content,
			pgdb.Time(d.DueAt), d.ExpiresAt, d.CreatedAt, d.CreatedAt, appID(d.AppID),
			int32(d.Step), d.StepTimeout, optUUID(d.DigestID)}
	}
	_, err := s.db.CopyFrom(ctx, pgx.Identifier{Schema, "deliveries"}, createColumns, pgx.CopyFromRows(rows))
	return pgdb.Err(err)
}

// Unpublished marks queued deliveries whose message did not reach their queue as due at at, so
// that the reconciler's next pass publishes them instead of waiting out their deadline, and does
// not hold them as waiting in the queue.
func (s *Store) Unpublished(ctx context.Context, ids []uuid.UUID, at time.Time) error {
	_, err := s.db.Exec(ctx, unpublishedSQL, pgdb.UUIDs(ids), at)
	return pgdb.Err(err)
}

type claimCall struct {
	worker string
	lease  time.Duration
	ids    []uuid.UUID
}

type recordCall struct {
	worker   string
	attempts []delivery.Attempt
}

// Claim takes the deliveries among ids that may be sent now for worker, each for lease, and
// returns them in the state sending with their attempt counted, with what a worker needs to send
// them (content included) but not what earlier attempts left (reason, last error, provider,
// sent time). A delivery may be sent when it is queued, when its retry's backoff is over, or
// when the lease of a worker that held it expired; and never past its ttl. The ids it does not return have nothing to do here: they are
// terminal, unknown, held by a live worker (which records them, or whose lease the reconciler
// ends), or wait for their time (which the reconciler publishes).
func (s *Store) Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error) {
	if s.claims == nil {
		return s.claim(ctx, worker, lease, ids)
	}
	return s.claims.Do(ctx, claimCall{worker: worker, lease: lease, ids: ids})
}

// claimBatch claims the deliveries of several calls, in one statement for the calls of one
// worker and lease (every call, in practice), and hands each claim to the first call that
// named its id.
func (s *Store) claimBatch(ctx context.Context, calls []claimCall) ([][]delivery.Delivery, []error, error) {
	out := make([][]delivery.Delivery, len(calls))
	errs := make([]error, len(calls))
	type key struct {
		worker string
		lease  time.Duration
	}
	for _, g := range groupBy(calls, func(c claimCall) key { return key{c.worker, c.lease} }) {
		if len(g) == 1 {
			out[g[0]], errs[g[0]] = s.claim(ctx, calls[g[0]].worker, calls[g[0]].lease, calls[g[0]].ids)
			continue
		}
		var ids []uuid.UUID
		for _, i := range g {
			ids = append(ids, calls[i].ids...)
		}
		claimed, err := s.claim(ctx, calls[g[0]].worker, calls[g[0]].lease, ids)
		byID := make(map[uuid.UUID]int, len(claimed))
		for i := range claimed {
			byID[claimed[i].ID] = i
		}
		for _, i := range g {
			if errs[i] = err; err != nil {
				continue
			}
			for _, id := range calls[i].ids {
				if j, ok := byID[id]; ok {
					out[i] = append(out[i], claimed[j])
					// One claim, one caller: as it would were the calls made one by one, or two
					// consumers would both send the delivery.
					delete(byID, id)
				}
			}
		}
	}
	return out, errs, nil
}

// groupBy returns the indexes of calls grouped by key, in order of first appearance.
func groupBy[C any, K comparable](calls []C, key func(C) K) [][]int {
	var groups [][]int
	at := map[K]int{}
	for i, c := range calls {
		k := key(c)
		g, ok := at[k]
		if !ok {
			g = len(groups)
			at[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

func (s *Store) claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error) {
	rows, err := s.db.Query(ctx, claimSQL, worker, lease, pgdb.UUIDs(ids))
	if err != nil {
		return nil, pgdb.Err(err)
	}
	// Room for every id at once: a claim usually takes them all, and a slice of deliveries
	// grown step by step copied each one several times (6% of what the workers allocated).
	claimed, err := pgx.AppendRows(make([]delivery.Delivery, 0, len(ids)), rows, scanClaimed)
	return claimed, pgdb.Err(err)
}

// The statements of the hot path find their rows by id (or notification) alone. Their tests of
// state and deadline are CASE expressions, which the planner cannot match to a partial index:
// with a plain "state = 'queued'", a plan made when statistics saw no backlog (a generic plan,
// or a fresh ANALYZE before a burst) would scan every queued delivery through deliveries_open
// or deliveries_due to find the few it names, and cost a millisecond a row (TestPlans).
const (
	// claimSQL claims deliveries ($3) for a worker ($1) and a lease ($2).
	claimSQL = `
		UPDATE delivery.deliveries d SET
			state = 'sending', lease_owner = $1, attempts = d.attempts + 1,
			due_at = now() + $2, updated_at = now()
		WHERE d.id = ANY($3) AND d.expires_at > now() AND CASE d.state
			WHEN 'queued' THEN true
			WHEN 'retrying' THEN d.due_at <= now()
			WHEN 'sending' THEN d.due_at <= now()
			ELSE false END
		RETURNING ` + claimedColumns
	// unpublishedSQL marks queued deliveries ($1) due at $2, their message lost.
	unpublishedSQL = `
		UPDATE delivery.deliveries SET due_at = least(due_at, $2), published = false
		WHERE id = ANY($1) AND CASE WHEN state = 'queued' THEN true ELSE false END`
	// releaseSQL gives a worker's ($1) deliveries ($2) back, due after $3.
	releaseSQL = `
		UPDATE delivery.deliveries SET state = 'queued', lease_owner = NULL, attempts = attempts - 1,
			due_at = least(expires_at, now() + $3::interval), updated_at = now()
		WHERE id = ANY($2) AND CASE WHEN state = 'sending' AND lease_owner = $1 THEN true ELSE false END`
	// recordSQL records attempts: $1 the worker, $2-$14 the attempts' fields. A terminal outcome
	// leaves no deadline (least() would take the expiry for a NULL retry_at). The deliveries are
	// found by id ($2) too, not only through the join, so that the plan starts from them.
	recordSQL = `
		WITH u AS (
			SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::timestamptz[], $9::int[], $10::text[], $11::timestamptz[], $12::bigint[], $13::int[], $14::bool[])
				AS u(id, state, reason, error, provider, pmid, retry_at, attempt, outcome, started, latency_us, drive, moves)
		), moved AS (
			UPDATE delivery.deliveries d SET
				state = u.state, reason = u.reason, last_error = u.error, provider = u.provider,
				provider_message_id = u.pmid, lease_owner = NULL, updated_at = now(),
				due_at = CASE WHEN u.state = 'retrying' THEN least(u.retry_at, d.expires_at) END,
				sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE d.sent_at END
			FROM u
			WHERE d.id = ANY($2) AND d.id = u.id AND u.moves AND CASE WHEN u.state = 'sent'
				THEN d.state NOT IN ('sent', 'delivered', 'bounced')
				ELSE d.state = 'sending' AND d.lease_owner = $1 AND d.attempts = u.attempt AND d.drive = u.drive END
			RETURNING d.id, d.notification_id, d.step, d.state
		), marked AS (
			` + markChainsSQL + `
		)
		INSERT INTO delivery.attempts (delivery_id, drive, attempt, worker, provider, outcome, reason, error,
			provider_message_id, started_at, latency_us)
		SELECT u.id, u.drive, u.attempt, $1, u.provider, u.outcome, u.reason, u.error, u.pmid, u.started, u.latency_us
		FROM u
		ON CONFLICT (delivery_id, drive, attempt) DO NOTHING`
	// markChainsSQL, a CTE after one named moved (deliveries that moved on, with their
	// notification_id, step and new state), makes the later steps of their fallback chains due
	// now, so that the reconciler's next pass decides them (see Reconcile). A retry moves no
	// chain on. It only marks: deciding here would read the chain as of this statement's start,
	// and two steps of one chain recorded at once would each miss the other's outcome. The steps
	// are found by notification alone (a CASE hides the rest from the planner), for the reason
	// the hot path's statements find their rows by id (see above).
	markChainsSQL = `UPDATE delivery.deliveries w SET due_at = now()
			FROM (SELECT DISTINCT notification_id, step FROM moved WHERE step > 0 AND state <> 'retrying') m
			WHERE w.notification_id = m.notification_id
				AND CASE WHEN w.state = 'waiting' AND w.step > m.step AND w.due_at > now() THEN true ELSE false END`
	// cancelSQL cancels the deliveries of notifications ($1) not yet being sent, at $2.
	cancelSQL = `
		UPDATE delivery.deliveries SET state = 'canceled', reason = 'canceled', due_at = NULL, updated_at = $2
		WHERE notification_id = ANY($1) AND CASE WHEN state IN ('scheduled', 'waiting', 'queued', 'retrying') THEN true ELSE false END`
)

const claimedColumns = `d.id, d.notification_id, coalesce(d.user_id, ''), d.channel, d.address, d.category,
	d.priority, d.critical, d.default_opt_in, d.state, d.content, d.attempts, d.drive, d.due_at, d.expires_at,
	d.created_at, d.updated_at, d.app_id, d.step, d.step_timeout`

func scanClaimed(r pgx.CollectableRow) (delivery.Delivery, error) {
	var d delivery.Delivery
	var ch, priority, state string
	var content []byte
	var app pgtype.UUID
	err := r.Scan(&d.ID, &d.NotificationID, &d.UserID, &ch, &d.To, &d.Category, &priority, &d.Critical,
		&d.DefaultOptIn, &state, &content, &d.Attempts, &d.Drive, &d.DueAt, &d.ExpiresAt, &d.CreatedAt, &d.UpdatedAt, &app,
		&d.Step, &d.StepTimeout)
	if err != nil {
		return d, err
	}
	d.AppID = uuid.UUID(app.Bytes) // zero when NULL
	d.Channel, d.Priority, d.State = delivery.Channel(ch), delivery.Priority(priority), delivery.State(state)
	if err := json.Unmarshal(content, &d.Content); err != nil {
		return d, fmt.Errorf("decode content of delivery %s: %w", d.ID, err)
	}
	return d, nil
}

// Record stores what became of claims, and appends them to the attempt log, in one statement.
// A sent delivery always lands, whatever became of the delivery meanwhile (the provider has the
// message), unless a provider's event moved it on already; any other outcome lands only while
// worker still holds the lease of that attempt. A retry's next deadline never passes the
// delivery's expiry, so that expiry is noticed on time.
func (s *Store) Record(ctx context.Context, worker string, attempts []delivery.Attempt) error {
	if s.records == nil {
		return s.record(ctx, worker, attempts)
	}
	_, err := s.records.Do(ctx, recordCall{worker: worker, attempts: attempts})
	return err
}

func (s *Store) recordBatch(ctx context.Context, calls []recordCall) ([]struct{}, []error, error) {
	errs := make([]error, len(calls))
	for _, g := range groupBy(calls, func(c recordCall) string { return c.worker }) {
		var attempts []delivery.Attempt
		for _, i := range g {
			attempts = append(attempts, calls[i].attempts...)
		}
		err := s.record(ctx, calls[g[0]].worker, attempts)
		for _, i := range g {
			errs[i] = err
		}
	}
	return make([]struct{}, len(calls)), errs, nil
}

func (s *Store) record(ctx context.Context, worker string, attempts []delivery.Attempt) error {
	n := len(attempts)
	ids := make([]uuid.UUID, n)
	states, outcomes := make([]string, n), make([]string, n)
	reasons, errTexts := make([]string, n), make([]string, n)
	providers, pmids := make([]string, n), make([]string, n)
	retries := make([]*time.Time, n)
	nums, drives := make([]int32, n), make([]int32, n)
	started, latency := make([]time.Time, n), make([]int64, n)
	for i, a := range attempts {
		ids[i], nums[i], drives[i] = a.DeliveryID, int32(a.Attempt), int32(a.Drive)
		states[i], outcomes[i] = string(a.State), a.State.Outcome()
		reasons[i], errTexts[i], providers[i], pmids[i] = a.Reason, a.Error, a.Provider, a.ProviderMessageID
		started[i], latency[i] = a.Started, a.Latency.Microseconds()
		if a.State == delivery.Retrying {
			retries[i] = &attempts[i].RetryAt
		}
	}
	_, err := s.db.Exec(ctx, recordSQL,
		worker, pgdb.UUIDs(ids), states, reasons, errTexts, providers, pmids, retries, nums, outcomes, started, latency, drives,
		moving(attempts))
	return pgdb.Err(err)
}

// moving tells which of attempts may move their delivery, so that one statement ends where
// recording them one by one would, whatever their order: of several answers for one delivery,
// the first sent (which lands whatever else came, and after which nothing else does), or
// failing one, the first answer to each claim (of which only the one the worker still holds can
// land). Without it, the UPDATE would join a delivery with several of them and apply any one.
func moving(attempts []delivery.Attempt) []bool {
	type claim struct {
		id             uuid.UUID
		drive, attempt int
	}
	sent := map[uuid.UUID]int{}
	for i, a := range attempts {
		if _, ok := sent[a.DeliveryID]; !ok && a.State == delivery.Sent {
			sent[a.DeliveryID] = i
		}
	}
	moves := make([]bool, len(attempts))
	seen := map[claim]bool{}
	for i, a := range attempts {
		if first, ok := sent[a.DeliveryID]; ok {
			moves[i] = i == first
			continue
		}
		c := claim{a.DeliveryID, a.Drive, a.Attempt}
		moves[i] = !seen[c]
		seen[c] = true
	}
	return moves
}

// Release gives claimed deliveries back unsent, their attempt not counted, when worker cannot
// send them now: they are queued again, and due for the reconciler after ReleaseGrace in case
// their message does not come back.
func (s *Store) Release(ctx context.Context, worker string, ids []uuid.UUID) error {
	_, err := s.db.Exec(ctx, releaseSQL, worker, pgdb.UUIDs(ids), s.ReleaseGrace)
	return pgdb.Err(err)
}

// Reconcile takes up to limit deliveries whose deadline has passed and moves each on: a
// scheduled delivery, a retry whose backoff is over, a queued one whose message seems lost and
// one whose worker's lease expired are queued (again) and returned to publish; one past its ttl
// is expired. It returns the deliveries to publish and how many it expired. held maps a channel
// to the publish time of the oldest message in its queue that no worker has received yet: a
// queued delivery of the channel last published at or after it is returned Held, not to be
// published, and looked at again after republishAfter. Each re-publish of a delivery doubles
// its next deadline (up to 64 times republishAfter), so a long backlog is not multiplied. Rows
// another reconciler holds are skipped.
func (s *Store) Reconcile(ctx context.Context, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]delivery.Due, int, error) {
	if limit <= 0 {
		return nil, 0, nil
	}
	heldChannels := make([]string, 0, len(held))
	heldSince := make([]time.Time, 0, len(held))
	for ch, since := range held {
		heldChannels, heldSince = append(heldChannels, string(ch)), append(heldSince, since)
	}
	// Expire first, in its own batches, so that a backlog of expired rows cannot fill the
	// batches below and hold up the rows that are due.
	expired := 0
	for {
		tag, err := s.db.Exec(ctx, `
			WITH due AS (
				SELECT id FROM delivery.deliveries
				WHERE due_at <= $1 AND expires_at <= $1
				ORDER BY due_at
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			)
			UPDATE delivery.deliveries d SET state = 'expired', reason = 'ttl', due_at = NULL,
				lease_owner = NULL, updated_at = $1
			FROM due WHERE d.id = due.id`, now, limit)
		if err != nil {
			return nil, expired, pgdb.Err(err)
		}
		expired += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(limit) {
			break
		}
	}
	steps, err := s.decideSteps(ctx, now, republishAfter, limit)
	if err != nil || len(steps) == limit {
		return steps, expired, err
	}
	limit -= len(steps)
	// A queued delivery last published (updated_at) no earlier than the oldest message its
	// channel's workers have not received yet is held: its message is most likely still in the
	// queue, so it is looked at again after republishAfter, unpublished, with its publish time
	// kept. One whose publish failed (published false, see Unpublished) has no message to wait
	// for, and is not held.
	rows, err := s.db.Query(ctx, `
		WITH due AS (
			SELECT id, state AS was, state = 'queued' AND published AND expires_at > $1 AND EXISTS (
				SELECT 1 FROM unnest($4::text[], $5::timestamptz[]) h(channel, since)
				WHERE h.channel = deliveries.channel AND deliveries.updated_at >= h.since) AS held
			FROM delivery.deliveries
			WHERE due_at <= $1 AND state <> 'waiting'
			ORDER BY due_at
			LIMIT $3
			FOR UPDATE SKIP LOCKED
		), moved AS (
			UPDATE delivery.deliveries d SET
				state = CASE WHEN d.expires_at <= $1 THEN 'expired' ELSE 'queued' END,
				reason = CASE WHEN d.expires_at <= $1 THEN 'ttl' ELSE d.reason END,
				publishes = d.publishes + CASE WHEN due.held OR due.was IN ('scheduled', 'retrying') THEN 0 ELSE 1 END,
				due_at = CASE WHEN d.expires_at <= $1 THEN NULL
					WHEN due.held THEN least(d.expires_at, $1 + $2::interval)
					ELSE least(d.expires_at, $1 + $2::interval * power(2, least(d.publishes, 6))) END,
				lease_owner = NULL,
				updated_at = CASE WHEN due.held THEN d.updated_at ELSE $1 END,
				published = d.published OR NOT due.held
			FROM due WHERE d.id = due.id
			RETURNING d.id, d.channel, d.state, due.was, due.held
		)
		SELECT id, channel, was IN ('scheduled', 'retrying'), held FROM moved WHERE state <> 'expired'`,
		now, republishAfter, limit, heldChannels, heldSince)
	if err != nil {
		return nil, expired, pgdb.Err(err)
	}
	dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (delivery.Due, error) {
		var d delivery.Due
		var ch string
		err := r.Scan(&d.ID, &ch, &d.OnTime, &d.Held)
		d.Channel = delivery.Channel(ch)
		return d, err
	})
	if err != nil {
		return nil, expired, pgdb.Err(err)
	}
	return append(steps, dues...), expired, nil
}

// decideStepsSQL decides the waiting steps of fallback chains that are due ($1 now, $2 the
// re-publish deadline, $3 the limit), from the steps before each (its priors):
//   - skip (fallback_not_needed) when a prior reached the recipient: delivered, or sent in a
//     chain without a step timeout;
//   - wait when a prior is still on its way (or waits itself), looked at again after $2 (a
//     record marks it due sooner; the deadline covers a mark this statement's snapshot missed);
//   - wait for the step timeout of a sent prior;
//   - otherwise (every prior failed for good, or was sent a step timeout ago) queue it, and
//     return it to publish; a sent prior whose timeout ran out gets the reason step_timeout,
//     which says why the chain moved on past it.
//
// Deciding here, not in the statement that records a prior's outcome, reads the whole chain as
// committed when the decision is made: two steps recorded at once cannot both miss the other.
// The row lock (FOR UPDATE) makes the decision once; a record or event that marks the row
// meanwhile waits for it, and marks it due again.
const decideStepsSQL = `
	WITH due AS (
		SELECT w.id, w.notification_id, w.step, v.verdict, v.timer
		FROM delivery.deliveries w, LATERAL (
			SELECT CASE
					WHEN bool_or(p.state = 'delivered' OR (p.state = 'sent' AND p.step_timeout = '0')) THEN 'skip'
					WHEN bool_or(p.state IN ` + unfinished + `) THEN 'wait'
					WHEN bool_or(p.state = 'sent' AND p.sent_at + p.step_timeout > $1) THEN 'timer'
					ELSE 'queue' END AS verdict,
				min(p.sent_at + p.step_timeout) FILTER (WHERE p.state = 'sent' AND p.sent_at + p.step_timeout > $1) AS timer
			FROM delivery.deliveries p
			WHERE p.notification_id = w.notification_id AND p.step > 0 AND p.step < w.step
		) v
		WHERE w.due_at <= $1 AND w.state = 'waiting' AND w.expires_at > $1
		ORDER BY w.due_at
		LIMIT $3
		FOR UPDATE OF w SKIP LOCKED
	), moved AS (
		UPDATE delivery.deliveries d SET
			state = CASE due.verdict WHEN 'skip' THEN 'skipped' WHEN 'queue' THEN 'queued' ELSE 'waiting' END,
			reason = CASE due.verdict WHEN 'skip' THEN '` + delivery.ReasonFallbackNotNeeded + `' ELSE d.reason END,
			due_at = CASE due.verdict WHEN 'skip' THEN NULL
				WHEN 'timer' THEN least(d.expires_at, due.timer)
				ELSE least(d.expires_at, $1 + $2::interval) END,
			updated_at = CASE WHEN due.verdict IN ('skip', 'queue') THEN $1 ELSE d.updated_at END,
			published = true
		FROM due WHERE d.id = due.id
		RETURNING d.id, d.channel, d.state
	), timed_out AS (
		UPDATE delivery.deliveries p SET reason = '` + delivery.ReasonStepTimeout + `'
		FROM due
		WHERE due.verdict = 'queue' AND p.notification_id = due.notification_id
			AND p.step > 0 AND p.step < due.step AND p.state = 'sent' AND p.reason = ''
	)
	SELECT id, channel FROM moved WHERE state = 'queued'`

// decideSteps decides up to limit due waiting steps (decideStepsSQL) and returns those it
// queued, to publish. Their time came: they are OnTime, no sign of a lost message.
func (s *Store) decideSteps(ctx context.Context, now time.Time, republishAfter time.Duration, limit int) ([]delivery.Due, error) {
	rows, err := s.db.Query(ctx, decideStepsSQL, now, republishAfter, limit)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (delivery.Due, error) {
		d := delivery.Due{OnTime: true}
		var ch string
		err := r.Scan(&d.ID, &ch)
		d.Channel = delivery.Channel(ch)
		return d, err
	})
	return dues, pgdb.Err(err)
}

// Cancel cancels the deliveries of a notification that are not yet being sent and returns how
// many. A delivery a worker holds ('sending') is past cancelling: the provider call may already
// be made.
func (s *Store) Cancel(ctx context.Context, notificationID uuid.UUID, at time.Time) (int, error) {
	return s.CancelAll(ctx, []uuid.UUID{notificationID}, at)
}

// CancelAll cancels the deliveries of notifications as Cancel does, in one statement, and
// returns how many: a topic send's cancel goes through its recipients a page at a time.
func (s *Store) CancelAll(ctx context.Context, notificationIDs []uuid.UUID, at time.Time) (int, error) {
	tag, err := s.db.Exec(ctx, cancelSQL, pgdb.UUIDs(notificationIDs), at)
	return int(tag.RowsAffected()), pgdb.Err(err)
}

// redriveBlocked holds for a dead step of a fallback chain (in deliveries) that another step of
// its chain took over: sent, delivered or on its way.
const redriveBlocked = `(step > 0 AND EXISTS (SELECT 1 FROM delivery.deliveries o
	WHERE o.notification_id = deliveries.notification_id AND o.step > 0 AND o.id <> deliveries.id
		AND o.state IN ('scheduled', 'queued', 'sending', 'retrying', 'sent', 'delivered')))`

// deadFilter is the WHERE clause shared by listing and re-driving dead letters: $1 ids (empty:
// any), $2 channel ("" any), $3 reason ("" any).
const deadFilter = `state = 'dead' AND (cardinality($1::uuid[]) = 0 OR id = ANY($1))
	AND ($2 = '' OR channel = $2) AND ($3 = '' OR reason = $3)`

func filterArgs(f delivery.DeadFilter) []any {
	ids := f.IDs
	if ids == nil {
		ids = []uuid.UUID{}
	}
	return []any{pgdb.UUIDs(ids), string(f.Channel), f.Reason}
}

// DeadLetters lists up to limit dead deliveries matching f, by id, after the given id.
func (s *Store) DeadLetters(ctx context.Context, f delivery.DeadFilter, after uuid.UUID, limit int) ([]delivery.Delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT `+readColumns+` FROM delivery.deliveries
		WHERE `+deadFilter+` AND id > $4 ORDER BY id LIMIT $5`, append(filterArgs(f), after, limit)...)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	list, err := pgx.CollectRows(rows, scanRead)
	return list, pgdb.Err(err)
}

// Redrive queues the dead deliveries matching f again and returns them to publish. Each gets a
// new drive (a fresh attempt budget; the attempt log keeps the old drives) and, if its ttl ran
// out while it was dead, a fresh ttl. A step of a fallback chain stays dead when another step
// of its chain reached the recipient or is on its way (redriveBlocked): sent again, it would
// be a second channel's message.
func (s *Store) Redrive(ctx context.Context, f delivery.DeadFilter, now time.Time, republishAfter time.Duration) ([]delivery.Due, error) {
	rows, err := s.db.Query(ctx, `
		UPDATE delivery.deliveries SET state = 'queued', attempts = 0, drive = drive + 1, reason = '',
			publishes = publishes + 1, due_at = $4::timestamptz + $5::interval, published = true,
			expires_at = greatest(expires_at, $4::timestamptz + $6::interval), updated_at = $4
		WHERE `+deadFilter+` AND NOT `+redriveBlocked+`
		RETURNING id, channel`,
		append(filterArgs(f), now, republishAfter, delivery.DefaultTTL)...)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (delivery.Due, error) {
		var d delivery.Due
		var ch string
		err := r.Scan(&d.ID, &ch)
		d.Channel = delivery.Channel(ch)
		return d, err
	})
	return dues, pgdb.Err(err)
}

// unfinished is the SQL list of the states delivery.State.Terminal calls not terminal, for the
// statements that tell a delivery that may still be sent from a finished one
// (TestUnfinishedStates keeps the two in step).
const unfinished = "('scheduled', 'waiting', 'queued', 'sending', 'retrying')"

// EraseUser removes the addresses and content of every delivery to a deleted user, keeping
// only the user id in the history, and cancels those not yet sent.
func (s *Store) EraseUser(ctx context.Context, userID string) error {
	// The user's open digests close first, with nothing to send (their items are canceled
	// next): a digest's row before its items, in the order CloseDigest locks them, so that the
	// two cannot deadlock.
	_, err := s.db.Exec(ctx, `UPDATE delivery.digests SET address = '',
			closed = true, closed_at = coalesce(closed_at, now())
		WHERE user_id = $1 AND (address <> '' OR NOT closed)`, userID)
	if err != nil {
		return pgdb.Err(err)
	}
	_, err = s.db.Exec(ctx, `
		UPDATE delivery.deliveries SET address = '', content = '{}', updated_at = now(),
			state = CASE WHEN state IN `+unfinished+` THEN 'canceled' ELSE state END,
			reason = CASE WHEN state IN `+unfinished+` THEN 'user_deleted' ELSE reason END,
			due_at = CASE WHEN state IN `+unfinished+` THEN NULL ELSE due_at END,
			lease_owner = NULL
		WHERE user_id = $1 AND (address <> '' OR content <> '{}'::jsonb)`, userID)
	return pgdb.Err(err)
}

// Settle moves deliveries on as their providers' events report (see delivery.Event), and marks
// the later steps of their fallback chains due for the reconciler to decide: a delivered step
// ends the chain, a bounced one starts the next step.
func (s *Store) Settle(ctx context.Context, events []delivery.Event) error {
	if len(events) == 0 {
		return nil
	}
	n := len(events)
	ids := make([]uuid.UUID, n)
	states, reasons, providers, pmids, eventIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	occurred := make([]time.Time, n)
	for i, e := range events {
		ids[i], states[i], reasons[i], providers[i] = e.DeliveryID, string(e.State), e.Reason, e.Provider
		pmids[i], eventIDs[i], occurred[i] = e.ProviderMessageID, e.EventID, e.OccurredAt
	}
	from := make([]string, len(delivery.EventFrom))
	for i, st := range delivery.EventFrom {
		from[i] = string(st)
	}
	_, err := s.db.Exec(ctx, `
		WITH e AS (
			SELECT DISTINCT ON (u.delivery_id) u.*
			FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
				AS u(delivery_id, state, reason, provider, pmid, event_id, occurred_at)
			ORDER BY u.delivery_id, u.occurred_at, u.event_id
		), moved AS (
		UPDATE delivery.deliveries d SET state = e.state, reason = e.reason, due_at = NULL,
			lease_owner = NULL, updated_at = now(), sent_at = coalesce(d.sent_at, e.occurred_at),
			provider = CASE WHEN d.provider = '' THEN e.provider ELSE d.provider END,
			provider_message_id = CASE WHEN d.provider_message_id = '' THEN e.pmid ELSE d.provider_message_id END
		FROM e WHERE d.id = e.delivery_id AND d.state = ANY($8::text[])
		RETURNING d.notification_id, d.step, d.state
		), marked AS (
			`+markChainsSQL+`
		)
		SELECT count(*) FROM moved`,
		pgdb.UUIDs(ids), states, reasons, providers, pmids, eventIDs, occurred, from)
	return pgdb.Err(err)
}

const readColumns = `id, notification_id, coalesce(user_id, ''), channel, address, category, priority,
	critical, default_opt_in, state, reason, attempts, drive, last_error, provider, provider_message_id,
	due_at, expires_at, created_at, updated_at, sent_at, app_id, step, step_timeout, digest_id,
	(SELECT g.delivery_id FROM delivery.digests g WHERE g.id = deliveries.digest_id)`

// scanRead reads a delivery without its content, which only the workers need.
func scanRead(r pgx.CollectableRow) (delivery.Delivery, error) {
	var d delivery.Delivery
	var ch, priority, state string
	var app, digest, digestDelivery pgtype.UUID
	err := r.Scan(&d.ID, &d.NotificationID, &d.UserID, &ch, &d.To, &d.Category, &priority, &d.Critical,
		&d.DefaultOptIn, &state, &d.Reason, &d.Attempts, &d.Drive, &d.LastError, &d.Provider, &d.ProviderMessageID,
		&d.DueAt, &d.ExpiresAt, &d.CreatedAt, &d.UpdatedAt, &d.SentAt, &app, &d.Step, &d.StepTimeout,
		&digest, &digestDelivery)
	d.Channel, d.Priority, d.State = delivery.Channel(ch), delivery.Priority(priority), delivery.State(state)
	d.AppID = uuid.UUID(app.Bytes) // zero when NULL
	d.DigestID, d.DigestDeliveryID = uuid.UUID(digest.Bytes), uuid.UUID(digestDelivery.Bytes)
	return d, err
}

// appID is an app id as a column value: NULL when unknown.
func appID(id uuid.UUID) pgtype.UUID { return optUUID(id) }

// optUUID is an optional id as a column value: NULL when zero.
func optUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: id != uuid.Nil} }

// OfNotification returns a notification's deliveries by id, without their content.
func (s *Store) OfNotification(ctx context.Context, notificationID uuid.UUID) ([]delivery.Delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT `+readColumns+` FROM delivery.deliveries
		WHERE notification_id = $1 ORDER BY id`, notificationID)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	list, err := pgx.CollectRows(rows, scanRead)
	return list, pgdb.Err(err)
}
