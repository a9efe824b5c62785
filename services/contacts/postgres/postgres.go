// Package postgres stores the contacts service's users, devices, settings and suppressions in
// PostgreSQL (schema "contacts"), with the change feed that keeps every replica's cache exact,
// and applies the schema's embedded migrations.
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema the contacts service owns.
const Schema = "contacts"

// Migrate brings the contacts schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgdb.Migrate(ctx, pool, Schema, sub, log)
}

// Store implements contacts.Store.
type Store struct {
	pool *pgxpool.Pool
}

var _ contacts.Store = (*Store)(nil)

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// write runs fn in a transaction and records the changed keys in the change feed in the same
// transaction, so a cache can never miss a committed change.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) ([]string, error)) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		keys, err := fn(tx)
		if err != nil {
			return err
		}
		return pgdb.Touch(ctx, tx, ChangesTable, keys...)
	})
}

// fail passes domain errors through and classifies database errors.
func fail(err error) error {
	var e *errs.Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return pgdb.Err(err)
}

const userColumns = `id, email, phone, locale, timezone, created_at, updated_at`

func scanUser(r pgx.Row) (*contacts.User, error) {
	var u contacts.User
	err := r.Scan(&u.ID, &u.Email, &u.Phone, &u.Locale, &u.Timezone, &u.CreatedAt, &u.UpdatedAt)
	return &u, err
}

// UpsertUser implements contacts.Store.
func (s *Store) UpsertUser(ctx context.Context, u *contacts.User) (*contacts.User, error) {
	var out *contacts.User
	err := s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		var err error
		out, err = scanUser(tx.QueryRow(ctx, `
			INSERT INTO contacts.users (id, email, phone, locale, timezone) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET email = excluded.email, phone = excluded.phone,
				locale = excluded.locale, timezone = excluded.timezone, updated_at = now()
			RETURNING `+userColumns, u.ID, u.Email, u.Phone, u.Locale, u.Timezone))
		return []string{contacts.UserKey(u.ID)}, err
	})
	return out, fail(err)
}

// User implements contacts.Store.
func (s *Store) User(ctx context.Context, id string) (*contacts.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM contacts.users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "user %q not found", id)
	}
	return u, fail(err)
}

// DeleteUser implements contacts.Store. Devices go with the user (ON DELETE CASCADE);
// suppressions stay, because they belong to the address, not the user.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		_, err := tx.Exec(ctx, `DELETE FROM contacts.users WHERE id = $1`, id)
		return []string{contacts.UserKey(id)}, err
	}))
}

func userExists(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string) error {
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM contacts.users WHERE id = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return errs.E(errs.NotFound, "user %q not found", id)
	}
	return err
}

const deviceColumns = `user_id, platform, token, app, active, deactivated_reason, created_at, updated_at`

func scanDevice(r pgx.Row) (contacts.Device, error) {
	var d contacts.Device
	var platform string
	err := r.Scan(&d.UserID, &platform, &d.Token, &d.App, &d.Active, &d.DeactivatedReason, &d.CreatedAt, &d.UpdatedAt)
	d.Platform = delivery.Channel(platform)
	return d, err
}

// RegisterDevice implements contacts.Store.
func (s *Store) RegisterDevice(ctx context.Context, d *contacts.Device) (*contacts.Device, error) {
	var out contacts.Device
	err := s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		if err := userExists(ctx, tx, d.UserID); err != nil {
			return nil, err
		}
		var previous *string
		err := tx.QueryRow(ctx, `SELECT user_id FROM contacts.devices WHERE platform = $1 AND token = $2 FOR UPDATE`,
			string(d.Platform), d.Token).Scan(&previous)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		out, err = scanDevice(tx.QueryRow(ctx, `
			INSERT INTO contacts.devices (platform, token, user_id, app) VALUES ($1, $2, $3, $4)
			ON CONFLICT (platform, token) DO UPDATE SET user_id = excluded.user_id, app = excluded.app,
				active = true, deactivated_reason = '', deactivated_at = NULL, updated_at = now()
			RETURNING `+deviceColumns, string(d.Platform), d.Token, d.UserID, d.App))
		if err != nil {
			return nil, err
		}
		// A token registered again is alive again, whatever a provider said before.
		if _, err := tx.Exec(ctx, `DELETE FROM contacts.suppressions WHERE channel = $1 AND address = $2`,
			string(d.Platform), d.Token); err != nil {
			return nil, err
		}
		keys := []string{contacts.UserKey(d.UserID), contacts.AddressKey(d.Platform, d.Token)}
		if previous != nil && *previous != d.UserID {
			keys = append(keys, contacts.UserKey(*previous))
		}
		return keys, nil
	})
	if err != nil {
		return nil, fail(err)
	}
	return &out, nil
}

// UnregisterDevice implements contacts.Store.
func (s *Store) UnregisterDevice(ctx context.Context, platform delivery.Channel, token string) error {
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		var owner string
		err := tx.QueryRow(ctx, `DELETE FROM contacts.devices WHERE platform = $1 AND token = $2 RETURNING user_id`,
			string(platform), token).Scan(&owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		return []string{contacts.UserKey(owner)}, err
	}))
}

// Devices implements contacts.Store.
func (s *Store) Devices(ctx context.Context, userID string, includeInactive bool) ([]contacts.Device, error) {
	if err := userExists(ctx, s.pool, userID); err != nil {
		return nil, fail(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deviceColumns+` FROM contacts.devices
		WHERE user_id = $1 AND (active OR $2) ORDER BY created_at, token`, userID, includeInactive)
	if err != nil {
		return nil, fail(err)
	}
	devices, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (contacts.Device, error) { return scanDevice(r) })
	return devices, fail(err)
}

// DeactivateToken implements contacts.Store.
func (s *Store) DeactivateToken(ctx context.Context, platform delivery.Channel, token, reason string, since time.Time) error {
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		keys := []string{contacts.AddressKey(platform, token)}
		var owner string
		var registered time.Time
		err := tx.QueryRow(ctx, `SELECT user_id, updated_at FROM contacts.devices
			WHERE platform = $1 AND token = $2 FOR UPDATE`, string(platform), token).Scan(&owner, &registered)
		switch {
		case errors.Is(err, pgx.ErrNoRows): // a raw address, not a registered device
		case err != nil:
			return nil, err
		case !since.IsZero() && registered.After(since):
			return nil, nil // registered again after the provider's verdict: it stands
		default:
			if _, err := tx.Exec(ctx, `UPDATE contacts.devices SET active = false, deactivated_reason = $3,
				deactivated_at = now(), updated_at = now() WHERE platform = $1 AND token = $2`,
				string(platform), token, reason); err != nil {
				return nil, err
			}
			keys = append(keys, contacts.UserKey(owner))
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO contacts.suppressions (channel, address, category, reason, invalid) VALUES ($1, $2, '', $3, true)
			ON CONFLICT (channel, address, category) DO UPDATE SET reason = excluded.reason, invalid = true, created_at = now()`,
			string(platform), token, reason)
		return keys, err
	}))
}

// Settings implements contacts.Store.
func (s *Store) Settings(ctx context.Context, userID string) (*preference.Settings, contacts.Version, error) {
	var raw []byte
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT settings, settings_version FROM contacts.users WHERE id = $1`, userID).Scan(&raw, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, errs.E(errs.NotFound, "user %q not found", userID)
	}
	if err != nil {
		return nil, 0, fail(err)
	}
	st, err := decodeSettings(raw)
	return st, contacts.Version(v), err
}

func decodeSettings(raw []byte) (*preference.Settings, error) {
	if raw == nil {
		return nil, nil
	}
	var st preference.Settings
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("decode settings: %w", err)
	}
	return &st, nil
}

// UpdateSettings implements contacts.Store. The version is compared in the UPDATE itself: of
// two writers holding the same version, the second waits for the first's row lock, then finds
// the version changed and updates nothing.
func (s *Store) UpdateSettings(ctx context.Context, userID string, st *preference.Settings, ifVersion contacts.Version) (contacts.Version, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode settings: %w", err)
	}
	var v int64
	err = s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		err := tx.QueryRow(ctx, `
			UPDATE contacts.users SET settings = $2, settings_version = nextval('contacts.settings_versions'), updated_at = now()
			WHERE id = $1 AND ($3 < 0 OR settings_version = $3)
			RETURNING settings_version`, userID, raw, int64(ifVersion)).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := userExists(ctx, tx, userID); err != nil {
				return nil, err
			}
			return nil, contacts.StaleSettings(userID)
		}
		return []string{contacts.UserKey(userID)}, err
	})
	return contacts.Version(v), fail(err)
}

// Suppress implements contacts.Store.
func (s *Store) Suppress(ctx context.Context, sup preference.Suppression) error {
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) { return suppress(ctx, tx, sup) }))
}

func suppress(ctx context.Context, tx pgx.Tx, sup preference.Suppression) ([]string, error) {
	_, err := tx.Exec(ctx, `
		INSERT INTO contacts.suppressions (channel, address, category, reason, invalid) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (channel, address, category) DO UPDATE SET reason = excluded.reason,
			invalid = contacts.suppressions.invalid OR excluded.invalid, created_at = now()`,
		string(sup.Channel), sup.Address, sup.Category, sup.Reason, sup.Invalid)
	return []string{contacts.AddressKey(sup.Channel, sup.Address)}, err
}

// Unsuppress implements contacts.Store.
func (s *Store) Unsuppress(ctx context.Context, ch delivery.Channel, address, category string) error {
	return fail(s.write(ctx, func(tx pgx.Tx) ([]string, error) { return unsuppress(ctx, tx, ch, address, category) }))
}

func unsuppress(ctx context.Context, tx pgx.Tx, ch delivery.Channel, address, category string) ([]string, error) {
	_, err := tx.Exec(ctx, `DELETE FROM contacts.suppressions
		WHERE channel = $1 AND address = $2 AND category = $3 AND NOT invalid`, string(ch), address, category)
	return []string{contacts.AddressKey(ch, address)}, err
}

// SMSKeyword implements contacts.Store: the message is recorded and its keyword applied in one
// transaction, so a message is applied exactly when it is recorded.
func (s *Store) SMSKeyword(ctx context.Context, messageSID, number string, stop bool) (bool, error) {
	applied := false
	err := s.write(ctx, func(tx pgx.Tx) ([]string, error) {
		tag, err := tx.Exec(ctx, `INSERT INTO contacts.sms_keywords (message_sid, stop) VALUES ($1, $2)
			ON CONFLICT (message_sid) DO NOTHING`, messageSID, stop)
		if err != nil || tag.RowsAffected() == 0 {
			return nil, err
		}
		applied = true
		if stop {
			return suppress(ctx, tx, preference.Suppression{Channel: delivery.SMS, Address: number, Reason: "stop"})
		}
		return unsuppress(ctx, tx, delivery.SMS, number, "")
	})
	return applied && err == nil, fail(err)
}

// Resolve implements contacts.Store: both queries go in one batch, one round trip.
func (s *Store) Resolve(ctx context.Context, ids []string, targets []contacts.Target) ([]contacts.Resolved, map[contacts.Target][]preference.Suppression, error) {
	if ids == nil {
		ids = []string{}
	}
	chans := make([]string, len(targets))
	addrs := make([]string, len(targets))
	for i, t := range targets {
		chans[i], addrs[i] = string(t.Channel), t.Address
	}
	var users []contacts.Resolved
	sups := map[contacts.Target][]preference.Suppression{}
	b := &pgx.Batch{}
	b.Queue(`
		SELECT u.id, u.email, u.phone, u.locale, u.timezone, u.created_at, u.updated_at, u.settings,
			coalesce(json_agg(json_build_object('platform', d.platform, 'token', d.token, 'app', d.app))
				FILTER (WHERE d.token IS NOT NULL), '[]')
		FROM contacts.users u LEFT JOIN contacts.devices d ON d.user_id = u.id AND d.active
		WHERE u.id = ANY($1) GROUP BY u.id`, ids).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var r contacts.Resolved
			var u contacts.User
			var settings, devices []byte
			if err := rows.Scan(&u.ID, &u.Email, &u.Phone, &u.Locale, &u.Timezone, &u.CreatedAt, &u.UpdatedAt,
				&settings, &devices); err != nil {
				return err
			}
			r.User = &u
			var err error
			if r.Settings, err = decodeSettings(settings); err != nil {
				return err
			}
			var ds []struct{ Platform, Token, App string }
			if err := json.Unmarshal(devices, &ds); err != nil {
				return fmt.Errorf("decode devices: %w", err)
			}
			for _, d := range ds {
				r.Devices = append(r.Devices, contacts.Device{UserID: u.ID, Platform: delivery.Channel(d.Platform),
					Token: d.Token, App: d.App, Active: true})
			}
			users = append(users, r)
		}
		return rows.Err()
	})
	b.Queue(`
		WITH addrs AS (
			SELECT 'email' AS channel, email AS address FROM contacts.users WHERE id = ANY($1) AND email <> ''
			UNION SELECT 'sms', phone FROM contacts.users WHERE id = ANY($1) AND phone <> ''
			UNION SELECT platform, token FROM contacts.devices WHERE user_id = ANY($1) AND active
			UNION SELECT * FROM unnest($2::text[], $3::text[])
		)
		SELECT a.channel, a.address, s.category, s.reason, s.invalid
		FROM addrs a LEFT JOIN contacts.suppressions s ON s.channel = a.channel AND s.address = a.address`,
		ids, chans, addrs).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var t contacts.Target
			var ch string
			var category, reason *string
			var invalid *bool
			if err := rows.Scan(&ch, &t.Address, &category, &reason, &invalid); err != nil {
				return err
			}
			t.Channel = delivery.Channel(ch)
			list := sups[t]
			if reason != nil {
				list = append(list, preference.Suppression{Channel: t.Channel, Address: t.Address,
					Category: *category, Reason: *reason, Invalid: *invalid})
			}
			sups[t] = list
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fail(err)
	}
	return users, sups, nil
}

// Categories implements contacts.Store. The categories belong to the notifier; the contacts
// service reads them to validate settings and show them on the preference page.
func (s *Store) Categories(ctx context.Context) ([]preference.Category, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, description, critical, default_opt_in FROM notifier.categories ORDER BY name`)
	if err != nil {
		return nil, fail(err)
	}
	cats, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (preference.Category, error) {
		var c preference.Category
		err := r.Scan(&c.Name, &c.Description, &c.Critical, &c.DefaultOptIn)
		return c, err
	})
	return cats, fail(err)
}

// Changes implements contacts.Store (coherent.Feed).
func (s *Store) Changes(ctx context.Context, horizon uint64) ([]string, uint64, error) {
	return pgdb.Changes(ctx, s.pool, ChangesTable, horizon)
}

// Horizon implements contacts.Store.
func (s *Store) Horizon(ctx context.Context) (uint64, error) { return pgdb.Horizon(ctx, s.pool) }

// ChangesPage implements contacts.Store.
func (s *Store) ChangesPage(ctx context.Context, horizon uint64, from contacts.FeedPosition, maxKeys, maxBytes int) ([]string, *contacts.FeedPosition, uint64, error) {
	keys, more, next, err := pgdb.ChangesPage(ctx, s.pool, ChangesTable, horizon,
		pgdb.FeedPosition{XID: from.XID, ID: from.ID}, maxKeys, maxBytes)
	if err != nil || more == nil {
		return keys, nil, next, err
	}
	return keys, &contacts.FeedPosition{XID: more.XID, ID: more.ID}, next, nil
}

// SuppressedAddresses implements contacts.Store: a walk of the suppressions' primary key.
func (s *Store) SuppressedAddresses(ctx context.Context, after *contacts.Target, max, maxBytes int) ([]contacts.Target, bool, error) {
	var ch, addr string
	if after != nil {
		ch, addr = string(after.Channel), after.Address
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT channel, address FROM contacts.suppressions
		WHERE (channel, address) > ($1, $2) ORDER BY channel, address LIMIT $3`, ch, addr, max)
	if err != nil {
		return nil, false, fail(err)
	}
	var out []contacts.Target
	size := 0
	for rows.Next() {
		var t contacts.Target
		var tch string
		if err := rows.Scan(&tch, &t.Address); err != nil {
			rows.Close()
			return nil, false, fail(err)
		}
		if len(out) > 0 && size+len(t.Address) > maxBytes {
			rows.Close()
			return out, true, nil
		}
		t.Channel = delivery.Channel(tch)
		size += len(t.Address)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fail(err)
	}
	return out, len(out) == max, nil
}
