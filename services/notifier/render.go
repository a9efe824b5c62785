package notifier

import (
	"context"
	"fmt"
	"slices"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
)

// render produces each channel's content, from the template or the inline content. A template
// is rendered in the request's locale when it names one, else in the recipient's locale (which
// may be ""), falling back as templates.Set.Resolve does, and the output is held to the limits
// of the channels that may be used: the requested ones, or every one when none is.
func (s *Sender) render(ctx context.Context, req *SendRequest, locale string, n *Notification) (map[delivery.Channel]delivery.Content, error) {
	var r templates.Rendered
	if c := req.Content; c != nil {
		r = inlineRendered(c) // validate held it to the limits (checkInline)
	} else {
		ref := *req.Template
		if ref.Locale != "" {
			tag, err := templates.CanonicalLocale(ref.Locale)
			if err != nil {
				return nil, errs.Field("template.locale", err.Error())
			}
			ref.Locale, locale = tag, tag
		}
		t, set, err := s.Templates.template(ctx, ref.Name, ref.Version)
		if err != nil {
			return nil, err
		}
		n.Template = &TemplateRef{Name: t.Name, Version: t.Version, Locale: ref.Locale}
		_, r, err = set.Render(locale, req.Data)
		if err == nil {
			err = templates.Check(forChannels(r, req.Channels), req.Data, s.Templates.Limits)
		}
		if err != nil {
			return nil, templateError("template", err)
		}
	}

	out := contents(r, req.Data)
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

// contents is each channel's content in a rendering, data going to push and the inbox; a
// channel the rendering has nothing for is left out.
func contents(r templates.Rendered, data map[string]any) map[delivery.Channel]delivery.Content {
	out := map[delivery.Channel]delivery.Content{}
	if r.PushBody != "" || r.PushTitle != "" {
		push := delivery.Content{Title: r.PushTitle, Body: r.PushBody, Data: data}
		out[delivery.IOS], out[delivery.Android] = push, push
	}
	if r.SMSBody != "" {
		out[delivery.SMS] = delivery.Content{Body: r.SMSBody}
	}
	if r.EmailSubject != "" && (r.EmailHTML != "" || r.EmailText != "") {
		out[delivery.Email] = delivery.Content{Subject: r.EmailSubject, HTML: r.EmailHTML, Text: r.EmailText}
	}
	if c, ok := inboxContent(r, data); ok { // inbox.go
		out[delivery.Inbox] = c
	}
	return out
}

// inlineRendered maps inline content to the parts a template renders: the body serves push,
// SMS and email text, and the title stands in for an absent subject.
func inlineRendered(c *Content) templates.Rendered {
	subject := c.Subject
	if subject == "" {
		subject = c.Title
	}
	return templates.Rendered{PushTitle: c.Title, PushBody: c.Body, SMSBody: c.Body,
		EmailSubject: subject, EmailHTML: c.HTML, EmailText: c.Body}
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
