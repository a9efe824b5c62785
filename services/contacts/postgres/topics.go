package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/services/contacts"
)

var (
	_ contacts.TopicStore = (*Store)(nil)
	_ contacts.BulkStore  = (*Store)(nil)
)

// Subscribe implements contacts.TopicStore. Subscriptions change nothing a lookup answers, so
// they are not in the change feed.
func (s *Store) Subscribe(ctx context.Context, topic string, ids []string) (int, []string, error) {
	rows, err := s.pool.Query(ctx, `
		WITH wanted AS (SELECT DISTINCT unnest($2::text[]) AS id),
		known AS (SELECT w.id FROM wanted w JOIN contacts.users u ON u.id = w.id),
		added AS (
			INSERT INTO contacts.subscriptions (topic, user_id) SELECT $1, id FROM known
			ON CONFLICT DO NOTHING RETURNING user_id)
		SELECT id, false FROM wanted WHERE id NOT IN (SELECT id FROM known)
		UNION ALL SELECT user_id, true FROM added`, topic, ids)
	if err != nil {
		return 0, nil, fail(err)
	}
	added := 0
	var unknown []string
	var id string
	var isAdded bool
	_, err = pgx.ForEachRow(rows, []any{&id, &isAdded}, func() error {
		if isAdded {
			added++
		} else {
			unknown = append(unknown, id)
		}
		return nil
	})
	return added, unknown, fail(err)
}

// Unsubscribe implements contacts.TopicStore.
func (s *Store) Unsubscribe(ctx context.Context, topic string, ids []string) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM contacts.subscriptions WHERE topic = $1 AND user_id = ANY($2)`, topic, ids)
	return int(tag.RowsAffected()), fail(err)
}

// Subscribers implements contacts.TopicStore: one range of the primary key. It reads one row
// more than max to tell whether there are more.
func (s *Store) Subscribers(ctx context.Context, topic, after string, max int) ([]string, bool, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT user_id FROM contacts.subscriptions WHERE topic = $1 AND user_id > $2
		ORDER BY user_id LIMIT $3`, topic, after, max+1)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, false, fail(err)
	}
	if len(ids) > max {
		return ids[:max], true, nil
	}
	return ids, false, nil
}

// UserTopics implements contacts.TopicStore.
func (s *Store) UserTopics(ctx context.Context, userID string, max int) ([]string, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT topic FROM contacts.subscriptions WHERE user_id = $1 ORDER BY topic LIMIT $2`, userID, max)
	topics, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return topics, fail(err)
}

// UpsertUsers implements contacts.BulkStore: one statement for the batch, and its users' keys
// in the change feed in the same transaction, as UpsertUser does for one.
func (s *Store) UpsertUsers(ctx context.Context, us []*contacts.User) error {
	n := len(us)
	ids, emails, phones := make([]string, n), make([]string, n), make([]string, n)
	locales, zones, keys := make([]string, n), make([]string, n), make([]string, n)
	for i, u := range us {
		ids[i], emails[i], phones[i], locales[i], zones[i] = u.ID, u.Email, u.Phone, u.Locale, u.Timezone
		keys[i] = contacts.UserKey(u.ID)
	}
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		_, err := tx.Exec(ctx, `
			INSERT INTO contacts.users (id, email, phone, locale, timezone)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
			ON CONFLICT (id) DO UPDATE SET email = excluded.email, phone = excluded.phone,
				locale = excluded.locale, timezone = excluded.timezone, updated_at = now()`,
			ids, emails, phones, locales, zones)
		return keys, err
	}))
}
