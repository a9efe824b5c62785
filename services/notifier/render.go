package notifier

import (
	"context"
	"fmt"
	"slices"

	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// render produces each channel's content, from the template or the inline content. A template
// is rendered in the request's locale when it names one, else in the recipient's locale (which
// may be ""), falling back as templates.Set.Resolve does, and the output is held to the limits
// of the channels that may be used: the requested ones, or every one when none is.
func (s *Service) render(ctx context.Context, req *SendRequest, locale string, n *Notification) (map[delivery.Channel]delivery.Content, error) {
	var r templates.Rendered
	if c := req.Content; c != nil {
		subject := c.Subject
		if subject == "" {
			subject = c.Title
		}
		r = templates.Rendered{PushTitle: c.Title, PushBody: c.Body, SMSBody: c.Body,
			EmailSubject: subject, EmailHTML: c.HTML, EmailText: c.Body}
	} else {
		ref := *req.Template
		if ref.Locale != "" {
			tag, err := templates.CanonicalLocale(ref.Locale)
			if err != nil {
				return nil, errs.Field("template.locale", err.Error())
			}
			ref.Locale, locale = tag, tag
		}
		t, set, err := s.template(ctx, ref.Name, ref.Version)
		if err != nil {
			return nil, err
		}
		n.Template = &TemplateRef{Name: t.Name, Version: t.Version, Locale: ref.Locale}
		_, r, err = set.Render(locale, req.Data)
		if err == nil {
			err = templates.Check(forChannels(r, req.Channels), req.Data, s.limits())
		}
		if err != nil {
			return nil, templateError("template", err)
		}
	}

	out := map[delivery.Channel]delivery.Content{}
	if r.PushBody != "" || r.PushTitle != "" {
		push := delivery.Content{Title: r.PushTitle, Body: r.PushBody, Data: req.Data}
		out[delivery.IOS], out[delivery.Android] = push, push
	}
	if r.SMSBody != "" {
		out[delivery.SMS] = delivery.Content{Body: r.SMSBody}
	}
	if r.EmailSubject != "" && (r.EmailHTML != "" || r.EmailText != "") {
		out[delivery.Email] = delivery.Content{Subject: r.EmailSubject, HTML: r.EmailHTML, Text: r.EmailText}
	}
	if len(req.Channels) > 0 {
		for _, ch := range req.Channels {
			if _, ok := out[ch]; !ok {
				field := "content"
				if req.Template != nil {
					field = "template"
				}
				return nil, errs.Field(field, fmt.Sprintf("has nothing to send on channel %s", ch))
			}
		}
	}
	return out, nil
}

// forChannels keeps the parts that the channels use; no channels means every channel. Limits
// are checked on what it keeps, so that, say, data too large for a push payload does not fail
// a Send for email only.
func forChannels(r templates.Rendered, channels []delivery.Channel) templates.Rendered {
	if len(channels) == 0 {
		return r
	}
	if !slices.Contains(channels, delivery.IOS) && !slices.Contains(channels, delivery.Android) {
		r.PushTitle, r.PushBody = "", ""
	}
	if !slices.Contains(channels, delivery.SMS) {
		r.SMSBody = ""
	}
	if !slices.Contains(channels, delivery.Email) {
		r.EmailSubject, r.EmailHTML, r.EmailText = "", "", ""
	}
	return r
}

// template returns a stored template version, parsed. Versions are immutable, so each is read
// from the store once. The latest version of a name is cached too, kept exact by the notifier's
// change feed when Service.Feed is set: a version created before the Send began is used.
func (s *Service) template(ctx context.Context, name string, version int) (*Template, *templates.Set, error) {
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
func (s *Service) latestVersions() *coherent.Cache[int] {
	s.latestOnce.Do(func() {
		if s.Feed != nil {
			s.latest = coherent.NewCache[int](s.Feed, 10_000)
		}
	})
	return s.latest
}

// templateError turns a template render or limit error into a field violation: "data" when the
// data is at fault, else prefix + "." + the part, with the translation named in the reason.
func templateError(prefix string, err error) error {
	te, ok := err.(*templates.Error)
	if !ok {
		return errs.Field(prefix, err.Error())
	}
	if te.Part == templates.PartData {
		return errs.Field("data", te.Err.Error())
	}
	reason := te.Err.Error()
	if te.Locale != "" {
		reason += fmt.Sprintf(" (in the %s translation)", te.Locale)
	}
	return errs.Field(prefix+"."+te.Part, reason)
}
