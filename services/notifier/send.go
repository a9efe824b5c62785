package notifier

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
)

// SendRequest is one notification for one recipient, as the API describes it.
type SendRequest struct {
	IdempotencyKey string
	// RequestHash fingerprints the whole request (the transport computes it).
	RequestHash []byte
	// Exactly one of UserID and Address is set.
	UserID   string
	Address  *Address
	Category string
	// Channels to use; empty means every channel the recipient can be reached on.
	Channels []delivery.Channel
	// Exactly one of Template and Content is set.
	Template *TemplateRef
	Content  *Content
	Data     map[string]any
	Priority delivery.Priority
	SendAt   time.Time
	TTL      time.Duration
}

// Address lists the targets of a recipient who is not a known user.
type Address struct {
	Email         string
	Phone         string
	IOSTokens     []string
	AndroidTokens []string
}

// Content is inline content: literal text, not rendered.
type Content struct {
	Title, Body, Subject, HTML string
}

// Limits on request fields, so that one request cannot cost unbounded memory or storage.
const (
	maxIdempotencyKey = 256
	maxUserID         = 128
	maxTokens         = 100
	maxTitle          = 1024
	maxBody           = 64 << 10
	maxHTML           = 256 << 10
	maxTTL            = 30 * 24 * time.Hour
	maxSchedule       = 365 * 24 * time.Hour
)

var categoryPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// Service is the notifier: it accepts notifications and answers for them.
type Service struct {
	Store     Store
	Publisher Publisher
	Directory Directory
	Log       *slog.Logger
	// RepublishAfter is how long a queued delivery may wait for a worker before the reconciler
	// publishes it again.
	RepublishAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	parsed sync.Map // templateKey -> *templates.Template; versions are immutable
	cats   categories
}

type templateKey struct {
	name    string
	version int
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// SendResult is what became of a Send.
type SendResult struct {
	Notification *Notification
	// Duplicate is true when the idempotency key was seen before and nothing was created.
	Duplicate bool
}

// Send accepts a notification from the calling app. It returns once the notification and its
// deliveries are committed; publishing to the queues follows, and a failed publish is repaired
// by the reconciler. Errors: Invalid (with field violations), Conflict (idempotency key reused
// with another request), NotFound (template), Unavailable.
func (s *Service) Send(ctx context.Context, caller appkey.Caller, req *SendRequest) (*SendResult, error) {
	if err := validate(req, s.now()); err != nil {
		return nil, err
	}
	if req.IdempotencyKey != "" {
		prev, err := s.Store.NotificationByKey(ctx, caller.AppID, req.IdempotencyKey)
		if err == nil {
			return s.replay(prev, req)
		}
		if !errs.Is(err, errs.NotFound) {
			return nil, err
		}
	}

	now := s.now()
	n := &Notification{
		ID:             mustV7(),
		AppID:          caller.AppID,
		IdempotencyKey: req.IdempotencyKey,
		RequestHash:    req.RequestHash,
		Category:       req.Category,
		UserID:         req.UserID,
		Priority:       req.Priority,
		SendAt:         now,
		CreatedAt:      now,
	}
	if n.Priority == "" {
		n.Priority = delivery.Normal
	}
	if req.SendAt.After(now) {
		n.SendAt = req.SendAt
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = delivery.DefaultTTL
	}
	n.ExpiresAt = n.SendAt.Add(ttl)

	cat, err := s.category(ctx, req.Category)
	if err != nil {
		return nil, err
	}
	n.Critical, n.DefaultOptIn = cat.Critical, cat.DefaultOptIn
	r, err := s.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	content, err := s.render(ctx, req, r.locale(), n)
	if err != nil {
		return nil, err
	}
	for _, t := range r.targets {
		d := &Delivery{
			ID:             mustV7(),
			NotificationID: n.ID,
			Channel:        t.channel,
			To:             t.to,
			State:          delivery.Skipped,
			ExpiresAt:      n.ExpiresAt,
			CreatedAt:      now,
			UpdatedAt:      now,
		}
		c, ok := content[t.channel]
		switch {
		case t.to == "":
			d.Reason = "no_address"
		case !ok:
			d.Reason = "no_content"
		default:
			if d.Reason = r.refusal(cat, t); d.Reason != "" {
				break
			}
			d.Content = c
			at := n.SendAt
			if until, quiet := r.quietUntil(cat, t.channel, at); quiet {
				at, d.ExpiresAt = until, until.Add(ttl)
			}
			d.State, d.DueAt = delivery.Queued, ptr(minTime(now.Add(s.RepublishAfter), d.ExpiresAt))
			if at.After(now) {
				d.State, d.DueAt = delivery.Scheduled, &at
			}
		}
		n.Deliveries = append(n.Deliveries, d)
	}

	stored, created, err := s.Store.CreateNotification(ctx, n)
	if err != nil {
		return nil, err
	}
	if !created { // a concurrent Send with the same key won the race
		return s.replay(stored, req)
	}
	s.publish(ctx, n)
	return &SendResult{Notification: n}, nil
}

func (s *Service) replay(prev *Notification, req *SendRequest) (*SendResult, error) {
	if string(prev.RequestHash) != string(req.RequestHash) {
		return nil, errs.E(errs.Conflict,
			"idempotency key %q was already used for a different request", req.IdempotencyKey)
	}
	return &SendResult{Notification: prev, Duplicate: true}, nil
}

// publish hands the queued deliveries to the broker. The notification is already committed, so
// a failure here only delays it: the reconciler publishes what is still queued.
func (s *Service) publish(ctx context.Context, n *Notification) {
	var pubs []Publication
	for _, d := range n.Deliveries {
		if d.State == delivery.Queued {
			pubs = append(pubs, Publication{DeliveryID: d.ID, Channel: d.Channel})
		}
	}
	if len(pubs) == 0 {
		return
	}
	if err := s.Publisher.Publish(ctx, pubs); err != nil {
		s.Log.Warn("publish failed; the reconciler will publish again",
			"notification_id", n.ID, "deliveries", len(pubs), "err", err)
	}
}

type target struct {
	channel delivery.Channel
	to      string
}

// recipient is who a Send goes to, as the contacts service knows them.
type recipient struct {
	user    *User // nil for a raw address
	targets []target
	sups    []preference.Suppression
}

func (r *recipient) locale() string {
	if r.user == nil {
		return ""
	}
	return r.user.Locale
}

// refusal says why t must not receive category cat: an invalid address, a suppression, or the
// user's settings. "" means send.
func (r *recipient) refusal(cat preference.Category, t target) string {
	if reason, blocked := preference.Blocked(r.sups, cat, t.channel, t.to); blocked {
		return reason
	}
	if r.user != nil && !r.user.Settings.Allows(cat, t.channel) {
		return preference.ReasonOptedOut
	}
	return ""
}

// quietUntil returns when the user's quiet hours around at end, if at falls in them and they
// apply to the channel and category.
func (r *recipient) quietUntil(cat preference.Category, ch delivery.Channel, at time.Time) (time.Time, bool) {
	if r.user == nil || r.user.Settings == nil || r.user.Settings.QuietHours == nil ||
		cat.Critical || !preference.Interrupts(ch) {
		return time.Time{}, false
	}
	loc, err := time.LoadLocation(r.user.Timezone)
	if err != nil || r.user.Timezone == "" {
		loc = time.UTC
	}
	return r.user.Settings.QuietHours.Until(at, loc)
}

// resolve finds the recipient's channel targets, restricted to the requested channels, with
// what the contacts service knows of them, in one round trip. A requested channel the
// recipient cannot be reached on gets one target with no address, which becomes a skipped
// delivery.
func (s *Service) resolve(ctx context.Context, req *SendRequest) (*recipient, error) {
	r := &recipient{}
	addr := req.Address
	if s.Directory == nil {
		if req.UserID != "" {
			return nil, errs.E(errs.FailedPrecondition, "no contacts service is configured")
		}
	} else {
		var ids []string
		var lookup []Target
		if req.UserID != "" {
			ids = []string{req.UserID}
		} else {
			lookup = addr.targets()
		}
		found, err := s.Directory.Resolve(ctx, ids, lookup)
		if err != nil {
			return nil, err
		}
		r.sups = found.Suppressions
		if req.UserID != "" {
			u, ok := found.Users[req.UserID]
			if !ok {
				return nil, errs.E(errs.NotFound, "user %q not found", req.UserID)
			}
			r.user = &u
			addr = &Address{Email: u.Email, Phone: u.Phone, IOSTokens: u.IOSTokens, AndroidTokens: u.AndroidTokens}
		}
	}
	byChannel := map[delivery.Channel][]string{
		delivery.IOS:     addr.IOSTokens,
		delivery.Android: addr.AndroidTokens,
	}
	if addr.Email != "" {
		byChannel[delivery.Email] = []string{addr.Email}
	}
	if addr.Phone != "" {
		byChannel[delivery.SMS] = []string{addr.Phone}
	}
	channels := req.Channels
	explicit := len(channels) > 0
	if !explicit {
		channels = delivery.Channels
	}
	for _, ch := range channels {
		tos := byChannel[ch]
		if len(tos) == 0 && explicit {
			r.targets = append(r.targets, target{channel: ch})
		}
		for _, to := range tos {
			r.targets = append(r.targets, target{channel: ch, to: to})
		}
	}
	if len(r.targets) == 0 {
		return nil, errs.Field("recipient", "the recipient has no address on any channel")
	}
	return r, nil
}

func (a *Address) targets() []Target {
	var out []Target
	if a.Email != "" {
		out = append(out, Target{delivery.Email, a.Email})
	}
	if a.Phone != "" {
		out = append(out, Target{delivery.SMS, a.Phone})
	}
	for _, t := range a.IOSTokens {
		out = append(out, Target{delivery.IOS, t})
	}
	for _, t := range a.AndroidTokens {
		out = append(out, Target{delivery.Android, t})
	}
	return out
}

// validate checks the request's shape and normalises its addresses in place.
func validate(req *SendRequest, now time.Time) error {
	var v errs.Violations
	checkLen(&v, "idempotency_key", req.IdempotencyKey, maxIdempotencyKey)
	switch {
	case req.UserID != "" && req.Address != nil:
		v.Add("recipient", "set either user_id or address, not both")
	case req.UserID != "":
		if len(req.UserID) > maxUserID || !storable(req.UserID) {
			v.Add("recipient.user_id", fmt.Sprintf("must be valid UTF-8 without NUL of at most %d bytes", maxUserID))
		}
	case req.Address != nil:
		validateAddress(req.Address, &v)
	default:
		v.Add("recipient", "is required: set user_id or address")
	}
	if !categoryPattern.MatchString(req.Category) {
		v.Add("category", "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
	seen := map[delivery.Channel]bool{}
	for i, ch := range req.Channels {
		if seen[ch] {
			v.Add(fmt.Sprintf("channels[%d]", i), "is repeated")
		}
		seen[ch] = true
	}
	switch {
	case req.Template != nil && req.Content != nil:
		v.Add("message", "set either template or content, not both")
	case req.Template != nil:
		if req.Template.Name == "" {
			v.Add("template.name", "is required")
		}
		checkLen(&v, "template.name", req.Template.Name, maxTitle)
		checkLen(&v, "template.locale", req.Template.Locale, maxTitle)
		if req.Template.Version < 0 {
			v.Add("template.version", "must be positive")
		}
	case req.Content != nil:
		c := req.Content
		checkLen(&v, "content.title", c.Title, maxTitle)
		checkLen(&v, "content.subject", c.Subject, maxTitle)
		checkLen(&v, "content.body", c.Body, maxBody)
		checkLen(&v, "content.html", c.HTML, maxHTML)
		if c.Body == "" && c.Title == "" && c.HTML == "" {
			v.Add("content", "needs at least a title, body or html")
		}
	default:
		v.Add("message", "is required: set template or content")
	}
	if !storableData(req.Data) {
		v.Add("data", "must not hold NUL characters, NaN or infinite numbers")
	}
	if req.TTL < 0 || req.TTL > maxTTL {
		v.Add("ttl", fmt.Sprintf("must be between 0 and %s", maxTTL))
	}
	if !req.SendAt.IsZero() && req.SendAt.Sub(now) > maxSchedule {
		v.Add("send_at", "must be within a year")
	}
	return v.Err()
}

func validateAddress(a *Address, v *errs.Violations) {
	if a.Email == "" && a.Phone == "" && len(a.IOSTokens) == 0 && len(a.AndroidTokens) == 0 {
		v.Add("recipient.address", "needs at least one of email, phone, ios_tokens, android_tokens")
		return
	}
	if a.Email != "" {
		e, err := address.Email(a.Email)
		if err != nil {
			v.Add("recipient.address.email", err.Error())
		}
		a.Email = e
	}
	if a.Phone != "" {
		p, err := address.Phone(a.Phone)
		if err != nil {
			v.Add("recipient.address.phone", err.Error())
		}
		a.Phone = p
	}
	a.IOSTokens = checkTokens(v, "recipient.address.ios_tokens", a.IOSTokens, address.APNsToken)
	a.AndroidTokens = checkTokens(v, "recipient.address.android_tokens", a.AndroidTokens, address.FCMToken)
}

func checkTokens(v *errs.Violations, field string, tokens []string, parse func(string) (string, error)) []string {
	if len(tokens) > maxTokens {
		v.Add(field, fmt.Sprintf("must hold at most %d tokens", maxTokens))
		return nil
	}
	out := make([]string, 0, len(tokens))
	for i, t := range tokens {
		norm, err := parse(t)
		if err != nil {
			v.Add(fmt.Sprintf("%s[%d]", field, i), err.Error())
			continue
		}
		if !slices.Contains(out, norm) {
			out = append(out, norm)
		}
	}
	return out
}

func checkLen(v *errs.Violations, field, s string, max int) {
	if len(s) > max {
		v.Add(field, fmt.Sprintf("must be at most %d bytes", max))
	}
	if !utf8.ValidString(s) {
		v.Add(field, "must be valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		v.Add(field, "must not contain NUL characters")
	}
}

// storable reports whether PostgreSQL can store s as text or in jsonb: it rejects invalid UTF-8
// and NUL, so that such input is answered as invalid rather than failing the insert.
func storable(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// storableData reports whether data encodes to JSON that jsonb accepts: no NUL in keys or
// strings (jsonb refuses \u0000) and no NaN or infinity (encoding/json refuses them).
func storableData(data any) bool {
	switch d := data.(type) {
	case string:
		return strings.IndexByte(d, 0) < 0
	case float64:
		return !math.IsNaN(d) && !math.IsInf(d, 0)
	case float32:
		return storableData(float64(d))
	case []any:
		for _, e := range d {
			if !storableData(e) {
				return false
			}
		}
	case map[string]any:
		for k, e := range d {
			if strings.IndexByte(k, 0) >= 0 || !storableData(e) {
				return false
			}
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func mustV7() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		panic(err) // only when the system's random source fails
	}
	return id
}
