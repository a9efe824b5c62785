package notifier

import (
	"context"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// GetNotification returns a notification the calling app sent, with its deliveries.
// Errors: NotFound (also for another app's notification).
func (s *Service) GetNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	return s.Store.Notification(ctx, caller.AppID, id)
}

var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)

// CreateTemplate validates t and stores it as the next version of its name.
// Errors: Invalid (bad name, a part that does not parse).
func (s *Service) CreateTemplate(ctx context.Context, t *Template) (*Template, error) {
	if !templateName.MatchString(t.Name) {
		return nil, errs.Field("template.name", "must be 1-128 lower-case letters, digits, '_', '-' or '.'")
	}
	if len(t.Description) > 1024 {
		return nil, errs.Field("template.description", "must be at most 1024 bytes")
	}
	p := t.Parts
	if !p.PushReady() && !p.SMSReady() && !p.EmailReady() {
		if strings.TrimSpace(p.EmailHTML+p.EmailText) != "" {
			return nil, errs.Field("template.parts.email_subject", "is required with an email body")
		}
		return nil, errs.Field("template.parts", "needs a push body, an SMS body, or an email subject and body")
	}
	if _, err := templates.Parse(p); err != nil {
		return nil, templateError("template.parts", err)
	}
	return s.Store.CreateTemplate(ctx, t)
}

// GetTemplate returns a template version (0: the latest). Errors: NotFound.
func (s *Service) GetTemplate(ctx context.Context, name string, version int) (*Template, error) {
	return s.Store.Template(ctx, name, version)
}

var appName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// CreateApp registers a calling app and issues its first key, returned once.
// Errors: PermissionDenied (caller is not an admin app), Invalid, Conflict (name taken).
func (s *Service) CreateApp(ctx context.Context, caller appkey.Caller, name string, admin bool) (*App, appkey.Key, error) {
	if !caller.Admin {
		return nil, appkey.Key{}, errs.E(errs.PermissionDenied, "only admin apps may create apps")
	}
	if !appName.MatchString(name) {
		return nil, appkey.Key{}, errs.Field("name", "must be 1-64 lower-case letters, digits or '-'")
	}
	a := &App{ID: mustV7(), Name: name, Admin: admin, CreatedAt: s.now()}
	if err := s.Store.CreateApp(ctx, a); err != nil {
		return nil, appkey.Key{}, err
	}
	key, err := s.issue(ctx, a.ID)
	return a, key, err
}

// IssueKey issues a new key for an app, returned once.
// Errors: PermissionDenied, NotFound.
func (s *Service) IssueKey(ctx context.Context, caller appkey.Caller, appID uuid.UUID) (appkey.Key, error) {
	if !caller.Admin {
		return appkey.Key{}, errs.E(errs.PermissionDenied, "only admin apps may issue keys")
	}
	return s.issue(ctx, appID)
}

func (s *Service) issue(ctx context.Context, appID uuid.UUID) (appkey.Key, error) {
	k := appkey.New()
	if err := s.Store.AddKey(ctx, appID, k.ID, k.Hash()); err != nil {
		return appkey.Key{}, err
	}
	return k, nil
}
