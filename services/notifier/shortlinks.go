package notifier

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier/links"
)

// Link is one short link in a delivery's content, stored with its notification.
type Link struct {
	ID             int64
	DeliveryID     uuid.UUID
	NotificationID uuid.UUID
	AppID          uuid.UUID
	Channel        delivery.Channel
	Category       string
	Template       string // "" for inline content
	// URL is the long URL. It may carry tokens: never logged.
	URL       string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// LinkConfig turns on short links: every http(s) link in a queued delivery's SMS body, email
// HTML (<a href>) and text, push title and body, and push data values that are whole URLs, is
// replaced by BaseURL + "/l/" + a code of its own, unless the template opted it out.
type LinkConfig struct {
	Codec *links.Codec
	IDs   *links.Allocator
	// BaseURL is where recipients reach the redirect, without a trailing slash.
	BaseURL string
	// Retention is how long a link works after its delivery's send time.
	Retention time.Duration
	// Created, when set, is told of each link once its notification is committed.
	Created func(Link)
}

// shorten rewrites the links of n's live deliveries to short links, recording them in n.Links,
// and removes the opt-out marks from every delivery's content. A link that cannot be shortened
// (see links.CheckURL) is an Invalid error naming the part it is in.
func (s *Sender) shorten(ctx context.Context, n *Notification) error {
	for _, d := range n.Deliveries {
		live := d.State == delivery.Queued || d.State == delivery.Scheduled
		if s.Links == nil || !live {
			d.Content = unmarkContent(d.Content)
			continue
		}
		if err := s.shortenDelivery(ctx, n, d); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sender) shortenDelivery(ctx context.Context, n *Notification, d *Delivery) error {
	lc := s.Links
	at := d.SendTime(n.CreatedAt)
	tmpl := ""
	if n.Template != nil {
		tmpl = n.Template.Name
	}
	made := map[string]string{} // one short link per long URL per delivery
	short := func(long string) (string, error) {
		if su, ok := made[long]; ok {
			return su, nil
		}
		ids, err := lc.IDs.IDs(ctx, 1)
		if err != nil {
			return "", err
		}
		id := links.MakeID(at, ids[0]) // the send time, so the link lives Retention from it
		n.Links = append(n.Links, Link{ID: id, DeliveryID: d.ID, NotificationID: n.ID, AppID: n.AppID,
			Channel: d.Channel, Category: n.Category, Template: tmpl, URL: long,
			CreatedAt: n.CreatedAt, ExpiresAt: at.Add(lc.Retention)})
		su := lc.BaseURL + "/l/" + lc.Codec.Encode(id)
		made[long] = su
		return su, nil
	}
	field := func(part, inline string) string {
		if n.Template != nil {
			return "template." + part
		}
		return "content." + inline
	}
	c := &d.Content
	var err error
	rewrite := func(dst *string, html bool, part, inline string) {
		if err != nil || *dst == "" {
			return
		}
		var out string
		if html {
			out, err = links.HTML(*dst, short)
		} else {
			out, err = links.Text(*dst, short)
		}
		if err != nil {
			err = linkError(field(part, inline), err)
			return
		}
		*dst = out
	}
	switch d.Channel {
	case delivery.SMS:
		rewrite(&c.Body, false, templates.PartSMSBody, "body")
		if err == nil && len(made) > 0 { // a short link can be longer than the link it replaces
			if e := templates.Check(templates.Rendered{SMSBody: c.Body}, nil, s.Templates.Limits); e != nil {
				err = errs.Field(field(templates.PartSMSBody, "body"), "with short links, "+e.(*templates.Error).Err.Error())
			}
		}
	case delivery.Email:
		rewrite(&c.HTML, true, templates.PartEmailHTML, "html")
		rewrite(&c.Text, false, templates.PartEmailText, "body")
		c.Subject = links.Unmark(c.Subject)
	case delivery.IOS, delivery.Android:
		rewrite(&c.Title, false, templates.PartPushTitle, "title")
		rewrite(&c.Body, false, templates.PartPushBody, "body")
		if err == nil && len(c.Data) > 0 {
			err = shortenData(c, short)
		}
		if err == nil && len(made) > 0 {
			if e := templates.CheckPush(c.Title, c.Body, c.Data); e != nil {
				err = errs.Field(field(templates.PartPushBody, "body"), "with short links, "+e.(*templates.Error).Err.Error())
			}
		}
	}
	return err
}

// shortenData replaces the push data values that are whole http(s) URLs. The data map is the
// request's, shared by every delivery: the delivery gets a copy.
func shortenData(c *delivery.Content, short links.Shortener) error {
	var data map[string]any
	for k, v := range c.Data {
		u, ok := v.(string)
		if !ok || !links.IsURL(u) {
			continue
		}
		if err := links.CheckURL(u); err != nil {
			return errs.Field("data."+k, "holds a link that "+err.Error())
		}
		su, err := short(u)
		if err != nil {
			return err
		}
		if data == nil {
			data = maps.Clone(c.Data)
		}
		data[k] = su
	}
	if data != nil {
		c.Data = data
	}
	return nil
}

// linkError turns a rewriting error into a field violation, or passes an allocation error on.
func linkError(field string, err error) error {
	if ue, ok := err.(*links.URLError); ok {
		return errs.Field(field, ue.Error())
	}
	return fmt.Errorf("short link: %w", err)
}

// checkLinks checks the links that short links would replace in inline content, so that a Send
// with one that cannot be shortened is refused whether or not short links are on. It reports
// whether every link is fine.
func checkLinks(v *errs.Violations, c *Content) bool {
	ok := true
	for _, p := range []struct {
		field, text string
		html        bool
	}{{"content.title", c.Title, false}, {"content.body", c.Body, false}, {"content.html", c.HTML, true}} {
		check := links.CheckText
		if p.html {
			check = links.CheckHTML
		}
		if err := check(p.text, false); err != nil {
			v.Add(p.field, err.Error())
			ok = false
		}
	}
	return ok
}

// checkTemplateLinks checks the links written into a template's source (links built by
// template actions are checked when rendered, by Send). It returns a *templates.Error naming
// the part, as ParseSet does.
func checkTemplateLinks(p templates.Parts) error {
	for _, part := range []struct {
		name, src string
		html      bool
	}{
		{templates.PartPushTitle, p.PushTitle, false}, {templates.PartPushBody, p.PushBody, false},
		{templates.PartSMSBody, p.SMSBody, false}, {templates.PartEmailHTML, p.EmailHTML, true},
		{templates.PartEmailText, p.EmailText, false},
	} {
		check := links.CheckText
		if part.html {
			check = links.CheckHTML
		}
		if err := check(part.src, true); err != nil {
			return &templates.Error{Part: part.name, Err: err}
		}
	}
	return nil
}

// committed tells LinkConfig.Created of n's links.
func (s *Sender) committed(n *Notification) {
	if s.Links == nil || s.Links.Created == nil {
		return
	}
	for _, l := range n.Links {
		s.Links.Created(l)
	}
}

// unmarkContent removes the opt-out marks of content that is shown, not sent as shortened:
// Explain's answer, and deliveries that will not be sent.
func unmarkContent(c delivery.Content) delivery.Content {
	c.Title, c.Body, c.Subject = links.Unmark(c.Title), links.Unmark(c.Body), links.Unmark(c.Subject)
	c.HTML, c.Text = links.Unmark(c.HTML), links.Unmark(c.Text)
	return c
}

func unmarkRendered(r templates.Rendered) templates.Rendered {
	for _, p := range []*string{&r.PushTitle, &r.PushBody, &r.SMSBody, &r.EmailSubject, &r.EmailHTML, &r.EmailText} {
		*p = links.Unmark(*p)
	}
	return r
}
