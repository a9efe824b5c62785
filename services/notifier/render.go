package notifier

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// render produces each channel's content, from the template or the inline content.
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
		t, tmpl, err := s.template(ctx, req.Template.Name, req.Template.Version)
		if err != nil {
			return nil, err
		}
		n.Template = &TemplateRef{Name: t.Name, Version: t.Version, Locale: req.Template.Locale}
		if r, err = tmpl.Render(req.Data); err != nil {
			return nil, templateError("template", err)
		}
	}
	_ = locale // locale-specific template parts arrive with the template policy work

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

func (s *Service) template(ctx context.Context, name string, version int) (*Template, *templates.Template, error) {
	t, err := s.Store.Template(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	key := templateKey{t.Name, t.Version}
	if p, ok := s.parsed.Load(key); ok {
		return t, p.(*templates.Template), nil
	}
	p, err := templates.Parse(t.Parts)
	if err != nil {
		// Stored templates were validated when created; this is a bug or a changed parser.
		return nil, nil, fmt.Errorf("parse stored template %s v%d: %w", t.Name, t.Version, err)
	}
	s.parsed.Store(key, p)
	return t, p, nil
}

// templateError turns a template parse or render error into a field violation under prefix.
func templateError(prefix string, err error) error {
	if te, ok := err.(*templates.Error); ok {
		return errs.Field(prefix+"."+te.Part, te.Err.Error())
	}
	return errs.Field(prefix, err.Error())
}
