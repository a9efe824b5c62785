package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// Every write that changes how a key authenticates (its app's scopes, a revocation, a new key)
// appends the key ids to appkey.ChangesTable in the same transaction, so that every replica's
// authenticator sees it from its next call on.

func channels(chs []delivery.Channel) []string {
	out := make([]string, len(chs))
	for i, ch := range chs {
		out[i] = string(ch)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CreateApp implements notifier.AppStore.
func (s *Store) CreateApp(ctx context.Context, a *notifier.App) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO notifier.apps (id, name, admin, created_at, allowed_categories, allowed_channels,
			requests_per_second, burst, contacts_access)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		a.ID, a.Name, a.Admin, a.CreatedAt, nonNil(a.AllowedCategories), channels(a.AllowedChannels),
		a.RatePerSecond, a.Burst, a.Contacts.String())
	if constraint, dup := pgdb.IsUniqueViolation(err); dup {
		if constraint == "apps_pkey" {
			return errs.E(errs.Conflict, "an app with id %s already exists", a.ID)
		}
		return errs.E(errs.Conflict, "an app named %q already exists", a.Name)
	}
	return pgdb.Err(err)
}

// UpdateApp implements notifier.AppStore.
func (s *Store) UpdateApp(ctx context.Context, a *notifier.App) error {
	return pgdb.Err(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			UPDATE notifier.apps SET allowed_categories = $2, allowed_channels = $3,
				requests_per_second = $4, burst = $5, contacts_access = $6
			WHERE id = $1 RETURNING name, admin, created_at`,
			a.ID, nonNil(a.AllowedCategories), channels(a.AllowedChannels), a.RatePerSecond, a.Burst,
			a.Contacts.String()).
			Scan(&a.Name, &a.Admin, &a.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "app not found")
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+appkey.ChangesTable+` (key)
			SELECT id FROM notifier.app_keys WHERE app_id = $1`, a.ID)
		return err
	}))
}

// Apps implements notifier.AppStore.
func (s *Store) Apps(ctx context.Context) ([]notifier.App, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, name, admin, created_at, allowed_categories, allowed_channels, requests_per_second, burst,
			contacts_access
		FROM notifier.apps ORDER BY name`)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	apps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.App, error) {
		var a notifier.App
		var chs []string
		var contacts string
		err := r.Scan(&a.ID, &a.Name, &a.Admin, &a.CreatedAt, &a.AllowedCategories, &chs, &a.RatePerSecond, &a.Burst,
			&contacts)
		for _, ch := range chs {
			a.AllowedChannels = append(a.AllowedChannels, delivery.Channel(ch))
		}
		a.Contacts, _ = appkey.ParseContactsAccess(contacts) // the column's CHECK holds it to the names
		return a, err
	})
	return apps, pgdb.Err(err)
}

// AddKey implements notifier.AppStore. Locking the app row makes the active-key limit hold
// against concurrent issues.
func (s *Store) AddKey(ctx context.Context, appID uuid.UUID, keyID string, secretHash []byte, maxActive int) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var active int
		err := tx.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM notifier.app_keys WHERE app_id = a.id AND revoked_at IS NULL)
			FROM notifier.apps a WHERE a.id = $1 FOR UPDATE`, appID).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "app not found")
		}
		if err != nil {
			return err
		}
		if maxActive > 0 && active >= maxActive {
			return errs.E(errs.FailedPrecondition,
				"the app has %d active keys already; revoke one first (rotation: issue, deploy, revoke the old)", active)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO notifier.app_keys (id, app_id, secret_hash) VALUES ($1, $2, $3)`,
			keyID, appID, secretHash); err != nil {
			return err
		}
		return pgdb.Touch(ctx, tx, appkey.ChangesTable, keyID)
	})
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return pgdb.Err(err)
}

// RevokeKey implements notifier.AppStore.
func (s *Store) RevokeKey(ctx context.Context, keyID string, at time.Time) (notifier.KeyInfo, error) {
	var k notifier.KeyInfo
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			UPDATE notifier.app_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
			RETURNING id, app_id, created_at, revoked_at`, keyID, at).Scan(&k.ID, &k.AppID, &k.CreatedAt, &k.RevokedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "key not found")
		}
		if err != nil {
			return err
		}
		return pgdb.Touch(ctx, tx, appkey.ChangesTable, keyID)
	})
	var e *errs.Error
	if errors.As(err, &e) {
		return k, err
	}
	return k, pgdb.Err(err)
}

// Keys implements notifier.AppStore.
func (s *Store) Keys(ctx context.Context, appID uuid.UUID) ([]notifier.KeyInfo, error) {
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1 FROM notifier.apps WHERE id = $1`, appID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "app not found")
	} else if err != nil {
		return nil, pgdb.Err(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, app_id, created_at, revoked_at FROM notifier.app_keys
		WHERE app_id = $1 ORDER BY created_at DESC, id`, appID)
	if err != nil {
		return nil, pgdb.Err(err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.KeyInfo, error) {
		var k notifier.KeyInfo
		err := r.Scan(&k.ID, &k.AppID, &k.CreatedAt, &k.RevokedAt)
		return k, err
	})
	return keys, pgdb.Err(err)
}

// Grant is the app that EnsureKey installs a key for, and the least that app may do.
type Grant struct {
	App      string
	Admin    bool
	Contacts appkey.ContactsAccess
}

// EnsureKey makes sure an app named g.App exists, that it may do at least what g grants (an
// app's rights are raised, never lowered), and that the key belongs to it. Deployments use it
// to install keys they generated themselves, at every start: the dev stack's, a bootstrap
// admin key from a secret, the notifier's own key for the contacts service.
//
// A revoked key stays revoked: the notifier would otherwise bring a leaked bootstrap key back
// at its next restart, on any replica, for as long as the deployment still configures it. A new
// secret under the key's id is a new key, and is not revoked. A key that belongs to another
// app is left as it is, with that app's rights, and EnsureKey returns a Conflict error: moving
// it would hand whoever holds it the rights of g.App.
func (s *Store) EnsureKey(ctx context.Context, g Grant, keyID string, secretHash []byte) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var owner string
		err := tx.QueryRow(ctx, `
			SELECT a.name FROM notifier.app_keys k JOIN notifier.apps a ON a.id = k.app_id WHERE k.id = $1`,
			keyID).Scan(&owner)
		switch {
		case err == nil && owner != g.App:
			return errs.E(errs.Conflict, "key %s belongs to app %q, not %q: left as it is", keyID, owner, g.App)
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		var appID uuid.UUID
		if err := tx.QueryRow(ctx, `
			INSERT INTO notifier.apps (id, name, admin, contacts_access) VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET admin = notifier.apps.admin OR excluded.admin,
				contacts_access = CASE
					WHEN excluded.contacts_access = 'write' OR notifier.apps.contacts_access = 'none'
					THEN excluded.contacts_access ELSE notifier.apps.contacts_access END
			RETURNING id`,
			uuid.Must(uuid.NewV7()), g.App, g.Admin, g.Contacts.String()).Scan(&appID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			INSERT INTO notifier.app_keys (id, app_id, secret_hash) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET secret_hash = excluded.secret_hash,
				revoked_at = CASE WHEN notifier.app_keys.secret_hash = excluded.secret_hash
					THEN notifier.app_keys.revoked_at END
			WHERE notifier.app_keys.app_id = excluded.app_id`, keyID, appID, secretHash)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 { // another app took the id since the SELECT
			return errs.E(errs.Conflict, "key %s belongs to another app than %q: left as it is", keyID, g.App)
		}
		// The app's rights may have grown: every key of it, not only this one.
		_, err = tx.Exec(ctx, `INSERT INTO `+appkey.ChangesTable+` (key)
			SELECT id FROM notifier.app_keys WHERE app_id = $1`, appID)
		return err
	})
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	if err != nil {
		return fmt.Errorf("ensure key for app %s: %w", g.App, err)
	}
	return nil
}
