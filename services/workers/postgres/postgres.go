// Package postgres claims deliveries and records attempts for the workers: it updates the
// notifier's deliveries table (the contract between the two services) and keeps the attempt log
// in the workers' own schema. Every transition is one conditional UPDATE, so two workers never
// both own a delivery and a late or repeated message finds nothing to do.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/workers"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema the workers own.
const Schema = "workers"

// Migrate brings the workers' schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// Store implements workers.Store. The channels' consumers claim and record concurrently; their
// calls are merged into shared statements (package batch), so that the database sees one claim
// and one record statement per round for every channel, not one per channel.
type Store struct {
	pool *pgxpool.Pool
	// RetryGrace is added to a retry's due time before the reconciler treats its message as
	// lost.
	RetryGrace time.Duration

	claims  *batch.Batcher[claimCall, []workers.Claim]
	records *batch.Batcher[recordCall, struct{}]
}

type claimCall struct {
	worker string
	lease  time.Duration
	ids    []uuid.UUID
}

type recordCall struct {
	worker   string
	attempts []workers.Attempt
}

var _ workers.Store = (*Store)(nil)

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool, RetryGrace: time.Minute}
	// Two statements of each kind at most in flight: under load the calls that arrive while
	// both run share the next one.
	s.claims = batch.New(s.claimBatch, 16, 2)
	s.records = batch.New(s.recordBatch, 16, 2)
	return s
}

// Close stops merging calls; calls after it fail.
func (s *Store) Close() {
	s.claims.Close()
	s.records.Close()
}

// Claim implements workers.Store.
func (s *Store) Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]workers.Claim, error) {
	return s.claims.Do(ctx, claimCall{worker: worker, lease: lease, ids: ids})
}

// claimBatch claims the deliveries of several calls, in one statement for the calls of one
// worker and lease (every call, in practice), and hands each call the claims of its ids.
func (s *Store) claimBatch(ctx context.Context, calls []claimCall) ([][]workers.Claim, []error, error) {
	out := make([][]workers.Claim, len(calls))
	errs := make([]error, len(calls))
	type key struct {
		worker string
		lease  time.Duration
	}
	for _, g := range groupBy(calls, func(c claimCall) key { return key{c.worker, c.lease} }) {
		var ids []uuid.UUID
		for _, i := range g {
			ids = append(ids, calls[i].ids...)
		}
		claims, err := s.claim(ctx, calls[g[0]].worker, calls[g[0]].lease, ids)
		byID := make(map[uuid.UUID]workers.Claim, len(claims))
		for _, c := range claims {
			byID[c.ID] = c
		}
		for _, i := range g {
			if errs[i] = err; err != nil {
				continue
			}
			out[i] = make([]workers.Claim, 0, len(calls[i].ids))
			for _, id := range calls[i].ids {
				if c, ok := byID[id]; ok {
					out[i] = append(out[i], c)
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

func (s *Store) claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]workers.Claim, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE notifier.deliveries d SET
			state = 'sending', lease_owner = $1, attempts = d.attempts + 1,
			due_at = now() + $2, updated_at = now()
		WHERE d.id = ANY($3) AND d.expires_at > now()
			AND (d.state = 'queued'
				OR (d.state = 'retrying' AND d.due_at <= now() + $4::interval) -- its backoff is over
				OR (d.state = 'sending' AND d.due_at <= now()))               -- its lease is over
		RETURNING d.id, d.notification_id, d.channel, d.address, coalesce(d.user_id, ''), d.category,
			d.critical, d.default_opt_in, d.priority, d.content, d.attempts, d.drive, d.expires_at, d.created_at`,
		worker, lease, ids, s.RetryGrace)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	claimed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (workers.Claim, error) {
		m := &workers.Message{}
		var ch, priority string
		var content []byte
		err := r.Scan(&m.DeliveryID, &m.NotificationID, &ch, &m.To, &m.UserID, &m.Category, &m.Critical,
			&m.DefaultOptIn, &priority, &content, &m.Attempt, &m.Drive, &m.ExpiresAt, &m.AcceptedAt)
		if err != nil {
			return workers.Claim{}, err
		}
		m.Channel, m.Priority = delivery.Channel(ch), delivery.Priority(priority)
		if err := json.Unmarshal(content, &m.Content); err != nil {
			return workers.Claim{}, fmt.Errorf("decode content of delivery %s: %w", m.DeliveryID, err)
		}
		return workers.Claim{ID: m.DeliveryID, Status: workers.Claimed, Message: m}, nil
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}
	if len(claimed) == len(ids) {
		return claimed, nil
	}

	got := make(map[uuid.UUID]bool, len(claimed))
	for _, c := range claimed {
		got[c.ID] = true
	}
	var rest []uuid.UUID
	for _, id := range ids {
		if !got[id] {
			rest = append(rest, id)
		}
	}
	// The others are terminal, held by a live worker, expired, or unknown. Expire the expired
	// ones on the way, so they do not wait for the reconciler.
	rows, err = s.pool.Query(ctx, `
		WITH expired AS (
			UPDATE notifier.deliveries SET state = 'expired', reason = 'ttl', due_at = NULL,
				lease_owner = NULL, updated_at = now()
			WHERE id = ANY($1) AND expires_at <= now()
				AND (state IN ('scheduled', 'queued', 'retrying') OR (state = 'sending' AND due_at <= now()))
			RETURNING id
		)
		SELECT d.id, d.state, d.due_at FROM notifier.deliveries d
		WHERE d.id = ANY($1) AND d.id NOT IN (SELECT id FROM expired)`, rest)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	busy := map[uuid.UUID]time.Time{}
	var id uuid.UUID
	var state string
	var due *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &state, &due}, func() error {
		switch {
		case due == nil:
		case delivery.State(state) == delivery.Sending:
			busy[id] = *due // another worker's live lease
		case delivery.State(state) == delivery.Retrying:
			busy[id] = due.Add(-s.RetryGrace) // a message that came before the backoff ended
		}
		return nil
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}
	for _, id := range rest {
		c := workers.Claim{ID: id, Status: workers.Done}
		if until, ok := busy[id]; ok {
			c.Status, c.RetryAt = workers.Busy, until
		}
		claimed = append(claimed, c)
	}
	return claimed, nil
}

// Record implements workers.Store: one statement updates every delivery and appends every
// attempt, also those of the other calls waiting at the time.
func (s *Store) Record(ctx context.Context, worker string, attempts []workers.Attempt) error {
	_, err := s.records.Do(ctx, recordCall{worker: worker, attempts: attempts})
	return err
}

func (s *Store) recordBatch(ctx context.Context, calls []recordCall) ([]struct{}, []error, error) {
	errs := make([]error, len(calls))
	for _, g := range groupBy(calls, func(c recordCall) string { return c.worker }) {
		var attempts []workers.Attempt
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

func (s *Store) record(ctx context.Context, worker string, attempts []workers.Attempt) error {
	n := len(attempts)
	ids := make([]uuid.UUID, n)
	states := make([]string, n)
	reasons := make([]string, n)
	errTexts := make([]string, n)
	providers := make([]string, n)
	pmids := make([]string, n)
	dues := make([]*time.Time, n)
	nums := make([]int32, n)
	drives := make([]int32, n)
	outcomes := make([]string, n)
	started := make([]time.Time, n)
	latency := make([]int64, n)
	for i, a := range attempts {
		ids[i], nums[i], drives[i] = a.Message.DeliveryID, int32(a.Message.Attempt), int32(a.Message.Drive)
		reasons[i], errTexts[i], providers[i], pmids[i] = a.Reason, a.Error, a.Provider, a.ProviderMessageID
		started[i], latency[i] = a.Started, a.Latency.Microseconds()
		switch {
		case a.Outcome == workers.OutcomeSent:
			states[i], outcomes[i] = string(delivery.Sent), "sent"
		case a.Outcome == workers.OutcomeFailed:
			states[i], outcomes[i] = string(delivery.Failed), "failed"
		case a.Outcome == workers.OutcomeSkipped:
			states[i], outcomes[i] = string(delivery.Skipped), "skipped"
		case a.Dead:
			states[i], outcomes[i] = string(delivery.Dead), "dead"
		default:
			due := a.RetryAt.Add(s.RetryGrace)
			states[i], outcomes[i], dues[i] = string(delivery.Retrying), "retry", &due
		}
	}
	_, err := s.pool.Exec(ctx, `
		WITH u AS (
			SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::timestamptz[], $9::int[], $10::text[], $11::timestamptz[], $12::bigint[], $13::int[])
				AS u(id, state, reason, error, provider, pmid, due_at, attempt, outcome, started, latency_us, drive)
		), moved AS (
			UPDATE notifier.deliveries d SET
				state = u.state, reason = u.reason, last_error = u.error, provider = u.provider,
				provider_message_id = u.pmid, due_at = u.due_at, lease_owner = NULL, updated_at = now(),
				sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE d.sent_at END
			FROM u
			WHERE d.id = u.id AND CASE WHEN u.state = 'sent'
				THEN d.state NOT IN ('sent', 'delivered', 'bounced')
				ELSE d.state = 'sending' AND d.lease_owner = $1 AND d.attempts = u.attempt AND d.drive = u.drive END
			RETURNING d.id
		)
		INSERT INTO workers.attempts (delivery_id, drive, attempt, worker, provider, outcome, reason, error,
			provider_message_id, started_at, latency_us)
		SELECT u.id, u.drive, u.attempt, $1, u.provider, u.outcome, u.reason, u.error, u.pmid, u.started, u.latency_us
		FROM u
		ON CONFLICT (delivery_id, drive, attempt) DO NOTHING`,
		worker, ids, states, reasons, errTexts, providers, pmids, dues, nums, outcomes, started, latency, drives)
	return pgdb.Err(err)
}

// Release implements workers.Store.
func (s *Store) Release(ctx context.Context, worker string, ids []uuid.UUID) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.deliveries SET state = 'queued', lease_owner = NULL, attempts = attempts - 1,
			due_at = now() + $3::interval, updated_at = now()
		WHERE id = ANY($2) AND state = 'sending' AND lease_owner = $1`, worker, ids, s.RetryGrace)
	return pgdb.Err(err)
}
