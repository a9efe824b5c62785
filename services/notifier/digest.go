package notifier

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/templates"
)

// Digests: a Send (or its category) may ask for a digest. Each of its deliveries that would be
// queued now is instead created as an item of the recipient's open digest for its channel
// (internal/delivery keeps digests and makes their transitions): scheduled with reason
// "digest", due only at its expiry, so that the reconciler never publishes it on its own. The
// reconciler closes digests when they fall due (DigestCloser): one delivery renders the items
// with the digest template, and goes through the queue like any other.

// digestFor returns the digest a Send goes into, if any: the Send's own, else its category's,
// never for a critical category (it goes at once). A digest and a fallback chain do not mix: a
// chain's later steps depend on how the first one went, which a digest would hold back.
// Errors: Invalid.
func digestFor(req *SendRequest, cat preference.Category, chain *delivery.Fallback) (*delivery.Digest, error) {
	g := req.Digest
	if g == nil {
		g = cat.Digest
	}
	if g == nil || cat.Critical {
		return nil, nil
	}
	if chain != nil {
		field := "digest"
		if req.Digest == nil {
			field = "fallback" // the category's digest, with the Send's chain
		}
		return nil, errs.Field(field, "a digest cannot be combined with a fallback chain")
	}
	return g, nil
}

// collectInto turns the deliveries of n that would go now, or when the recipient's quiet hours
// end, into items of the recipient's digest g; a future send time is kept, out of any digest.
// The digest, if none is open, closes at g.CloseAt from now in the recipient's time zone (UTC
// for a raw address or a user without one), or, if that falls in the quiet hours of the
// channel, when they end: the quiet hours as they are when the digest opens. An item's ttl runs
// from the close, as a delivery deferred by quiet hours has its ttl from the end of them. Each
// item keeps the Send's data with its content, whatever its channel, for the digest template's
// .items[].data: an item is never sent itself.
func collectInto(n *Notification, g *delivery.Digest, r *recipient, cat preference.Category, now time.Time, ttl time.Duration, data map[string]any) {
	closes := g.CloseAt(now, r.location())
	for _, d := range n.Deliveries {
		held := d.State == delivery.Scheduled && d.Reason == preference.ReasonQuietHours && !n.SendAt.After(now)
		if !digestible(d.Channel) || d.State != delivery.Queued && !held {
			continue
		}
		closeAt := closes
		if until, quiet := r.quietUntil(cat, d.Channel, closeAt); quiet {
			closeAt = until
		}
		d.State, d.Reason = delivery.Scheduled, delivery.ReasonDigest
		d.ExpiresAt = closeAt.Add(ttl)
		d.DueAt = ptr(d.ExpiresAt)
		d.Digest = &delivery.DigestItem{Template: g.Template, Locale: r.locale(), CloseAt: closeAt}
		d.Content.Data = data
	}
}

// OpenDigests finds a recipient's open digest, for Explain; internal/delivery's stores
// implement it.
type OpenDigests interface {
	// OpenDigest returns the open digest of an app's recipient (userID, or "" and the address
	// to), category and channel, if there is one.
	OpenDigest(ctx context.Context, app uuid.UUID, userID, category string, ch delivery.Channel, to string) (delivery.DigestRecord, bool, error)
}

// explainDigests sets the close time of n's items to their open digest's, where one is open:
// when they would go. An item with no open digest would open one, as planned. A lookup that
// fails leaves the plan's time: an explanation with it beats none.
func explainDigests(ctx context.Context, open OpenDigests, n *Notification) {
	if open == nil {
		return
	}
	for _, d := range n.Deliveries {
		if !d.InDigest() {
			continue
		}
		g, ok, err := open.OpenDigest(ctx, n.AppID, n.UserID, n.Category, d.Channel, d.To)
		if err == nil && ok {
			d.Digest.CloseAt = g.CloseAt
		}
	}
}

// digestible reports whether a channel's deliveries are collected into digests: those a
// provider sends (push, SMS, email), whose messages a digest saves. Any other channel (an
// in-app feed is a list already) goes at once.
func digestible(ch delivery.Channel) bool {
	switch ch {
	case delivery.IOS, delivery.Android, delivery.SMS, delivery.Email:
		return true
	}
	return false
}

// DigestStore finds the digests due to close and closes them; the postgres package implements
// it on internal/delivery's digests.
type DigestStore interface {
	// DueDigests returns up to limit open digests whose close time is at or before now.
	DueDigests(ctx context.Context, now time.Time, limit int) ([]delivery.DigestRecord, error)
	// CloseDigest closes digest id if it is still open and due, in one transaction: build is
	// given the digest and its live items (with their content, oldest first) and returns the
	// notification that sends them (build runs inside the transaction, so it must not wait on
	// the database itself), with its one delivery, which is stored with it while the
	// items become digested. It returns that delivery; nil when nothing was sent (no live
	// item, or the digest was not open and due, or another closer holds it).
	CloseDigest(ctx context.Context, id uuid.UUID, now time.Time,
		build func(g delivery.DigestRecord, items []delivery.Delivery) (*Notification, error)) (*Delivery, error)
}

// DigestCloser closes the digests that fall due and publishes their deliveries; the
// reconciler runs it on each pass.
type DigestCloser struct {
	Store     DigestStore
	Templates *Templates
	Publisher Publisher
	Log       *slog.Logger
	// RepublishAfter is the digest delivery's first re-publish deadline, as a Send's.
	RepublishAfter time.Duration
	// Batch bounds the digests one round takes, and Parallel how many of them close at once
	// (0: one at a time).
	Batch    int
	Parallel int
	// Metrics counts the digests sent; nil counts nothing.
	Metrics *Metrics
}

// Close closes every digest due at now and returns how many deliveries it published. A digest
// whose close fails stays open, for the next pass. Up to Parallel digests close at once: each
// close is a transaction of its own, whose time is mostly its commit's wait for the log flush.
func (c *DigestCloser) Close(ctx context.Context, now time.Time) (int, error) {
	published := 0
	// A digest another closer or a Send holds is skipped, and listed due again until it closes:
	// each is tried once a pass, so a round of only those ends the pass.
	tried := map[uuid.UUID]bool{}
	for {
		due, err := c.Store.DueDigests(ctx, now, max(c.Batch, 1))
		if err != nil {
			return published, err
		}
		var fresh []delivery.DigestRecord
		for _, g := range due {
			if !tried[g.ID] {
				tried[g.ID] = true
				fresh = append(fresh, g)
			}
		}
		byChannel := c.closeAll(ctx, fresh, now)
		for ch, ds := range byChannel {
			published += len(ds)
			if c.Metrics != nil {
				c.Metrics.DigestsSent.WithLabelValues(string(ch)).Add(float64(len(ds)))
			}
		}
		if len(byChannel) > 0 {
			// The deliveries are queued with a re-publish deadline: a failed publish costs delay.
			if err := c.Publisher.Publish(ctx, byChannel); err != nil {
				c.Log.Warn("publish of digests failed", "err", err)
			}
		}
		if len(due) < max(c.Batch, 1) || len(fresh) == 0 {
			return published, nil
		}
	}
}

// closeAll closes the digests gs, Parallel at a time, and returns the deliveries made, by
// channel.
func (c *DigestCloser) closeAll(ctx context.Context, gs []delivery.DigestRecord, now time.Time) map[delivery.Channel][]uuid.UUID {
	var mu sync.Mutex
	byChannel := map[delivery.Channel][]uuid.UUID{}
	slots := make(chan struct{}, max(c.Parallel, 1))
	var wg sync.WaitGroup
	for _, g := range gs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			d, err := c.close(ctx, g, now)
			if err != nil {
				c.Log.Warn("cannot close a digest; it stays open for the next pass", "digest_id", g.ID, "err", err)
				return
			}
			if d != nil {
				mu.Lock()
				byChannel[d.Channel] = append(byChannel[d.Channel], d.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return byChannel
}

// close closes digest g. Its template is read first, outside the close's transaction: reading
// it inside would hold one of the pool's connections while waiting for another, and closes in
// parallel would take every connection and wait on each other for good. A template store that
// is unavailable keeps the digest open for the next pass.
func (c *DigestCloser) close(ctx context.Context, g delivery.DigestRecord, now time.Time) (*Delivery, error) {
	t, set, terr := c.Templates.template(ctx, g.Template, 0)
	if errs.KindOf(terr) == errs.Unavailable {
		return nil, terr
	}
	return c.Store.CloseDigest(ctx, g.ID, now, func(locked delivery.DigestRecord, items []delivery.Delivery) (*Notification, error) {
		return c.build(locked, items, now, digestTemplate{t, set, terr}), nil
	})
}

// digestTemplate is a digest's template as read before its close: the stored version and its
// parsed form, or why there is none.
type digestTemplate struct {
	t   *Template
	set *templates.Set
	err error
}

// build makes the notification that sends digest g's items: one delivery on the digest's
// channel, rendered by the digest template.
func (c *DigestCloser) build(g delivery.DigestRecord, items []delivery.Delivery, now time.Time, tmpl digestTemplate) *Notification {
	content, ref := c.render(g, items, tmpl)
	first := items[0]
	n := &Notification{
		ID: g.ID, AppID: g.AppID, Category: g.Category, UserID: g.UserID, Template: ref,
		Priority: delivery.Low, DefaultOptIn: first.DefaultOptIn, SendAt: now, CreatedAt: now,
	}
	for _, it := range items {
		n.Priority = maxPriority(n.Priority, it.Priority)
		if it.ExpiresAt.After(n.ExpiresAt) {
			n.ExpiresAt = it.ExpiresAt
		}
	}
	n.Deliveries = []*Delivery{{
		ID: mustV7(), NotificationID: n.ID, UserID: g.UserID, AppID: g.AppID, Channel: g.Channel, To: g.To,
		Category: g.Category, Priority: n.Priority, DefaultOptIn: n.DefaultOptIn, State: delivery.Queued,
		Content: content, DueAt: ptr(minTime(now.Add(c.RepublishAfter), n.ExpiresAt)), ExpiresAt: n.ExpiresAt,
		CreatedAt: now, UpdatedAt: now,
	}}
	return n
}

func maxPriority(a, b delivery.Priority) delivery.Priority {
	rank := map[delivery.Priority]int{delivery.Low: 0, delivery.Normal: 1, delivery.High: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// DigestData is what a digest template is given: .count and .items, each item with what it
// would have sent on the digest's channel.
func DigestData(items []delivery.Delivery) map[string]any {
	list := make([]any, len(items))
	for i, it := range items {
		c := it.Content
		m := map[string]any{
			"notification_id": it.NotificationID.String(),
			"time":            it.CreatedAt.UTC().Format(time.RFC3339),
			"title":           c.Title,
			"body":            c.Body,
			"subject":         c.Subject,
			"text":            c.Text,
		}
		if c.Data != nil {
			m["data"] = c.Data
		} else {
			m["data"] = map[string]any{}
		}
		list[i] = m
	}
	return map[string]any{"count": len(items), "items": list}
}

// render renders the digest template for the digest's channel. A template that is gone, or
// renders nothing (or too much) for the channel, must not hold the items back forever: the
// digest then goes out in a plain form (the count and each item's title or subject) and the
// failure is logged.
func (c *DigestCloser) render(g delivery.DigestRecord, items []delivery.Delivery, tmpl digestTemplate) (delivery.Content, *TemplateRef) {
	data := DigestData(items)
	err := tmpl.err
	var r templates.Rendered
	if err == nil {
		_, r, err = tmpl.set.Render(g.Locale, data)
	}
	if err == nil {
		err = templates.Check(forChannels(r, []delivery.Channel{g.Channel}), nil, c.Templates.Limits)
	}
	var content delivery.Content
	if err == nil {
		var ok bool
		if content, ok = contents(r, nil)[g.Channel]; !ok {
			err = fmt.Errorf("renders nothing for %s", g.Channel)
		}
	}
	if err != nil {
		c.Log.Warn("digest template failed; the digest goes out in plain form", "digest_id", g.ID,
			"template", g.Template, "err", err)
		return plainDigest(items, g.Channel), nil
	}
	if g.Channel == delivery.IOS || g.Channel == delivery.Android { // the app can tell a digest
		content.Data = map[string]any{"digest_id": g.ID.String(), "count": len(items)}
	}
	return content, &TemplateRef{Name: tmpl.t.Name, Version: tmpl.t.Version, Locale: g.Locale}
}

// plainDigest is a digest's content without its template: the count, and a line per item.
func plainDigest(items []delivery.Delivery, ch delivery.Channel) delivery.Content {
	title := fmt.Sprintf("%d new notifications", len(items))
	var lines []string
	for _, it := range items {
		line := it.Content.Title
		if line == "" {
			line = it.Content.Subject
		}
		if line == "" {
			line = it.Content.Body
		}
		lines = append(lines, "- "+strings.TrimSpace(strings.SplitN(line, "\n", 2)[0]))
	}
	const maxLines = 20 // an SMS or a push of a long digest stays readable
	if len(lines) > maxLines {
		lines = append(slices.Clip(lines[:maxLines]), fmt.Sprintf("and %d more", len(items)-maxLines))
	}
	body := strings.Join(lines, "\n")
	switch ch {
	case delivery.SMS:
		return delivery.Content{Body: title}
	case delivery.Email:
		return delivery.Content{Subject: title, Text: body}
	}
	return delivery.Content{Title: title, Body: body}
}
