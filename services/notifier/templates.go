package notifier

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// Template is one stored, immutable template version: default parts and translations.
type Template struct {
	Name        string
	Version     int
	Description string
	// Parts are the default parts, used for a recipient whose locale has no translation.
	Parts templates.Parts
	// Locales are the translations; once stored, with canonical tags, sorted by tag. Each has
	// exactly the parts the default has (see templates.Set).
	Locales   []templates.Translation
	CreatedAt time.Time
	// AppID is the app that created the version (set on create; not read back).
	AppID uuid.UUID
}

// Limits on templates as the API accepts them.
const (
	maxTemplateDescription = 1024
	// MaxTranslations is the most locales a template version may have.
	MaxTranslations = 64
)

var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)

// Templates keeps template versions: CreateTemplate validates and stores them, GetTemplate and
// RenderTemplate read them. Sends read them through it too (Sender.Templates), so that the cache
// of parsed versions and the limits on rendered content are one for previews and Sends alike.
type Templates struct {
	Store TemplateStore
	// Limits bound rendered content (the zero value takes templates' defaults).
	Limits templates.Limits
	// Feed polls the notifier's change feed (appkey.ChangesTable) for the caches that it keeps
	// exact: templates' latest versions here, app keys in the authenticator. nil: the latest
	// version of a template is read from the store every time.
	Feed *coherent.Poller

	versions   sync.Map // templateKey -> *parsedTemplate; versions are immutable
	latest     *coherent.Cache[int]
	latestOnce sync.Once
}

type templateKey struct {
	name    string
	version int
}

// CreateTemplate validates t and stores it as the next version of its name, with its locale tags
// in canonical form ("pt-br" becomes "pt-BR") and sorted. Errors: Invalid, with the field at
// fault: a bad name or description, default parts that serve no channel, a part that does not
// parse, a bad or repeated locale, a translation that lacks a part the default has (or has one
// it lacks), text that breaks a channel's limit whatever the data (see templates.Set.CheckStatic);
// PermissionDenied when the name belongs to another app (see mayAddVersion).
func (s *Templates) CreateTemplate(ctx context.Context, caller appkey.Caller, t *Template) (*Template, error) {
	var v errs.Violations
	if v.Bytes("template.name", t.Name, maxTemplateName) && !templateName.MatchString(t.Name) {
		v.Add("template.name", "must be 1-128 lower-case letters, digits, '_', '-' or '.'")
	}
	checkLen(&v, "template.description", t.Description, maxTemplateDescription)
	v.Count("template.locales", len(t.Locales), MaxTranslations)
	if err := v.Err(); err != nil {
		return nil, err
	}
	p := t.Parts
	if !p.PushReady() && !p.SMSReady() && !p.EmailReady() {
		if strings.TrimSpace(p.EmailHTML+p.EmailText) != "" {
			return nil, errs.Field("template.parts.email_subject", "is required with an email body")
		}
		return nil, errs.Field("template.parts", "needs a push body, an SMS body, or an email subject and body")
	}
	// Tags are checked here, not left to ParseSet, so that a violation names the translation by
	// its index even when two are spelled alike.
	out := *t
	out.Locales = make([]templates.Translation, len(t.Locales))
	seen := make(map[string]int, len(t.Locales))
	for i, tr := range t.Locales {
		field := fmt.Sprintf("template.locales[%d].locale", i)
		tag, err := templates.CanonicalLocale(tr.Locale)
		if err != nil {
			return nil, errs.Field(field, err.Error())
		}
		if j, dup := seen[tag]; dup {
			return nil, errs.Field(field, fmt.Sprintf("repeats locale %s of template.locales[%d]", tag, j))
		}
		seen[tag] = i
		out.Locales[i] = templates.Translation{Locale: tag, Parts: tr.Parts}
	}
	set, err := templates.ParseSet(out.Parts, out.Locales)
	if err == nil {
		err = set.CheckStatic(s.Limits)
	}
	if err == nil { // short links: shortlinks.go
		err = checkTemplateLinks(out.Parts)
		for i := 0; err == nil && i < len(out.Locales); i++ {
			if err = checkTemplateLinks(out.Locales[i].Parts); err != nil {
				err.(*templates.Error).Locale = out.Locales[i].Locale
			}
		}
	}
	if err != nil {
		return nil, createError(err, seen)
	}
	slices.SortFunc(out.Locales, func(a, b templates.Translation) int { return cmp.Compare(a.Locale, b.Locale) })
	out.AppID = caller.AppID
	return s.Store.CreateTemplate(ctx, &out, func(owner uuid.UUID) error { return mayAddVersion(caller, t.Name, owner) })
}

// mayAddVersion is the rule for adding a version to an existing template: a template name
// belongs to the app that created its first version, and only that app or an admin app may add
// versions. Otherwise any app could change what another app sends under that name (an
// account-security message that ignores opt-outs, say), since a Send without a version uses the
// latest. Templates stay readable by every app, so the refusal says that the name is taken.
func mayAddVersion(caller appkey.Caller, name string, owner uuid.UUID) error {
	if caller.Admin || (owner != uuid.Nil && owner == caller.AppID) {
		return nil
	}
	return errs.E(errs.PermissionDenied, "template %q belongs to another app: only that app or an admin app may add versions", name)
}

// createError turns a ParseSet or CheckStatic error into a field violation on the request:
// "template.parts.<part>" or "template.locales[i].parts.<part>".
func createError(err error, index map[string]int) error {
	te, ok := err.(*templates.Error)
	if !ok {
		return errs.Field("template", err.Error())
	}
	field := "template.parts." + te.Part
	if te.Locale != "" {
		field = fmt.Sprintf("template.locales[%d].parts.%s", index[te.Locale], te.Part)
	}
	if te.Part == templates.PartLocale && te.Locale != "" {
		field = fmt.Sprintf("template.locales[%d].locale", index[te.Locale])
	}
	return errs.Field(field, te.Err.Error())
}

// GetTemplate returns a template version (0: the latest). Errors: Invalid (no name), NotFound.
func (s *Templates) GetTemplate(ctx context.Context, name string, version int) (*Template, error) {
	if err := checkTemplateName(name, version); err != nil {
		return nil, err
	}
	return s.Store.Template(ctx, name, version)
}

func checkTemplateName(name string, version int) error {
	if name == "" {
		return errs.Field("name", "is required")
	}
	var v errs.Violations
	if !v.Bytes("name", name, maxTemplateName) {
		return v.Err()
	}
	if !templateName.MatchString(name) {
		// No template can have this name; answering here keeps NUL and invalid UTF-8 away
		// from the store.
		if version > 0 {
			return errs.E(errs.NotFound, "template %q version %d not found", name, version)
		}
		return errs.E(errs.NotFound, "template %q not found", name)
	}
	return nil
}

// Preview is a template version rendered with sample data, as RenderTemplate returns it.
type Preview struct {
	Version int
	// Locale is the tag of the translation used, "" for the default parts.
	Locale  string
	Content templates.Rendered
	// SMSEncoding and SMSSegments tell how the SMS body would be sent (templates.SMSSegments);
	// "" and 0 when the template has no SMS body.
	SMSEncoding string
	SMSSegments int
}

// RenderTemplate renders a template version (0: the latest) with data for a recipient in locale
// ("" for the default parts), and applies the limits every Send applies, for every channel the
// template serves. Errors: NotFound (template or version), Invalid: "locale" for a tag that is
// not BCP 47, "template.<part>" for a key the data lacks or a part over its limit, "data" for
// data that alone makes the push payload too large.
func (s *Templates) RenderTemplate(ctx context.Context, name string, version int, locale string, data map[string]any) (*Preview, error) {
	if locale != "" {
		var v errs.Violations
		if !v.Bytes("locale", locale, templates.MaxLocaleLen) {
			return nil, v.Err()
		}
		if _, err := templates.CanonicalLocale(locale); err != nil {
			return nil, errs.Field("locale", err.Error())
		}
	}
	if err := checkTemplateName(name, version); err != nil {
		return nil, err
	}
	t, set, err := s.template(ctx, name, version)
	if err != nil {
		return nil, err
	}
	used, r, err := set.Render(locale, data)
	if err == nil {
		err = templates.Check(r, data, s.Limits)
	}
	if err != nil {
		return nil, templateError("template", err)
	}
	r = unmarkRendered(r) // the notrack marks of short links (shortlinks.go)
	p := &Preview{Version: t.Version, Locale: used, Content: r}
	if r.SMSBody != "" {
		p.SMSEncoding, p.SMSSegments = templates.SMSSegments(r.SMSBody)
	}
	return p, nil
}

// template returns a stored template version, parsed. Versions are immutable, so each is read
// from the store once. The latest version of a name is cached too, kept exact by the notifier's
// change feed when Feed is set: a version created before the Send began is used.
func (s *Templates) template(ctx context.Context, name string, version int) (*Template, *templates.Set, error) {
	var gen uint64
	latest := s.latestVersions()
	if version == 0 && latest != nil {
		var err error
		if gen, err = latest.SyncSince(ctx, coherent.Began(ctx)); err != nil {
			return nil, nil, errs.Wrap(errs.Unavailable, err, "cannot read templates now")
		}
		if v, ok := latest.Get(TemplateChangeKey(name)); ok {
			version = v
		}
	}
	if version > 0 {
		if v, ok := s.versions.Load(templateKey{name, version}); ok {
			v := v.(*parsedTemplate)
			return v.t, v.set, nil
		}
	}
	t, err := s.Store.Template(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	if version == 0 && latest != nil {
		latest.Put(gen, TemplateChangeKey(name), t.Version)
	}
	key := templateKey{t.Name, t.Version}
	if v, ok := s.versions.Load(key); ok {
		v := v.(*parsedTemplate)
		return v.t, v.set, nil
	}
	set, err := templates.ParseSet(t.Parts, t.Locales)
	if err != nil {
		// Stored templates were validated when created; this is a bug or a changed parser.
		return nil, nil, fmt.Errorf("parse stored template %s v%d: %w", t.Name, t.Version, err)
	}
	s.versions.Store(key, &parsedTemplate{t: t, set: set})
	return t, set, nil
}

// parsedTemplate is a stored template version and its parsed form.
type parsedTemplate struct {
	t   *Template
	set *templates.Set
}

// TemplateChangeKey is the key a new version of the named template adds to the notifier's
// change feed (appkey.ChangesTable), beside the app keys' own, which never start with
// "template:".
func TemplateChangeKey(name string) string { return "template:" + name }

// latestVersions returns the cache of templates' latest versions, or nil without a Feed.
func (s *Templates) latestVersions() *coherent.Cache[int] {
	s.latestOnce.Do(func() {
		if s.Feed != nil {
			s.latest = coherent.NewCache[int](s.Feed, 10_000)
		}
	})
	return s.latest
}
