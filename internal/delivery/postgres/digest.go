package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
)

// Digests (see migrations/00016_digests.sql). Exactly once, never lost: an item joins an open
// digest in the transaction that creates it, with an INSERT ... ON CONFLICT DO UPDATE on the
// digest's row, and a digest closes in one transaction that first locks its row. The two take
// the same row lock, so an item's transaction either commits before the close locks the row
// (and the close, whose next statements see it, takes the item) or waits for the close to
// commit, when its digest no longer counts as open and the insert opens a new one.

// digestKey is what one open digest is per: app, recipient, category and channel.
type digestKey struct {
	app      uuid.UUID
	user     string
	category string
	channel  delivery.Channel
	to       string
}

func keyOf(d *delivery.Delivery) digestKey {
	return digestKey{d.AppID, d.UserID, d.Category, d.Channel, d.To}
}

// collectSQL finds or opens the digest of each key, in the order of the keys, so that two
// transactions that collect into the same digests lock their rows in the same order and cannot
// deadlock. The update of a found digest changes nothing but takes its row lock until commit.
const collectSQL = `
	INSERT INTO delivery.digests AS g (id, app_id, user_id, category, channel, address, template, locale,
		close_at, created_at)
	SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::timestamptz[], $10::timestamptz[])
	ORDER BY 2, 3, 4, 5, 6
	ON CONFLICT (app_id, user_id, category, channel, address) WHERE NOT closed
		DO UPDATE SET closed = g.closed
	RETURNING g.id, g.app_id, g.user_id, g.category, g.channel, g.address`

// collect sets the DigestID of the deliveries of ds that go into a digest: the open digest of
// their key, or a new one that closes at the first such delivery's CloseAt.
func (s *Store) collect(ctx context.Context, ds []delivery.Delivery) error {
	first := map[digestKey]int{}
	var keys []digestKey
	for i := range ds {
		d := &ds[i]
		if !d.InDigest() {
			continue
		}
		k := keyOf(d)
		if _, ok := first[k]; !ok {
			first[k] = i
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	n := len(keys)
	ids, apps := make([]uuid.UUID, n), make([]uuid.UUID, n)
	users, cats, chs, tos, tmpls, locs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	closes, created := make([]time.Time, n), make([]time.Time, n)
	for i, k := range keys {
		d := &ds[first[k]]
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("digest id: %w", err)
		}
		ids[i], apps[i], users[i], cats[i], chs[i], tos[i] = id, k.app, k.user, k.category, string(k.channel), k.to
		tmpls[i], locs[i], closes[i], created[i] = d.Digest.Template, d.Digest.Locale, d.Digest.CloseAt, d.CreatedAt
	}
	rows, err := s.db.Query(ctx, collectSQL, pgdb.UUIDs(ids), pgdb.UUIDs(apps), users, cats, chs, tos, tmpls, locs, closes, created)
	if err != nil {
		return pgdb.Err(err)
	}
	got := map[digestKey]uuid.UUID{}
	var id, app uuid.UUID
	var k digestKey
	var ch string
	_, err = pgx.ForEachRow(rows, []any{&id, &app, &k.user, &k.category, &ch, &k.to}, func() error {
		k.app, k.channel = app, delivery.Channel(ch)
		got[k] = id
		return nil
	})
	if err != nil {
		return pgdb.Err(err)
	}
	for i := range ds {
		d := &ds[i]
		if !d.InDigest() {
			continue
		}
		if d.DigestID = got[keyOf(d)]; d.DigestID == uuid.Nil {
			return fmt.Errorf("digest of delivery %s: not found or opened", d.ID)
		}
	}
	return nil
}

// DueDigests returns up to limit open digests whose close time is at or before now, earliest
// first.
func (s *Store) DueDigests(ctx context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error) {
	rows, err := s.db.Query(ctx, `SELECT `+digestColumns+` FROM delivery.digests WHERE NOT closed AND close_at <= $1
		ORDER BY close_at LIMIT $2`, now, limit)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	gs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (delivery.DigestRecord, error) { return scanDigest(r) })
	return gs, pgdb.Err(err)
}

const digestColumns = `id, app_id, user_id, category, channel, address, template, locale, closed, close_at,
	created_at, delivery_id`

func scanDigest(row pgx.Row) (delivery.DigestRecord, error) {
	var g delivery.DigestRecord
	var ch string
	var dl pgtype.UUID
	err := row.Scan(&g.ID, &g.AppID, &g.UserID, &g.Category, &ch, &g.To, &g.Template, &g.Locale, &g.Closed,
		&g.CloseAt, &g.CreatedAt, &dl)
	g.Channel, g.DeliveryID = delivery.Channel(ch), uuid.UUID(dl.Bytes)
	return g, err
}

// Digest returns a digest by id. Errors: NotFound.
func (s *Store) Digest(ctx context.Context, id uuid.UUID) (delivery.DigestRecord, error) {
	g, err := scanDigest(s.db.QueryRow(ctx, `SELECT `+digestColumns+` FROM delivery.digests WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return g, errs.E(errs.NotFound, "digest %s not found", id)
	}
	return g, pgdb.Err(err)
}

// CloseDigest closes digest id if it is open and due at now, in one transaction: build is given
// the digest and its live items (scheduled in it, not past their ttl, oldest first, with their
// content) and returns the one delivery that sends them, which is created, and the items become
// Digested, linked to it. A digest with no live item (all canceled or expired) closes with
// nothing to send, and build is not called. CloseDigest returns the
// delivery created (nil: nothing to send, or the digest was not open and due, or another
// caller holds it). Called on s.In(tx), it closes in a savepoint of tx, and commits with it.
func (s *Store) CloseDigest(ctx context.Context, id uuid.UUID, now time.Time,
	build func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error)) (*delivery.Delivery, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	defer tx.Rollback(ctx)
	// SKIP LOCKED: another reconciler closing it, or a Send adding to it, is left alone; a later
	// pass finds it again if it is still open.
	g, err := scanDigest(tx.QueryRow(ctx, `SELECT `+digestColumns+` FROM delivery.digests
		WHERE id = $1 AND NOT closed AND close_at <= $2 FOR UPDATE SKIP LOCKED`, id, now))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, pgdb.Err(err)
	}
	// The items, locked: a Cancel (or the reconciler's expiry) waits for the close and then
	// finds them digested, or came first and they are not here.
	rows, err := tx.Query(ctx, `SELECT `+claimedColumns+` FROM delivery.deliveries d
		WHERE d.digest_id = $1 AND d.state = 'scheduled' AND d.reason = '`+delivery.ReasonDigest+`'
			AND d.expires_at > $2
		ORDER BY d.created_at, d.id FOR UPDATE`, id, now)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	items, err := pgx.CollectRows(rows, scanClaimed)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	var made *delivery.Delivery
	if len(items) > 0 {
		if made, err = build(g, items); err != nil {
			return nil, err
		}
		if err := s.In(tx).Create(ctx, []delivery.Delivery{*made}); err != nil {
			return nil, err
		}
		ids := make([]uuid.UUID, len(items))
		for i := range items {
			ids[i] = items[i].ID
		}
		tag, err := tx.Exec(ctx, `UPDATE delivery.deliveries SET state = 'digested', reason = '', due_at = NULL,
				updated_at = $2
			WHERE id = ANY($1) AND state = 'scheduled'`, pgdb.UUIDs(ids), now)
		if err != nil {
			return nil, pgdb.Err(err)
		}
		if int(tag.RowsAffected()) != len(ids) { // the rows are locked: nothing can have moved them
			return nil, fmt.Errorf("close digest %s: %d of %d items moved", id, tag.RowsAffected(), len(ids))
		}
	}
	var dl pgtype.UUID
	if made != nil {
		dl = optUUID(made.ID)
	}
	if _, err := tx.Exec(ctx, `UPDATE delivery.digests SET closed = true, closed_at = $2, delivery_id = $3
		WHERE id = $1`, id, now, dl); err != nil {
		return nil, pgdb.Err(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, pgdb.Err(err)
	}
	return made, nil
}

// OpenDigest returns the open digest of an app's recipient (userID, "" for a raw address to),
// category and channel, if there is one.
func (s *Store) OpenDigest(ctx context.Context, app uuid.UUID, userID, category string, ch delivery.Channel, to string) (delivery.DigestRecord, bool, error) {
	g, err := scanDigest(s.db.QueryRow(ctx, `SELECT `+digestColumns+` FROM delivery.digests
		WHERE app_id = $1 AND user_id = $2 AND category = $3 AND channel = $4 AND address = $5 AND NOT closed`,
		app, userID, category, string(ch), to))
	if errors.Is(err, pgx.ErrNoRows) {
		return g, false, nil
	}
	return g, err == nil, pgdb.Err(err)
}
