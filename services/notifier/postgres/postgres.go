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
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
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

// Store keeps the notifier's schema, and implements the store of each of the notifier's parts
// on it. The deliveries it creates and reads are internal/delivery's: it writes them with that
// package's store, inside its own transactions.
type Store struct {
	pool       *pgxpool.Pool
	deliveries *deliverypg.Store
}

var (
	_ notifier.Notifications = (*Store)(nil)
	_ notifier.TemplateStore = (*Store)(nil)
	_ notifier.CategoryStore = (*Store)(nil)
	_ notifier.AppStore      = (*Store)(nil)
	_ notifier.StatsStore    = (*Store)(nil)
)

// New returns a Store on pool that keeps deliveries in deliveries.
func New(pool *pgxpool.Pool, deliveries *deliverypg.Store) *Store {
	return &Store{pool: pool, deliveries: deliveries}
}

// CreateNotifications implements notifier.Notifications: one transaction for the whole batch (one log
// flush however many notifications it holds). If it fails for a reason that is not the
// database's availability, each notification is tried alone, so that one bad notification
// cannot fail the others.
func (s *Store) CreateNotifications(ctx context.Context, ns []*notifier.Notification) ([]bool, []error, error) {
	created, err := s.create(ctx, ns)
	if err == nil {
		return created, nil, nil
	}
	if len(ns) == 1 || errs.KindOf(err) == errs.Unavailable {
		return nil, nil, err
	}
	out, failed := make([]bool, len(ns)), make([]error, len(ns))
	for i := range ns {
		one, err := s.create(ctx, ns[i:i+1])
		if err != nil {
			failed[i] = err
			continue
		}
		out[i] = one[0]
	}
	return out, failed, nil
}

// create stores ns in one transaction: the notifications whose idempotency key is new, then
// their deliveries and short links.
func (s *Store) create(ctx context.Context, ns []*notifier.Notification) ([]bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	defer tx.Rollback(ctx)
	created, err := insertNotifications(ctx, tx, ns)
	if err != nil {
		return nil, err
	}
	var ds []delivery.Delivery
	var back []*notifier.Delivery
	var made []*notifier.Notification
	for i, n := range ns {
		if !created[i] {
			continue
		}
		made = append(made, n)
		for _, d := range n.Deliveries {
			dd := *d
			dd.AppID = n.AppID // the workers choose a credential by the calling app
			ds = append(ds, dd)
			back = append(back, d)
		}
	}
	if err := s.deliveries.In(tx).Create(ctx, ds); err != nil {
		return nil, err
	}
	for i := range ds { // the digest each item went into, for the Send's answer
		back[i].DigestID = ds[i].DigestID
	}
	if err := insertLinks(ctx, tx, made); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, pgdb.Err(err)
	}
	return created, nil
}

// insertNotifications inserts ns and reports which it created: a notification whose idempotency
// key the app already used is skipped.
func insertNotifications(ctx context.Context, tx pgx.Tx, ns []*notifier.Notification) ([]bool, error) {
	n := len(ns)
	ids, apps := make(pgtype.FlatArray[pgtype.UUID], n), make(pgtype.FlatArray[pgtype.UUID], n)
	keys, users := make(pgtype.FlatArray[pgtype.Text], n), make(pgtype.FlatArray[pgtype.Text], n)
	tnames, tlocs := make(pgtype.FlatArray[pgtype.Text], n), make(pgtype.FlatArray[pgtype.Text], n)
	hashes := make([][]byte, n)
	cats, prios := make([]string, n), make([]string, n)
	tvers := make(pgtype.FlatArray[pgtype.Int4], n)
	sends, exps, createdAt := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	topicSends := make(pgtype.FlatArray[pgtype.UUID], n)
	for i, x := range ns {
		topicSends[i] = pgtype.UUID{Bytes: x.TopicSendID, Valid: x.TopicSendID != uuid.Nil}
		if t := x.Template; t != nil {
			tnames[i] = pgtype.Text{String: t.Name, Valid: true}
			tvers[i] = pgtype.Int4{Int32: int32(t.Version), Valid: true}
			tlocs[i] = pgtype.Text{String: t.Locale, Valid: true}
		}
		ids[i], apps[i], keys[i], users[i] = pgdb.UUID(x.ID), pgdb.UUID(x.AppID), pgdb.Text(x.IdempotencyKey), pgdb.Text(x.UserID)
		hashes[i], cats[i], prios[i] = x.RequestHash, x.Category, string(x.Priority)
		sends[i], exps[i], createdAt[i] = x.SendAt, x.ExpiresAt, x.CreatedAt
	}
	rows, err := tx.Query(ctx, `
		INSERT INTO notifier.notifications (id, app_id, idempotency_key, request_hash, category, user_id,
			template_name, template_version, template_locale, priority, send_at, expires_at, created_at,
			topic_send_id)
		SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $5::text[], $6::text[],
			$7::text[], $8::int[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
			$13::timestamptz[], $14::uuid[])
		ON CONFLICT (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
		RETURNING id`,
		ids, apps, keys, hashes, cats, users, tnames, tvers, tlocs, prios, sends, exps, createdAt, topicSends)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	made := make(map[uuid.UUID]bool, n)
	var id uuid.UUID
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { made[id] = true; return nil }); err != nil {
		return nil, pgdb.Err(err)
	}
	out := make([]bool, n)
	for i, x := range ns {
		out[i] = made[x.ID]
	}
	return out, nil
}

const notificationColumns = `id, app_id, coalesce(idempotency_key, ''), request_hash, category,
	coalesce(user_id, ''), template_name, template_version, template_locale, priority, send_at,
	expires_at, created_at, topic_send_id`

func scanNotification(row pgx.Row) (*notifier.Notification, error) {
	var n notifier.Notification
	var tname, tlocale *string
	var tversion *int
	var priority string
	var topicSend pgtype.UUID
	err := row.Scan(&n.ID, &n.AppID, &n.IdempotencyKey, &n.RequestHash, &n.Category, &n.UserID,
		&tname, &tversion, &tlocale, &priority, &n.SendAt, &n.ExpiresAt, &n.CreatedAt, &topicSend)
	if err != nil {
		return nil, err
	}
	if topicSend.Valid {
		n.TopicSendID = topicSend.Bytes
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

// NotificationByKey implements notifier.Notifications.
func (s *Store) NotificationByKey(ctx context.Context, appID uuid.UUID, key string) (*notifier.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, `SELECT `+notificationColumns+`
		FROM notifier.notifications WHERE app_id = $1 AND idempotency_key = $2`, appID, key))
	return s.withDeliveries(ctx, n, err)
}

// Notification implements notifier.Notifications.
func (s *Store) Notification(ctx context.Context, appID, id uuid.UUID) (*notifier.Notification, error) {
	n, err := scanNotification(s.pool.QueryRow(ctx, notificationByID, id, appID))
	return s.withDeliveries(ctx, n, err)
}

// notificationByID reads notification $1 of app $2.
const notificationByID = `SELECT ` + notificationColumns + ` FROM notifier.notifications WHERE id = $1 AND app_id = $2`

func (s *Store) withDeliveries(ctx context.Context, n *notifier.Notification, err error) (*notifier.Notification, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "notification not found")
	}
	if err != nil {
		return nil, pgdb.Err(err)
	}
	ds, err := s.deliveries.OfNotification(ctx, n.ID)
	if err != nil {
		return nil, err
	}
	n.Deliveries = make([]*notifier.Delivery, len(ds))
	for i := range ds {
		n.Deliveries[i] = &ds[i]
	}
	return n, nil
}

// Categories implements notifier.CategoryStore.
func (s *Store) Categories(ctx context.Context) ([]preference.Category, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, description, critical, default_opt_in, allowed_channels, caps, fallback,
		digest FROM notifier.categories ORDER BY name`)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	cats, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (preference.Category, error) {
		var c preference.Category
		var chs []string
		var caps, fallback, digest []byte
		if err := r.Scan(&c.Name, &c.Description, &c.Critical, &c.DefaultOptIn, &chs, &caps, &fallback, &digest); err != nil {
			return c, err
		}
		for _, ch := range chs {
			c.AllowedChannels = append(c.AllowedChannels, delivery.Channel(ch))
		}
		if err := json.Unmarshal(caps, &c.Caps); err != nil {
			return c, fmt.Errorf("decode caps of category %s: %w", c.Name, err)
		}
		if fallback != nil {
			if err := json.Unmarshal(fallback, &c.Fallback); err != nil {
				return c, fmt.Errorf("decode fallback of category %s: %w", c.Name, err)
			}
		}
		if digest != nil {
			if err := json.Unmarshal(digest, &c.Digest); err != nil {
				return c, fmt.Errorf("decode digest of category %s: %w", c.Name, err)
			}
		}
		return c, nil
	})
	return cats, pgdb.Err(err)
}

// PutCategory implements notifier.CategoryStore.
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
	var fallback []byte // NULL: no chain
	if c.Fallback != nil {
		if fallback, err = json.Marshal(c.Fallback); err != nil {
			return fmt.Errorf("encode fallback: %w", err)
		}
	}
	var digest []byte // NULL: no digest
	if c.Digest != nil {
		if digest, err = json.Marshal(c.Digest); err != nil {
			return fmt.Errorf("encode digest: %w", err)
		}
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO notifier.categories (name, description, critical, default_opt_in, allowed_channels, caps, fallback,
			digest)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (name) DO UPDATE SET description = excluded.description, critical = excluded.critical,
			default_opt_in = excluded.default_opt_in, allowed_channels = excluded.allowed_channels,
			caps = excluded.caps, fallback = excluded.fallback, digest = excluded.digest, updated_at = now()`,
		c.Name, c.Description, c.Critical, c.DefaultOptIn, chs, caps, fallback, digest)
	return pgdb.Err(err)
}

// EraseUser removes the addresses and content of every delivery to a deleted user, keeping only
// the user id in the history, and cancels those not yet sent. The short links of the user's
// deliveries go too: their URLs may name the user.
func (s *Store) EraseUser(ctx context.Context, userID string) error {
	if err := s.eraseLinks(ctx, userID); err != nil {
		return err
	}
	return s.deliveries.EraseUser(ctx, userID)
}

// RecordProviderEvents implements notifier.StatsStore and webhooks.Store: one transaction stores the events, moves the
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
		LEFT JOIN delivery.deliveries byid ON byid.id = u.delivery_id
		LEFT JOIN LATERAL (
			SELECT d.id FROM delivery.deliveries d
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
	byKey := make(map[key]*notifier.ProviderEvent, n)
	for i := range in {
		byKey[key{in[i].Provider, in[i].ID}] = &in[i]
	}
	var settle []delivery.Event
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
		settle = append(settle, delivery.Event{DeliveryID: *did, State: state, Reason: reason, Provider: e.Provider,
			ProviderMessageID: e.ProviderMessageID, EventID: e.ID, OccurredAt: e.OccurredAt})
		return nil
	})
	if err != nil {
		return nil, pgdb.Err(err)
	}
	// The worker may not have recorded the send yet: the provider's event is the better
	// evidence (see delivery.EventFrom).
	if err := s.deliveries.In(tx).Settle(ctx, settle); err != nil {
		return nil, err
	}

	// What to act on: the new events, and earlier ones whose fact was never announced (the
	// publish failed, and the provider sent the event again).
	rows, err = tx.Query(ctx, `
		SELECT u.ord, pe.kind, pe.effect, pe.delivery_id,
			(pe.effect <> '' AND pe.delivery_id IS NOT NULL AND pe.announced_at IS NULL),
			coalesce(d.channel, ''), coalesce(d.address, ''), coalesce(d.user_id, ''), coalesce(d.category, '')
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(provider, event_id, ord)
		JOIN notifier.provider_events pe ON pe.provider = u.provider AND pe.event_id = u.event_id
		LEFT JOIN delivery.deliveries d ON d.id = pe.delivery_id
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

// MarkProviderEventsAnnounced records that the address facts of the provider's events with these
// ids were published, so RecordProviderEvents stops returning them. It implements webhooks.Store.
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
