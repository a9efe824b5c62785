package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
)

// storedTemplate is the JSON in notifier.templates.parts:
//
//	{"default": {"push_body": "...", ...}, "locales": {"pt-BR": {"push_body": "...", ...}}}
//
// Parts are named as the API names them, and empty parts are left out.
type storedTemplate struct {
	Default storedParts            `json:"default"`
	Locales map[string]storedParts `json:"locales,omitempty"`
}

type storedParts struct {
	PushTitle    string `json:"push_title,omitempty"`
	PushBody     string `json:"push_body,omitempty"`
	SMSBody      string `json:"sms_body,omitempty"`
	EmailSubject string `json:"email_subject,omitempty"`
	EmailHTML    string `json:"email_html,omitempty"`
	EmailText    string `json:"email_text,omitempty"`
}

// CreateTemplate implements notifier.TemplateStore. The owner of a name is the app of its version 1,
// which never changes once written: a new name is inserted as version 1 explicitly, so that two
// apps creating it at once cannot both pass the check (the loser retries and meets the owner).
func (s *Store) CreateTemplate(ctx context.Context, t *notifier.Template, may func(owner uuid.UUID) error) (*notifier.Template, error) {
	st := storedTemplate{Default: storedParts(t.Parts)}
	if len(t.Locales) > 0 {
		st.Locales = make(map[string]storedParts, len(t.Locales))
		for _, tr := range t.Locales {
			st.Locales[tr.Locale] = storedParts(tr.Parts)
		}
	}
	parts, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode template parts: %w", err)
	}
	// Two concurrent creates of the same name race for the same version; the loser retries.
	app := uuid.NullUUID{UUID: t.AppID, Valid: t.AppID != uuid.Nil}
	for range 5 {
		out := *t
		var owner uuid.NullUUID
		err = s.pool.QueryRow(ctx, `SELECT app_id FROM notifier.templates WHERE name = $1 AND version = 1`,
			t.Name).Scan(&owner)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, pgdb.Err(err)
		}
		if exists && may != nil {
			if err := may(owner.UUID); err != nil {
				return nil, err
			}
		}
		// The change feed learns of the new version in the same statement (one transaction),
		// so that every notifier's cache of latest versions drops the old one.
		err = s.pool.QueryRow(ctx, `
			WITH v AS (
				INSERT INTO notifier.templates (name, version, description, parts, app_id)
				SELECT $1, CASE WHEN $5 THEN coalesce(max(version), 0) + 1 ELSE 1 END, $2, $3, $4
				FROM notifier.templates WHERE name = $1
				RETURNING version, created_at
			), feed AS (
				INSERT INTO `+appkey.ChangesTable+` (key) SELECT $6 FROM v
			)
			SELECT version, created_at FROM v`, t.Name, t.Description, parts, app, exists,
			notifier.TemplateChangeKey(t.Name)).Scan(&out.Version, &out.CreatedAt)
		if _, dup := pgdb.IsUniqueViolation(err); dup {
			continue
		}
		if err != nil {
			return nil, pgdb.Err(err)
		}
		return &out, nil
	}
	return nil, errs.Wrap(errs.Unavailable, err, "too many concurrent versions of this template; try again")
}

// Template implements notifier.TemplateStore. Translations come back sorted by tag.
func (s *Store) Template(ctx context.Context, name string, version int) (*notifier.Template, error) {
	t := notifier.Template{Name: name}
	var parts []byte
	err := s.pool.QueryRow(ctx, `
		SELECT version, description, parts, created_at FROM notifier.templates
		WHERE name = $1 AND ($2 = 0 OR version = $2) ORDER BY version DESC LIMIT 1`, name, version).
		Scan(&t.Version, &t.Description, &parts, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		if version > 0 {
			return nil, errs.E(errs.NotFound, "template %q version %d not found", name, version)
		}
		return nil, errs.E(errs.NotFound, "template %q not found", name)
	}
	if err != nil {
		return nil, pgdb.Err(err)
	}
	var st storedTemplate
	if err := json.Unmarshal(parts, &st); err != nil {
		return nil, fmt.Errorf("decode template %s v%d: %w", name, t.Version, err)
	}
	t.Parts = templates.Parts(st.Default)
	for tag, p := range st.Locales {
		t.Locales = append(t.Locales, templates.Translation{Locale: tag, Parts: templates.Parts(p)})
	}
	slices.SortFunc(t.Locales, func(a, b templates.Translation) int { return strings.Compare(a.Locale, b.Locale) })
	return &t, nil
}
