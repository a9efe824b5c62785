// Package postgres stores the notifier's apps, keys, templates, notifications and deliveries in
// PostgreSQL (schema "notifier"), and applies the schema's embedded migrations.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/notifier"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema the notifier owns.
const Schema = "notifier"

// Migrate brings the notifier's schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// Store implements notifier.Store.
type Store struct {
	pool        *pgxpool.Pool
	creates     *batch.Batcher[*notifier.Notification, bool]
	unpublished *batch.Batcher[unpublishedCall, struct{}]
}

var _ notifier.Store = (*Store)(nil)

// New returns a Store on pool. Close stops its batching.
func New(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool}
	// A few statements in flight at once keep the database busy while each batch waits for its
	// commit; batches grow only when calls pile up.
	s.creates = batch.New(s.createBatch, 256, 2)
	s.unpublished = batch.New(s.unpublishedBatch, 256, 1)
	return s
}

// Close stops the Store's batching; calls after it fail.
func (s *Store) Close() {
	s.creates.Close()
	s.unpublished.Close()
}

// Unpublished implements notifier.Store. Concurrent calls share one statement: they come in
// numbers when the broker falls behind, and the database is busy then too.
func (s *Store) Unpublished(ctx context.Context, ids []uuid.UUID, at time.Time) error {
	_, err := s.unpublished.Do(ctx, unpublishedCall{ids, at})
	return err
}

type unpublishedCall struct {
	ids []uuid.UUID
	at  time.Time
}

func (s *Store) unpublishedBatch(ctx context.Context, calls []unpublishedCall) ([]struct{}, []error, error) {
	var ids []uuid.UUID
	var ats []time.Time
	for _, c := range calls {
		for _, id := range c.ids {
			ids, ats = append(ids, id), append(ats, c.at)
		}
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.deliveries d SET due_at = least(d.due_at, u.at), published = false
		FROM unnest($1::uuid[], $2::timestamptz[]) u(id, at)
		WHERE d.id = u.id AND d.state = 'queued'`, ids, ats)
	if err != nil {
		return nil, nil, pgdb.Err(err)
	}
	return make([]struct{}, len(calls)), nil, nil
}

// CreateNotification implements notifier.Store. Concurrent calls share one statement (group
// commit): the database flushes its log once for the whole batch instead of once per
// notification, which is what bounds accepts per second with fsync on.
func (s *Store) CreateNotification(ctx context.Context, n *notifier.Notification) (*notifier.Notification, bool, error) {
	created, err := s.creates.Do(ctx, n)
	if err != nil {
		return nil, false, err
	}
	if !created {
		prev, err := s.NotificationByKey(ctx, n.AppID, n.IdempotencyKey)
		return prev, false, err
	}
	return n, true, nil
}

// createBatch inserts notifications with their deliveries in one statement, so that it is
// atomic without a transaction's extra round trips. A notification whose idempotency key the
// app already used is skipped with its deliveries, and reported not created. If the statement
// fails for a reason that is not the database's availability, each notification is tried alone,
// so that one bad notification cannot fail the others.
func (s *Store) createBatch(ctx context.Context, ns []*notifier.Notification) ([]bool, []error, error) {
	created, err := s.insert(ctx, ns)
	if err == nil {
		return created, nil, nil
	}
	if len(ns) == 1 || errs.KindOf(err) == errs.Unavailable {
		return nil, nil, err
	}
	out, failed := make([]bool, len(ns)), make([]error, len(ns))
	for i := range ns {
		one, err := s.insert(ctx, ns[i:i+1])
		if err != nil {
			failed[i] = err
			continue
		}
		out[i] = one[0]
	}
	return out, failed, nil
}

func (s *Store) insert(ctx context.Context, ns []*notifier.Notification) ([]bool, error) {
	var (
		nIDs, nApps                    []uuid.UUID
		nKeys, nUsers, nTNames, nTLocs []*string
		nHashes                        [][]byte
		nCats, nPrios                  []string
		nTVers                         []*int32
		nSend, nExp, nCreated          []time.Time
		dIDs, dNotifs                  []uuid.UUID
		dUsers                         []*string
		dChans, dAddrs, dCats, dPrios  []string
		dStates, dReasons, dContents   []string
		dCrit, dOptIn                  []bool
		dDues                          []*time.Time
		dExp, dCreated                 []time.Time
	)
	for _, n := range ns {
		var tname, tloc *string
		var tver *int32
		if t := n.Template; t != nil {
			v := int32(t.Version)
			tname, tver, tloc = &t.Name, &v, &t.Locale
		}
		nIDs, nApps = append(nIDs, n.ID), append(nApps, n.AppID)
		nKeys, nUsers = append(nKeys, nullIfEmpty(n.IdempotencyKey)), append(nUsers, nullIfEmpty(n.UserID))
		nTNames, nTVers, nTLocs = append(nTNames, tname), append(nTVers, tver), append(nTLocs, tloc)
		nHashes, nCats, nPrios = append(nHashes, n.RequestHash), append(nCats, n.Category), append(nPrios, string(n.Priority))
		nSend, nExp, nCreated = append(nSend, n.SendAt), append(nExp, n.ExpiresAt), append(nCreated, n.CreatedAt)
		for _, d := range n.Deliveries {
			c, err := json.Marshal(d.Content)
			if err != nil {
				return nil, fmt.Errorf("encode content: %w", err)
			}
			exp := d.ExpiresAt
			if exp.IsZero() {
				exp = n.ExpiresAt
			}
			dIDs, dNotifs, dUsers = append(dIDs, d.ID), append(dNotifs, n.ID), append(dUsers, nullIfEmpty(n.UserID))
			dChans, dAddrs = append(dChans, string(d.Channel)), append(dAddrs, d.To)
			dCats, dPrios = append(dCats, n.Category), append(dPrios, string(n.Priority))
			dCrit, dOptIn = append(dCrit, n.Critical), append(dOptIn, n.DefaultOptIn)
			dStates, dReasons, dContents = append(dStates, string(d.State)), append(dReasons, d.Reason), append(dContents, string(c))
			dDues, dExp, dCreated = append(dDues, d.DueAt), append(dExp, exp), append(dCreated, n.CreatedAt)
		}
	}
	rows, err := s.pool.Query(ctx, `
		WITH n AS (
			INSERT INTO notifier.notifications (id, app_id, idempotency_key, request_hash, category, user_id,
				template_name, template_version, template_locale, priority, send_at, expires_at, created_at)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $5::text[], $6::text[],
				$7::text[], $8::int[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
				$13::timestamptz[])
			ON CONFLICT (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING id
		), d AS (
		INSERT INTO notifier.deliveries (id, notification_id, user_id, channel, address, category, priority,
			critical, default_opt_in, state, reason, content, due_at, expires_at, created_at, updated_at)
		SELECT u.id, u.notification_id, u.user_id, u.channel, u.address, u.category, u.priority, u.critical,
			u.default_opt_in, u.state, u.reason, u.content::jsonb, u.due_at, u.expires_at, u.created_at, u.created_at
		FROM unnest($14::uuid[], $15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
			$21::bool[], $22::bool[], $23::text[], $24::text[], $25::text[], $26::timestamptz[], $27::timestamptz[],
			$28::timestamptz[])
			AS u(id, notification_id, user_id, channel, address, category, priority, critical, default_opt_in,
				state, reason, content, due_at, expires_at, created_at)
		WHERE u.notification_id IN (SELECT id FROM n)
		), l AS (`+insertLinks+`)
		SELECT id FROM n`,
		append([]any{nIDs, nApps, nKeys, nHashes, nCats, nUsers, nTNames, nTVers, nTLocs, nPrios, nSend, nExp, nCreated,
			dIDs, dNotifs, dUsers, dChans, dAddrs, dCats, dPrios, dCrit, dOptIn, dStates, dReasons, dContents,
			dDues, dExp, dCreated}, linkArgs(ns)...)...)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	made := map[uuid.UUID]bool{}
	var id uuid.UUID
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { made[id] = true; return nil }); err != nil {
		return nil, pgdb.Err(err)
	}
	out := make([]bool, len(ns))
	for i, n := range ns {
		out[i] = made[n.ID]
	}
	return out, nil
}

const notificationColumns = `id, app_id, coalesce(idempotency_key, ''), request_hash, category,
	coalesce(user_id, ''), template_name, template_version, template_locale, priority, send_at,
	expires_at, created_at`

func scanNotification(row pgx.Row) (*notifier.Notification, error) {
	var n notifier.Notification
	var tname, tlocale *string
	var tversion *int
	var priority string
	err := row.Scan(&n.ID, &n.AppID, &n.IdempotencyKey, &n.RequestHash, &n.Category, &n.UserID,
		&tname, &tversion, &tlocale, &priority, &n.SendAt, &n.ExpiresAt, &n.CreatedAt)
	if err != nil {
		return nil, err
	}
	n.Priority = delivery.Priority(priority)
	if tname != nil {
		n.Template = &notifier.TemplateRef{Name: *tname}
		if tversion != nil {
			n.Template.Version = *tversion
		}
		if tlocale != nil {
			n.Template.Locale = *tlocale
		}
	}
	return &n, nil
}

// NotificationByKey implements notifier.Store.
func (s *Store) NotificationByKey(ctx context.Context, appID uuid.UUID, key string) (*notifier.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, `SELECT `+notificationColumns+`
		FROM notifier.notifications WHERE app_id = $1 AND idempotency_key = $2`, appID, key))
	return s.withDeliveries(ctx, n, err)
}

// Notification implements notifier.Store.
func (s *Store) Notification(ctx context.Context, appID, id uuid.UUID) (*notifier.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, `SELECT `+notificationColumns+`
		FROM notifier.notifications WHERE id = $1 AND app_id = $2`, id, appID))
	return s.withDeliveries(ctx, n, err)
}

func (s *Store) withDeliveries(ctx context.Context, n *notifier.Notification, err error) (*notifier.Notification, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "notification not found")
	}
	if err != nil {
		return nil, pgdb.Err(err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, channel, address, state, reason, attempts, last_error, provider,
			provider_message_id, created_at, updated_at, sent_at
		FROM notifier.deliveries WHERE notification_id = $1 ORDER BY id`, n.ID)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	n.Deliveries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*notifier.Delivery, error) {
		d := notifier.Delivery{NotificationID: n.ID}
		var ch, state string
		err := r.Scan(&d.ID, &ch, &d.To, &state, &d.Reason, &d.Attempts, &d.LastError, &d.Provider,
			&d.ProviderMessageID, &d.CreatedAt, &d.UpdatedAt, &d.SentAt)
		d.Channel, d.State = delivery.Channel(ch), delivery.State(state)
		return &d, err
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}
	return n, nil
}

// Categories implements notifier.Store.
func (s *Store) Categories(ctx context.Context) ([]preference.Category, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, description, critical, default_opt_in, allowed_channels, caps
		FROM notifier.categories ORDER BY name`)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	cats, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (preference.Category, error) {
		var c preference.Category
		var chs []string
		var caps []byte
		if err := r.Scan(&c.Name, &c.Description, &c.Critical, &c.DefaultOptIn, &chs, &caps); err != nil {
			return c, err
		}
		for _, ch := range chs {
			c.AllowedChannels = append(c.AllowedChannels, delivery.Channel(ch))
		}
		if err := json.Unmarshal(caps, &c.Caps); err != nil {
			return c, fmt.Errorf("decode caps of category %s: %w", c.Name, err)
		}
		return c, nil
	})
	return cats, pgdb.Err(err)
}

// PutCategory implements notifier.Store.
func (s *Store) PutCategory(ctx context.Context, c preference.Category) error {
	caps, err := json.Marshal(c.Caps)
	if err != nil {
		return fmt.Errorf("encode caps: %w", err)
	}
	if c.Caps == nil {
		caps = []byte("[]")
	}
	chs := make([]string, len(c.AllowedChannels))
	for i, ch := range c.AllowedChannels {
		chs[i] = string(ch)
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO notifier.categories (name, description, critical, default_opt_in, allowed_channels, caps)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET description = excluded.description, critical = excluded.critical,
			default_opt_in = excluded.default_opt_in, allowed_channels = excluded.allowed_channels,
			caps = excluded.caps, updated_at = now()`,
		c.Name, c.Description, c.Critical, c.DefaultOptIn, chs, caps)
	return pgdb.Err(err)
}

// EraseUser implements notifier.Store. The short links of the user's deliveries go too: their
// URLs may name the user.
func (s *Store) EraseUser(ctx context.Context, userID string) error {
	if err := s.eraseLinks(ctx, userID); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.deliveries SET address = '', content = '{}', updated_at = now(),
			state = CASE WHEN state IN ('scheduled', 'queued', 'sending', 'retrying') THEN 'canceled' ELSE state END,
			reason = CASE WHEN state IN ('scheduled', 'queued', 'sending', 'retrying') THEN 'user_deleted' ELSE reason END,
			due_at = CASE WHEN state IN ('scheduled', 'queued', 'sending', 'retrying') THEN NULL ELSE due_at END,
			lease_owner = NULL
		WHERE user_id = $1 AND (address <> '' OR content <> '{}'::jsonb)`, userID)
	return pgdb.Err(err)
}

// Reconcile implements notifier.Store. One statement moves every due row on and tells which
// ones to publish; rows locked by another reconciler are skipped.
func (s *Store) Reconcile(ctx context.Context, now time.Time, republishAfter time.Duration, limit int, held map[delivery.Channel]time.Time) ([]notifier.Publication, int, error) {
	heldChannels := make([]string, 0, len(held))
	heldSince := make([]time.Time, 0, len(held))
	for ch, since := range held {
		heldChannels, heldSince = append(heldChannels, string(ch)), append(heldSince, since)
	}
	// Expire first, in its own batches, so that a backlog of expired rows cannot fill the
	// batches below and hold up the rows that are due.
	expired := 0
	for {
		tag, err := s.pool.Exec(ctx, `
			WITH due AS (
				SELECT id FROM notifier.deliveries
				WHERE due_at <= $1 AND expires_at <= $1
				ORDER BY due_at
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			)
			UPDATE notifier.deliveries d SET state = 'expired', reason = 'ttl', due_at = NULL,
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
	// The next deadline never passes the expiry, so expiry is noticed on time. A queued delivery
	// last published (updated_at) no earlier than the oldest message its channel's workers have
	// not received yet is held: its message is most likely still in the queue, so it is looked
	// at again after republishAfter, unpublished, with its publish time kept. One whose publish
	// failed (published false, see Unpublished) has no message to wait for, and is not held.
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT id, state AS was, state = 'queued' AND published AND expires_at > $1 AND EXISTS (
				SELECT 1 FROM unnest($4::text[], $5::timestamptz[]) h(channel, since)
				WHERE h.channel = deliveries.channel AND deliveries.updated_at >= h.since) AS held
			FROM notifier.deliveries
			WHERE due_at <= $1
			ORDER BY due_at
			LIMIT $3
			FOR UPDATE SKIP LOCKED
		), moved AS (
			UPDATE notifier.deliveries d SET
				state = CASE
					WHEN d.expires_at <= $1 THEN 'expired'
					WHEN d.state IN ('scheduled', 'sending') THEN 'queued'
					ELSE d.state END,
				reason = CASE WHEN d.expires_at <= $1 THEN 'ttl' ELSE d.reason END,
				publishes = d.publishes + CASE WHEN due.held THEN 0 ELSE 1 END,
				due_at = CASE WHEN d.expires_at <= $1 THEN NULL
					WHEN due.held THEN least(d.expires_at, $1 + $2::interval)
					ELSE least(d.expires_at, $1 + $2::interval * power(2, least(d.publishes, 6))) END,
				lease_owner = NULL,
				updated_at = CASE WHEN due.held THEN d.updated_at ELSE $1 END,
				published = d.published OR NOT due.held
			FROM due WHERE d.id = due.id
			RETURNING d.id, d.channel, d.state, d.publishes, due.was, due.held
		)
		SELECT id, channel, publishes, was = 'scheduled', held FROM moved WHERE state <> 'expired'`,
		now, republishAfter, limit, heldChannels, heldSince)
	if err != nil {
		return nil, expired, pgdb.Err(err)
	}
	pubs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.Publication, error) {
		var p notifier.Publication
		var ch string
		err := r.Scan(&p.DeliveryID, &ch, &p.Generation, &p.Due, &p.Held)
		p.Channel = delivery.Channel(ch)
		return p, err
	})
	if err != nil {
		return nil, expired, pgdb.Err(err)
	}
	return pubs, expired, nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// RecordProviderEvents implements notifier.Store: one transaction stores the events, moves the
// deliveries of the new ones, and reads back what the caller must act on.
func (s *Store) RecordProviderEvents(ctx context.Context, evs []notifier.ProviderEvent) ([]notifier.ProviderEvent, error) {
	// A batch may repeat an event; its first copy counts.
	type key struct{ provider, id string }
	seen := make(map[key]bool, len(evs))
	in := make([]notifier.ProviderEvent, 0, len(evs))
	for _, e := range evs {
		if k := (key{e.Provider, e.ID}); !seen[k] {
			seen[k] = true
			in = append(in, e)
		}
	}
	if len(in) == 0 {
		return nil, nil
	}
	n := len(in)
	providers, ids, pmids, kinds := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	reasons, effects, details := make([]string, n), make([]string, n), make([]string, n)
	dids, occurred := make([]uuid.UUID, n), make([]time.Time, n)
	for i, e := range in {
		providers[i], ids[i], pmids[i], kinds[i] = e.Provider, e.ID, e.ProviderMessageID, string(e.Kind)
		reasons[i], effects[i], dids[i], occurred[i] = e.Reason, string(e.Effect), e.DeliveryID, e.OccurredAt
		details[i] = "{}"
		if len(e.Details) > 0 {
			details[i] = string(e.Details)
		}
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	defer tx.Rollback(ctx)

	// The delivery is the one the event names; an event that names none (uuid.Nil) is about
	// the delivery with its provider message id.
	rows, err := tx.Query(ctx, `
		INSERT INTO notifier.provider_events (provider, event_id, delivery_id, kind, reason, effect,
			occurred_at, details)
		SELECT u.provider, u.event_id, coalesce(byid.id, bypm.id), u.kind, u.reason, u.effect,
			u.occurred_at, u.details::jsonb
		FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::timestamptz[], $9::text[])
			AS u(provider, event_id, delivery_id, pmid, kind, reason, effect, occurred_at, details)
		LEFT JOIN notifier.deliveries byid ON byid.id = u.delivery_id
		LEFT JOIN LATERAL (
			SELECT d.id FROM notifier.deliveries d
			WHERE u.delivery_id = '00000000-0000-0000-0000-000000000000' AND u.pmid <> '' AND d.provider = u.provider
				AND d.provider_message_id = u.pmid AND d.provider_message_id <> ''
			ORDER BY d.id DESC LIMIT 1
		) bypm ON true
		ON CONFLICT (provider, event_id) DO NOTHING
		RETURNING provider, event_id, delivery_id`,
		providers, ids, dids, pmids, kinds, reasons, effects, occurred, details)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	fresh := map[key]bool{}
	var moves struct {
		ids              []uuid.UUID
		states, reasons  []string
		providers, pmids []string
		events           []string
		occurred         []time.Time
	}
	byKey := make(map[key]*notifier.ProviderEvent, n)
	for i := range in {
		byKey[key{in[i].Provider, in[i].ID}] = &in[i]
	}
	var provider, id string
	var did *uuid.UUID
	_, err = pgx.ForEachRow(rows, []any{&provider, &id, &did}, func() error {
		k := key{provider, id}
		fresh[k] = true
		e := byKey[k]
		if did == nil || e == nil {
			return nil
		}
		state := e.Kind.DeliveryState()
		if state == "" {
			return nil
		}
		reason := ""
		if state == delivery.Bounced {
			reason = e.Reason
		}
		moves.ids = append(moves.ids, *did)
		moves.states = append(moves.states, string(state))
		moves.reasons = append(moves.reasons, reason)
		moves.providers = append(moves.providers, e.Provider)
		moves.pmids = append(moves.pmids, e.ProviderMessageID)
		moves.events = append(moves.events, e.ID)
		moves.occurred = append(moves.occurred, e.OccurredAt)
		return nil
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}

	if len(moves.ids) > 0 {
		from := make([]string, len(notifier.ProviderEventFrom))
		for i, st := range notifier.ProviderEventFrom {
			from[i] = string(st)
		}
		// Of several events for one delivery in a batch, the earliest that moves it wins: after
		// it the delivery is delivered or bounced, which no event moves again. The worker may
		// not have recorded the send yet, so the provider and its message id are filled in
		// when missing.
		_, err = tx.Exec(ctx, `
			WITH e AS (
				SELECT DISTINCT ON (u.delivery_id) u.*
				FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
						$7::timestamptz[])
					AS u(delivery_id, state, reason, provider, pmid, event_id, occurred_at)
				ORDER BY u.delivery_id, u.occurred_at, u.event_id
			)
			UPDATE notifier.deliveries d SET state = e.state, reason = e.reason, due_at = NULL,
				lease_owner = NULL, updated_at = now(), sent_at = coalesce(d.sent_at, e.occurred_at),
				provider = CASE WHEN d.provider = '' THEN e.provider ELSE d.provider END,
				provider_message_id = CASE WHEN d.provider_message_id = '' THEN e.pmid
					ELSE d.provider_message_id END
			FROM e WHERE d.id = e.delivery_id AND d.state = ANY($8::text[])`,
			moves.ids, moves.states, moves.reasons, moves.providers, moves.pmids, moves.events,
			moves.occurred, from)
		if err != nil {
			return nil, pgdb.Err(err)
		}
	}

	// What to act on: the new events, and earlier ones whose fact was never announced (the
	// publish failed, and the provider sent the event again).
	rows, err = tx.Query(ctx, `
		SELECT u.ord, pe.kind, pe.effect, pe.delivery_id,
			(pe.effect <> '' AND pe.delivery_id IS NOT NULL AND pe.announced_at IS NULL),
			coalesce(d.channel, ''), coalesce(d.address, ''), coalesce(d.user_id, ''), coalesce(d.category, '')
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(provider, event_id, ord)
		JOIN notifier.provider_events pe ON pe.provider = u.provider AND pe.event_id = u.event_id
		LEFT JOIN notifier.deliveries d ON d.id = pe.delivery_id
		ORDER BY u.ord`, providers, ids)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	var out []notifier.ProviderEvent
	var ord int
	var kind, effect, ch string
	var pending bool
	var r notifier.ProviderEvent
	_, err = pgx.ForEachRow(rows, []any{&ord, &kind, &effect, &did, &pending, &ch, &r.Address, &r.UserID, &r.Category}, func() error {
		e := in[ord-1]
		if !fresh[key{e.Provider, e.ID}] && !pending {
			return nil
		}
		e.Kind, e.Effect, e.Channel = notifier.ProviderEventKind(kind), notifier.AddressEffect(effect), delivery.Channel(ch)
		e.Address, e.UserID, e.Category = r.Address, r.UserID, r.Category
		e.DeliveryID = uuid.Nil
		if did != nil {
			e.DeliveryID = *did
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, pgdb.Err(err)
	}
	return out, nil
}

// MarkProviderEventsAnnounced implements notifier.Store.
func (s *Store) MarkProviderEventsAnnounced(ctx context.Context, provider string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE notifier.provider_events SET announced_at = now()
		WHERE provider = $1 AND event_id = ANY($2) AND effect <> '' AND announced_at IS NULL`,
		provider, ids)
	return pgdb.Err(err)
}
