package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/links"
)

// insertLinks stores the short links of ns, in the transaction that creates them: a link is
// committed with its delivery.
func insertLinks(ctx context.Context, tx pgx.Tx, ns []*notifier.Notification) error {
	var (
		ids               []int64
		dIDs, nIDs, apps  pgtype.FlatArray[pgtype.UUID]
		chans, cats, urls []string
		tmpls             pgtype.FlatArray[pgtype.Text]
		created, expires  []time.Time
	)
	for _, n := range ns {
		for _, l := range n.Links {
			ids, dIDs = append(ids, l.ID), append(dIDs, pgdb.UUID(l.DeliveryID))
			nIDs, apps = append(nIDs, pgdb.UUID(l.NotificationID)), append(apps, pgdb.UUID(l.AppID))
			chans, cats, urls = append(chans, string(l.Channel)), append(cats, l.Category), append(urls, l.URL)
			tmpls, created, expires = append(tmpls, pgdb.Text(l.Template)), append(created, l.CreatedAt), append(expires, l.ExpiresAt)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO notifier.links (id, delivery_id, notification_id, app_id, channel, category,
			template_name, url, created_at, expires_at)
		SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])`,
		ids, dIDs, nIDs, apps, chans, cats, tmpls, urls, created, expires)
	return pgdb.Err(err)
}

// ReserveLinkIDs returns the first of a fresh block of links.BlockSize link sequence numbers
// (links.Allocator.Reserve).
func (s *Store) ReserveLinkIDs(ctx context.Context) (int64, error) {
	var first int64
	err := s.pool.QueryRow(ctx, `SELECT nextval('notifier.link_ids')`).Scan(&first)
	return first, pgdb.Err(err)
}

// Link implements links.Resolver.
func (s *Store) Link(ctx context.Context, id int64) (links.Target, error) {
	var t links.Target
	var tmpl *string
	err := s.pool.QueryRow(ctx, `SELECT url, delivery_id, expires_at, channel, category, template_name
		FROM notifier.links WHERE id = $1`, id).Scan(&t.URL, &t.DeliveryID, &t.ExpiresAt, &t.Channel, &t.Category, &tmpl)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errs.E(errs.NotFound, "link not found")
	}
	if tmpl != nil {
		t.Template = *tmpl
	}
	return t, pgdb.Err(err)
}

var _ links.Resolver = (*Store)(nil)
var _ links.ClickStore = (*Store)(nil)

// InsertClicks implements links.ClickStore in one statement. A batch holds at most one click
// per delivery and class within the window (the Recorder's own dedupe), so only stored clicks
// need checking.
func (s *Store) InsertClicks(ctx context.Context, clicks []links.Click, window, prefetch time.Duration) ([]string, error) {
	n := len(clicks)
	ids, dids, ats, bots := make([]int64, n), make([]uuid.UUID, n), make([]time.Time, n), make([]string, n)
	for i, c := range clicks {
		ids[i], dids[i], ats[i], bots[i] = c.LinkID, c.DeliveryID, c.At, c.Bot
	}
	rows, err := s.pool.Query(ctx, `
		WITH u AS (
			SELECT u.ord, u.link_id, l.delivery_id, u.at,
				CASE WHEN u.bot <> '' THEN u.bot
					WHEN u.at < coalesce(d.sent_at, l.created_at) + $6::interval THEN 'timing'
					ELSE '' END AS bot
			FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[]) WITH ORDINALITY
				AS u(link_id, delivery_id, at, bot, ord)
			JOIN notifier.links l ON l.id = u.link_id AND l.delivery_id = u.delivery_id
			LEFT JOIN delivery.deliveries d ON d.id = l.delivery_id
		), ins AS (
			INSERT INTO notifier.link_clicks (link_id, delivery_id, clicked_at, bot)
			SELECT u.link_id, u.delivery_id, u.at, u.bot FROM u
			WHERE NOT EXISTS (
				SELECT 1 FROM notifier.link_clicks c
				WHERE c.delivery_id = u.delivery_id AND (c.bot = '') = (u.bot = '')
					AND c.clicked_at > u.at - $5::interval AND c.clicked_at <= u.at)
			RETURNING link_id, delivery_id, clicked_at, bot
		)
		SELECT u.ord, ins.bot FROM u JOIN ins ON ins.link_id = u.link_id AND ins.clicked_at = u.at AND ins.bot = u.bot`,
		ids, dids, ats, bots, window, prefetch)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = links.OutcomeDuplicate
	}
	var ord int
	var bot string
	if _, err := pgx.ForEachRow(rows, []any{&ord, &bot}, func() error {
		if bot == "" {
			out[ord-1] = links.OutcomePerson
		} else {
			out[ord-1] = links.OutcomeBot
		}
		return nil
	}); err != nil {
		return nil, pgdb.Err(err)
	}
	return out, nil
}

// eraseLinks deletes the short links of a deleted user's deliveries, and their clicks.
func (s *Store) eraseLinks(ctx context.Context, userID string) error {
	_, err := s.pool.Exec(ctx, `
		WITH d AS (SELECT id FROM delivery.deliveries WHERE user_id = $1),
		l AS (DELETE FROM notifier.links WHERE delivery_id IN (SELECT id FROM d))
		DELETE FROM notifier.link_clicks WHERE delivery_id IN (SELECT id FROM d)`, userID)
	return pgdb.Err(err)
}
