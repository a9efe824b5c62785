package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
)

var (
	_ notifier.Notifications    = (*strictStore)(nil)
	_ notifier.TemplateStore    = (*strictStore)(nil)
	_ notifier.CategoryStore    = (*strictStore)(nil)
	_ notifier.AppStore         = (*strictStore)(nil)
	_ notifier.StatsStore       = (*strictStore)(nil)
	_ notifier.DeadLetterStore  = (*strictStore)(nil)
	_ notifier.UnpublishedStore = (*strictStore)(nil)
	_ notifier.Publisher        = (*strictStore)(nil)
	_ notifier.Directory        = (*strictStore)(nil)
)

// strictStore stands in for PostgreSQL, the queues and the contacts service behind the API, in
// memory. It answers the calls the API makes as they do, and records every value reaching it that
// PostgreSQL would refuse (invalid UTF-8, NUL, NaN in jsonb) or that breaks a limit the API
// promises: validation must have stopped those with INVALID_ARGUMENT.
type strictStore struct {
	mu         sync.Mutex
	problems   []string
	templates  map[string][]*notifier.Template
	categories []preference.Category
	apps       map[uuid.UUID]*notifier.App
}

// The fixtures every strictStore starts with.
var (
	knownApp      = uuid.MustParse("0190b6f4-0000-7000-8000-0000000000a1")
	knownDelivery = uuid.MustParse("0190b6f4-0000-7000-8000-0000000000d1")
	adminCaller   = appkey.Caller{AppID: knownApp, AppName: "ops", Admin: true}
	welcome       = &notifier.Template{
		Name: "welcome", Version: 1, AppID: knownApp,
		Parts: templates.Parts{
			PushTitle: "Hi {{.name}}", PushBody: "Welcome to {{.app}}", SMSBody: "Welcome, {{.name}}",
			EmailSubject: "Welcome, {{.name}}", EmailHTML: "<p>Hello {{.name}}</p>", EmailText: "Hello {{.name}}",
		},
		Locales: []templates.Translation{{Locale: "pt-BR", Parts: templates.Parts{
			PushTitle: "Oi {{.name}}", PushBody: "Boas-vindas ao {{.app}}", SMSBody: "Oi, {{.name}}",
			EmailSubject: "Oi, {{.name}}", EmailHTML: "<p>Oi {{.name}}</p>", EmailText: "Oi {{.name}}",
		}}},
	}
	knownUser = notifier.User{ID: "u1", Email: "u1@example.com", Phone: "+14155550123", Locale: "pt-BR",
		Timezone: "Europe/Lisbon", IOSTokens: []string{strings.Repeat("ab", 32)}, AndroidTokens: []string{"fcm:token-1"}}
)

func newStrictStore() *strictStore {
	return &strictStore{
		templates: map[string][]*notifier.Template{"welcome": {welcome}},
		categories: []preference.Category{
			{Name: "news", DefaultOptIn: true},
			{Name: "account.security", Critical: true, DefaultOptIn: true},
			{Name: "marketing", AllowedChannels: []delivery.Channel{delivery.Email},
				Caps: []preference.Cap{{Limit: 2, Window: time.Hour}}},
		},
		apps: map[uuid.UUID]*notifier.App{knownApp: {ID: knownApp, Name: "ops", Admin: true}},
	}
}

// newServer returns a Server on the notifier's parts, whose every dependency is store.
func newServer(store *strictStore) *Server {
	log := slog.New(slog.DiscardHandler)
	handoff := &notifier.Handoff{Publisher: store, Deliveries: store, Log: log}
	templates := &notifier.Templates{Store: store}
	categories := &notifier.Categories{Store: store}
	return &Server{
		Sender: &notifier.Sender{Store: store, Templates: templates, Categories: categories, Handoff: handoff,
			Directory: store, Log: log, RepublishAfter: time.Minute},
		Templates:  templates,
		Categories: categories,
		Apps:       &notifier.Apps{Store: store, Log: log},
		Operations: &notifier.Operations{Deliveries: store, Store: store, Handoff: handoff, Log: log, RepublishAfter: time.Minute},
	}
}

func (s *strictStore) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// text records a problem when PostgreSQL cannot store v, or v is over max bytes.
func (s *strictStore) text(what, v string, max int) {
	switch {
	case !utf8.ValidString(v):
		s.problem("%s is not UTF-8: %q", what, v)
	case strings.IndexByte(v, 0) >= 0:
		s.problem("%s holds a NUL: %q", what, v)
	case len(v) > max:
		s.problem("%s is %d bytes, over %d", what, len(v), max)
	}
}

// jsonb records a problem when data does not encode to JSON that jsonb accepts.
func (s *strictStore) jsonb(what string, data map[string]any) {
	if data == nil {
		return
	}
	b, err := json.Marshal(data)
	switch {
	case err != nil:
		s.problem("%s does not encode: %v", what, err)
	case strings.Contains(string(b), `\u0000`):
		s.problem("%s holds a NUL", what)
	}
}

// Problems returns what reached the store that must not have.
func (s *strictStore) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

func (s *strictStore) parts(what string, p templates.Parts) {
	for name, v := range map[string]string{"push_title": p.PushTitle, "push_body": p.PushBody, "sms_body": p.SMSBody,
		"email_subject": p.EmailSubject, "email_html": p.EmailHTML, "email_text": p.EmailText} {
		s.text(what+"."+name, v, templates.MaxSourceSize)
	}
}

func (s *strictStore) CreateNotifications(_ context.Context, ns []*notifier.Notification) ([]bool, []error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	created := make([]bool, len(ns))
	for i, n := range ns {
		s.notification(n)
		created[i] = true
	}
	return created, nil, nil
}

// notification records a problem for each field of n that PostgreSQL cannot store.
func (s *strictStore) notification(n *notifier.Notification) {
	s.text("idempotency key", n.IdempotencyKey, 256)
	s.text("category", n.Category, preference.MaxCategoryName)
	s.text("user id", n.UserID, 128)
	if t := n.Template; t != nil {
		s.text("template name", t.Name, 128)
		s.text("template locale", t.Locale, templates.MaxLocaleLen)
	}
	for _, d := range n.Deliveries {
		s.text("address", d.To, 4096)
		s.text("reason", d.Reason, 64)
		c := d.Content
		for what, v := range map[string]string{"title": c.Title, "body": c.Body, "subject": c.Subject, "html": c.HTML, "text": c.Text} {
			s.text("content "+what, v, templates.MaxOutputSize)
		}
		s.jsonb("content data", c.Data)
		s.limits(d)
	}
}

// limits records a problem when a delivery's content breaks its channel's limit (push payload,
// SMS segments, subject), whether it came from a template or inline.
func (s *strictStore) limits(d *notifier.Delivery) {
	c := d.Content
	var err error
	switch d.Channel {
	case delivery.IOS, delivery.Android:
		if c.Title != "" || c.Body != "" {
			err = templates.CheckPush(c.Title, c.Body, c.Data)
		}
	case delivery.SMS:
		err = templates.CheckSMS(c.Body, templates.DefaultSMSSegments)
	case delivery.Email:
		err = templates.Check(templates.Rendered{EmailSubject: c.Subject, EmailHTML: c.HTML, EmailText: c.Text}, nil, templates.Limits{})
	}
	if err != nil {
		s.problem("%s content over a limit: %v", d.Channel, err)
	}
}

func (s *strictStore) NotificationByKey(context.Context, uuid.UUID, string) (*notifier.Notification, error) {
	return nil, errs.E(errs.NotFound, "notification not found")
}

// ReleaseKey is not reached: NotificationByKey finds no key.
func (s *strictStore) ReleaseKey(context.Context, uuid.UUID, string, time.Time) error { return nil }

func (s *strictStore) Notification(context.Context, uuid.UUID, uuid.UUID) (*notifier.Notification, error) {
	return nil, errs.E(errs.NotFound, "notification not found")
}

func (s *strictStore) Cancel(context.Context, uuid.UUID, uuid.UUID, time.Time) (*notifier.Notification, error) {
	return nil, errs.E(errs.NotFound, "notification not found")
}

func (s *strictStore) CreateTemplate(_ context.Context, t *notifier.Template, may func(uuid.UUID) error) (*notifier.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text("template name", t.Name, 128)
	s.text("template description", t.Description, 1024)
	s.parts("template parts", t.Parts)
	for _, l := range t.Locales {
		s.text("template locale", l.Locale, templates.MaxLocaleLen)
		s.parts("template locale parts", l.Parts)
	}
	if prev := s.templates[t.Name]; len(prev) > 0 && may != nil {
		if err := may(prev[0].AppID); err != nil {
			return nil, err
		}
	}
	out := *t
	out.Version = len(s.templates[t.Name]) + 1
	out.CreatedAt = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.templates[t.Name] = append(s.templates[t.Name], &out)
	return &out, nil
}

func (s *strictStore) Template(_ context.Context, name string, version int) (*notifier.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text("template name", name, 128)
	vs := s.templates[name]
	switch {
	case len(vs) == 0 || version > len(vs):
		return nil, errs.E(errs.NotFound, "template not found")
	case version == 0:
		return vs[len(vs)-1], nil
	}
	return vs[version-1], nil
}

func (s *strictStore) Categories(context.Context) ([]preference.Category, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]preference.Category(nil), s.categories...), nil
}

func (s *strictStore) PutCategory(_ context.Context, c preference.Category) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text("category name", c.Name, preference.MaxCategoryName)
	s.text("category description", c.Description, 1024)
	if len(c.Caps) > preference.MaxCaps || len(c.AllowedChannels) > len(delivery.Channels) {
		s.problem("category with %d caps and %d channels", len(c.Caps), len(c.AllowedChannels))
	}
	for _, cp := range c.Caps {
		if cp.Limit <= 0 || cp.Window < time.Second {
			s.problem("cap %+v", cp)
		}
	}
	for i, x := range s.categories {
		if x.Name == c.Name {
			s.categories[i] = c
			return nil
		}
	}
	s.categories = append(s.categories, c)
	return nil
}

func (s *strictStore) app(what string, a *notifier.App) {
	s.text(what+" name", a.Name, 64)
	if len(a.AllowedCategories) > preference.MaxCategories || len(a.AllowedChannels) > len(delivery.Channels) {
		s.problem("%s with %d categories and %d channels", what, len(a.AllowedCategories), len(a.AllowedChannels))
	}
	for _, c := range a.AllowedCategories {
		s.text(what+" category", c, preference.MaxCategoryName)
	}
	if math.IsNaN(a.RatePerSecond) || math.IsInf(a.RatePerSecond, 0) || a.RatePerSecond < 0 || a.Burst < 0 {
		s.problem("%s rate %v burst %d", what, a.RatePerSecond, a.Burst)
	}
	if a.Contacts > appkey.ContactsWrite { // the column's CHECK refuses it
		s.problem("%s contacts access %s", what, a.Contacts)
	}
}

func (s *strictStore) CreateApp(_ context.Context, a *notifier.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.app("app", a)
	for _, x := range s.apps {
		if x.Name == a.Name {
			return errs.E(errs.Conflict, "app name taken")
		}
	}
	c := *a
	s.apps[a.ID] = &c
	return nil
}

func (s *strictStore) UpdateApp(_ context.Context, a *notifier.App) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.app("updated app", a)
	prev, ok := s.apps[a.ID]
	if !ok {
		return errs.E(errs.NotFound, "app not found")
	}
	prev.AllowedCategories, prev.AllowedChannels = a.AllowedCategories, a.AllowedChannels
	prev.RatePerSecond, prev.Burst, prev.Contacts = a.RatePerSecond, a.Burst, a.Contacts
	return nil
}

func (s *strictStore) Apps(context.Context) ([]notifier.App, error) { return nil, nil }

func (s *strictStore) AddKey(_ context.Context, appID uuid.UUID, keyID string, _ []byte, _ int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[appID]; !ok {
		return errs.E(errs.NotFound, "app not found")
	}
	return nil
}

func (s *strictStore) RevokeKey(_ context.Context, keyID string, _ time.Time) (notifier.KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text("key id", keyID, 64)
	return notifier.KeyInfo{}, errs.E(errs.NotFound, "key not found")
}

func (s *strictStore) Keys(_ context.Context, appID uuid.UUID) ([]notifier.KeyInfo, error) {
	if appID != knownApp {
		return nil, errs.E(errs.NotFound, "app not found")
	}
	return nil, nil
}

func (s *strictStore) filter(f notifier.DeadLetterFilter) {
	s.text("dead letter reason", f.Reason, 128)
	if len(f.IDs) > notifier.MaxRedrive {
		s.problem("%d dead letter ids", len(f.IDs))
	}
}

func (s *strictStore) DeadLetters(_ context.Context, f notifier.DeadLetterFilter, _ uuid.UUID, limit int) ([]notifier.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filter(f)
	if limit <= 0 || limit > 1001 {
		s.problem("dead letter page of %d", limit)
	}
	return nil, nil
}

func (s *strictStore) Redrive(_ context.Context, f notifier.DeadLetterFilter, _ time.Time, _ time.Duration) ([]delivery.Due, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filter(f)
	return nil, nil
}

func (s *strictStore) DeliveryStats(context.Context, time.Time) ([]notifier.DeliveryStats, error) {
	return nil, nil
}

func (s *strictStore) DeliveryApp(_ context.Context, id uuid.UUID) (uuid.UUID, error) {
	if id != knownDelivery {
		return uuid.Nil, errs.E(errs.NotFound, "delivery not found")
	}
	return knownApp, nil
}

func (s *strictStore) RecordProviderEvents(_ context.Context, evs []notifier.ProviderEvent) ([]notifier.ProviderEvent, error) {
	return evs, nil
}

// Publish implements notifier.Publisher.
func (s *strictStore) Publish(context.Context, map[delivery.Channel][]uuid.UUID) error { return nil }

// Unpublished implements notifier.UnpublishedStore.
func (s *strictStore) Unpublished(context.Context, []uuid.UUID, time.Time) error { return nil }

// Resolve implements notifier.Directory: u1 is the only user.
func (s *strictStore) Resolve(_ context.Context, ids []string, targets []notifier.Target) (*notifier.Recipients, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &notifier.Recipients{Users: map[string]notifier.User{}}
	for _, id := range ids {
		s.text("user id", id, 128)
		if id == knownUser.ID {
			out.Users[id] = knownUser
		}
	}
	for _, t := range targets {
		s.text("target address", t.Address, 4096)
	}
	return out, nil
}
