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
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/address"
	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/batch"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/ratelimit"
	"github.com/heraldhq/herald/internal/templates"
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
	// Fallback sends on its channels one after another instead (not with Channels); nil means
	// the category's, if it has one.
	Fallback *delivery.Fallback
	// Digest collects the notification into the recipient's digest (digest.go); nil means the
	// category's, if it has one.
	Digest *delivery.Digest
	// Exactly one of Template and Content is set.
	Template *TemplateRef
	Content  *Content
	Data     map[string]any
	Priority delivery.Priority
	SendAt   time.Time
	TTL      time.Duration
	// TopicSendID names the topic send this Send fans out (topic.go); uuid.Nil for a Send.
	TopicSendID uuid.UUID
}

// Address lists the targets of a recipient who is not a known user.
type Address struct {
	Email         string
	Phone         string
	IOSTokens     []string
	AndroidTokens []string
}

// Content is inline content: literal text, not rendered, but held to the limits of rendered
// templates (checkInline).
type Content struct {
	Title, Body, Subject, HTML string
}

// Limits on request fields, so that one request cannot cost unbounded memory or storage.
const (
	// MaxIdempotencyKey is the longest idempotency key, in bytes.
	MaxIdempotencyKey = 256
	maxUserID         = 128
	maxTokens         = 100
	maxTemplateName   = 128
	maxTitle          = 1024
	maxBody           = 64 << 10
	maxHTML           = 256 << 10
	maxTTL            = 30 * 24 * time.Hour
	maxSchedule       = 365 * 24 * time.Hour
)

var categoryPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// Sender accepts notifications from calling apps and answers for them: Send, SendBatch and
// Explain decide and record them, GetNotification and CancelNotification find them again.
type Sender struct {
	Store Notifications
	// Templates renders the notifications that name a template, and bounds rendered content.
	Templates *Templates
	// Categories holds the rules each notification is decided by.
	Categories *Categories
	// Handoff puts committed deliveries on their queues.
	Handoff   *Handoff
	Directory Directory
	Log       *slog.Logger
	// RepublishAfter is how long a queued delivery may wait for a worker before the reconciler
	// publishes it again.
	RepublishAfter time.Duration
	// Metrics counts what Send decides; nil counts nothing.
	Metrics *Metrics
	// Limiter enforces app request rates and category caps; nil turns them off.
	Limiter Limiter
	// DefaultRate and DefaultBurst apply to apps without their own rate; 0 means no limit.
	DefaultRate  float64
	DefaultBurst int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Links turns on short links (shortlinks.go); nil leaves links as they are.
	Links *LinkConfig
	// Digests finds open digests, for Explain to say when an item would go (digest.go); nil
	// explains an item as if it opened its digest.
	Digests OpenDigests

	commits       *batch.Batcher[*Notification, bool]
	commitOnce    sync.Once
	limitFailures atomic.Int64
	metricsOnce   sync.Once
}

func (s *Sender) now() time.Time { return clock(s.Now) }

// clock reads a part's Now: the tests' clock, or the wall clock when it is nil.
func clock(now func() time.Time) time.Time {
	if now != nil {
		return now()
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
// with another request), NotFound (template, user), PermissionDenied (outside the app's scope),
// Exhausted (the app's request rate), Unavailable.
func (s *Sender) Send(ctx context.Context, caller appkey.Caller, req *SendRequest) (*SendResult, error) {
	if err := s.admit(ctx, caller); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := s.send(ctx, caller, req)
	if err == nil {
		s.metrics().AcceptDuration.Observe(time.Since(start).Seconds())
	}
	return res, err
}

func (s *Sender) metrics() *Metrics {
	s.metricsOnce.Do(func() {
		if s.Metrics == nil {
			s.Metrics = discardMetrics()
		}
	})
	return s.Metrics
}

// IdempotencyWindow is how long an idempotency key stands for its first request.
const IdempotencyWindow = 24 * time.Hour

func (s *Sender) send(ctx context.Context, caller appkey.Caller, req *SendRequest) (*SendResult, error) {
	d, res, err := s.prepare(ctx, caller, req)
	if d == nil {
		return res, err
	}
	created, err := s.committer().Do(ctx, d.n)
	return s.finish(ctx, caller, req, d, created, err)
}

// prepare decides a Send up to its commit: it returns the draft to commit, or the answer when
// there is nothing to commit (a replay of the idempotency key, or an error).
func (s *Sender) prepare(ctx context.Context, caller appkey.Caller, req *SendRequest) (*draft, *SendResult, error) {
	now := s.now()
	if err := validate(req, now, s.Templates.Limits); err != nil {
		return nil, nil, err
	}
	if req.IdempotencyKey != "" {
		prev, err := s.Store.NotificationByKey(ctx, caller.AppID, req.IdempotencyKey)
		switch {
		case err == nil && now.Sub(prev.CreatedAt) < IdempotencyWindow:
			res, err := s.replay(prev, req)
			return nil, res, err
		case err == nil: // the key's window is over: it may name a new notification
			if err := s.Store.ReleaseKey(ctx, caller.AppID, req.IdempotencyKey, now.Add(-IdempotencyWindow)); err != nil {
				return nil, nil, err
			}
		case !errs.Is(err, errs.NotFound):
			return nil, nil, err
		}
	}
	d, err := s.plan(ctx, caller, req, now)
	if err != nil {
		return nil, nil, err
	}
	s.takeCaps(ctx, d, now)
	holdLaterSteps(d.n, now, s.RepublishAfter)  // a capped first step passes the chain on
	if err := s.shorten(ctx, d.n); err != nil { // short links: shortlinks.go
		return nil, nil, err
	}
	return d, nil, nil
}

// finish answers a Send once its draft was committed, or not.
func (s *Sender) finish(ctx context.Context, caller appkey.Caller, req *SendRequest, d *draft, created bool, err error) (*SendResult, error) {
	if err != nil {
		return nil, err
	}
	if !created { // a concurrent Send with the same key won the race
		prev, err := s.Store.NotificationByKey(ctx, caller.AppID, req.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		return s.replay(prev, req)
	}
	s.metrics().count(d.n)
	s.committed(d.n) // short links: shortlinks.go
	return &SendResult{Notification: d.n}, nil
}

// draft is a notification decided but not yet stored.
type draft struct {
	n   *Notification
	cat preference.Category
	// who identifies the recipient for frequency caps: the user, or the addresses.
	who string
}

// plan decides everything about a notification without storing it: the category and the app's
// scope, the recipient's targets and settings, the content, and each delivery's state.
func (s *Sender) plan(ctx context.Context, caller appkey.Caller, req *SendRequest, now time.Time) (*draft, error) {
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
		TopicSendID:    req.TopicSendID,
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

	cat, err := s.Categories.category(ctx, req.Category)
	if err != nil {
		return nil, err
	}
	n.Critical, n.DefaultOptIn = cat.Critical, cat.DefaultOptIn
	requested, chain, field := req.Channels, req.Fallback, "channels"
	if chain == nil && len(requested) == 0 && cat.Fallback != nil {
		chain = cat.Fallback
	}
	if chain != nil {
		requested, field = chain.Channels, "fallback.channels"
	}
	channels, err := scope(caller, cat, requested, field)
	if err != nil {
		return nil, err
	}
	digest, err := digestFor(req, cat, chain)
	if err != nil {
		return nil, err
	}
	r, err := s.resolve(ctx, req, channels, len(requested) > 0)
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
			UserID:         n.UserID,
			Channel:        t.channel,
			To:             t.to,
			Category:       n.Category,
			Priority:       n.Priority,
			Critical:       n.Critical,
			DefaultOptIn:   n.DefaultOptIn,
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
				at, d.ExpiresAt, d.Reason = until, until.Add(ttl), preference.ReasonQuietHours
			}
			d.State, d.DueAt = delivery.Queued, ptr(minTime(now.Add(s.RepublishAfter), d.ExpiresAt))
			if at.After(now) {
				d.State, d.DueAt = delivery.Scheduled, &at
			}
		}
		if chain != nil {
			d.Step, d.StepTimeout = slices.Index(chain.Channels, t.channel)+1, chain.StepTimeout
		}
		n.Deliveries = append(n.Deliveries, d)
	}
	holdLaterSteps(n, now, s.RepublishAfter)
	if digest != nil {
		collectInto(n, digest, r, cat, now, ttl, req.Data)
	}
	return &draft{n: n, cat: cat, who: r.who()}, nil
}

// holdLaterSteps makes a fallback chain start at its first step with a delivery that may go
// (queued or scheduled): that step keeps its state, the later ones wait for it, due for the
// reconciler at their expiry at the latest (their steps before them mark them due sooner). A
// chain whose first live step was skipped meanwhile (a frequency cap) starts at the next one,
// queued or scheduled for the notification's send time. Steps skipped at the start (no
// address, opted out, suppressed) keep their reason: the chain moved on past them.
func holdLaterSteps(n *Notification, now time.Time, republishAfter time.Duration) {
	first := 0
	for _, d := range n.Deliveries {
		if d.Step == 0 {
			return
		}
		switch d.State {
		case delivery.Queued, delivery.Scheduled:
			if first == 0 || d.Step == first {
				first = d.Step
				continue
			}
		case delivery.Waiting:
			if first == 0 || d.Step == first {
				first = d.Step
				d.State, d.DueAt = delivery.Queued, ptr(minTime(now.Add(republishAfter), d.ExpiresAt))
				if n.SendAt.After(now) {
					d.State, d.DueAt = delivery.Scheduled, ptr(n.SendAt)
				}
				continue
			}
		default:
			continue
		}
		d.State, d.DueAt = delivery.Waiting, ptr(d.ExpiresAt)
	}
}

// scope returns the channels a Send may use: the requested ones (field names them in
// errors), each of which the app's scope and the category must allow, or, when none are
// requested, every channel both allow.
// Errors: PermissionDenied (outside the app's scope), Invalid (a channel the category is not
// sent on).
func scope(caller appkey.Caller, cat preference.Category, requested []delivery.Channel, field string) ([]delivery.Channel, error) {
	if len(caller.AllowedCategories) > 0 && !slices.Contains(caller.AllowedCategories, cat.Name) {
		return nil, errs.E(errs.PermissionDenied, "app %q may not send category %q", caller.AppName, cat.Name)
	}
	appAllows := func(ch delivery.Channel) bool {
		return len(caller.AllowedChannels) == 0 || slices.Contains(caller.AllowedChannels, ch)
	}
	if len(requested) == 0 {
		var out []delivery.Channel
		for _, ch := range delivery.Channels {
			if ch == delivery.Inbox && !slices.Contains(cat.AllowedChannels, ch) {
				continue // the inbox only when asked for: inbox.go
			}
			if appAllows(ch) && cat.Allowed(ch) {
				out = append(out, ch)
			}
		}
		return out, nil
	}
	for i, ch := range requested {
		if !appAllows(ch) {
			return nil, errs.E(errs.PermissionDenied, "app %q may not send on channel %s", caller.AppName, ch)
		}
		if !cat.Allowed(ch) {
			return nil, errs.Field(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("category %q is not sent on %s", cat.Name, ch))
		}
	}
	return requested, nil
}

// admit applies the app's request rate, shared by every replica. When the limit store cannot
// answer, the request goes through: a rate limit must never stop notifications.
func (s *Sender) admit(ctx context.Context, caller appkey.Caller) error {
	rate, burst := caller.RatePerSecond, caller.Burst
	if rate == 0 {
		rate, burst = s.DefaultRate, s.DefaultBurst
	}
	if rate <= 0 || s.Limiter == nil {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(rate))
	}
	ok, retry, err := s.Limiter.AllowRequest(ctx, caller.AppID.String(), rate, burst)
	if err != nil {
		s.limitFailures.Add(1)
		s.metrics().LimitStoreFailures.Inc()
		s.Log.Warn("rate limit store unavailable; request admitted", "app", caller.AppName, "err", err)
		return nil
	}
	if !ok {
		s.metrics().RateLimited.WithLabelValues("app").Inc()
		return &errs.Error{Kind: errs.Exhausted, RetryAfter: retry,
			Message: fmt.Sprintf("app %q is over its request rate (%g/s); retry after %s", caller.AppName, rate, retry)}
	}
	return nil
}

// takeCaps counts the deliveries of d against its category's frequency caps, and skips
// (rate_limited) those over a cap. When the limit store cannot answer, nothing is capped.
func (s *Sender) takeCaps(ctx context.Context, d *draft, now time.Time) {
	checks, owners := capChecks(d, now)
	if len(checks) == 0 || s.Limiter == nil {
		return
	}
	allowed, err := s.Limiter.Take(ctx, checks)
	if err != nil {
		s.limitFailures.Add(1)
		s.metrics().LimitStoreFailures.Inc()
		s.Log.Warn("rate limit store unavailable; caps not applied", "notification_id", d.n.ID, "err", err)
		return
	}
	for i, ok := range allowed {
		if !ok {
			for _, dl := range owners[i] {
				dl.State, dl.Reason, dl.DueAt, dl.Content = delivery.Skipped, preference.ReasonRateLimited, nil, delivery.Content{}
			}
		}
	}
}

// capChecks lists the cap counters d's live deliveries need, with the deliveries each one
// stops when it is full. A cap of every channel counts the notification once.
func capChecks(d *draft, now time.Time) ([]ratelimit.Cap, [][]*Delivery) {
	var live []*Delivery
	for _, dl := range d.n.Deliveries {
		// A digest's item is not a message of its own: caps count messages.
		if (dl.State == delivery.Queued || dl.State == delivery.Scheduled) && dl.Digest == nil {
			live = append(live, dl)
		}
	}
	var checks []ratelimit.Cap
	var owners [][]*Delivery
	for _, c := range d.cat.Caps {
		var ds []*Delivery
		for _, dl := range live {
			if c.Channel == "" || dl.Channel == c.Channel {
				ds = append(ds, dl)
			}
		}
		if len(ds) == 0 {
			continue
		}
		checks = append(checks, ratelimit.Cap{
			Key:   ratelimit.CapKey(d.who, d.cat.Name, string(c.Channel)),
			Limit: c.Limit, Window: c.Window, At: now,
		})
		owners = append(owners, ds)
	}
	return checks, owners
}

// peekCaps marks the deliveries of d that a cap would stop, without counting them.
func (s *Sender) peekCaps(ctx context.Context, d *draft, now time.Time) {
	checks, owners := capChecks(d, now)
	if len(checks) == 0 || s.Limiter == nil {
		return
	}
	room, err := s.Limiter.Peek(ctx, checks)
	if err != nil {
		return // an explanation without caps beats none
	}
	for i, ok := range room {
		if !ok {
			for _, dl := range owners[i] {
				dl.State, dl.Reason, dl.DueAt = delivery.Skipped, preference.ReasonRateLimited, nil
			}
		}
	}
}

// LimitFailures counts the times the limit store could not answer and limits were not applied.
func (s *Sender) LimitFailures() int64 { return s.limitFailures.Load() }

func (s *Sender) replay(prev *Notification, req *SendRequest) (*SendResult, error) {
	if string(prev.RequestHash) != string(req.RequestHash) {
		return nil, errs.E(errs.Conflict,
			"idempotency key %q was already used for a different request", req.IdempotencyKey)
	}
	return &SendResult{Notification: prev, Duplicate: true}, nil
}

// Group commit: concurrent Sends share one transaction, and one message per channel carries
// the deliveries that transaction created (bounded by queue.MaxBatch). A few commits in flight
// keep the database busy while each waits for its log flush; batches grow only when Sends pile
// up, so a lone Send is not held back.
const (
	maxCommit     = 1000
	commitRunners = 2
)

func (s *Sender) committer() *batch.Batcher[*Notification, bool] {
	s.commitOnce.Do(func() { s.commits = batch.New(s.commit, maxCommit, commitRunners) })
	return s.commits
}

// Close stops the group commit; Sends after it fail.
func (s *Sender) Close() { s.committer().Close() }

// commit stores notifications and then publishes the queued deliveries of those it created. It
// answers once the broker acknowledged them: that wait is what holds Sends back when the broker
// falls behind. A failed publish only delays the deliveries: they are marked for the
// reconciler, which publishes them again.
func (s *Sender) commit(ctx context.Context, ns []*Notification) ([]bool, []error, error) {
	created, failed, err := s.Store.CreateNotifications(ctx, ns)
	if err != nil {
		return nil, nil, err
	}
	byChannel := map[delivery.Channel][]uuid.UUID{}
	for i, n := range ns {
		if !created[i] || (failed != nil && failed[i] != nil) {
			continue
		}
		for _, d := range n.Deliveries {
			if d.State == delivery.Queued {
				byChannel[d.Channel] = append(byChannel[d.Channel], d.ID)
			}
		}
	}
	s.Handoff.publish(ctx, byChannel)
	return created, failed, nil
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
	loc     *time.Location // location()
}

// who identifies the recipient for frequency caps: the user id, or the addresses of a
// recipient who is not a user.
func (r *recipient) who() string {
	if r.user != nil {
		return "user:" + r.user.ID
	}
	var addrs []string
	for _, t := range r.targets {
		addrs = append(addrs, string(t.channel)+":"+t.to)
	}
	slices.Sort(addrs)
	return "addr:" + strings.Join(addrs, ",")
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
	return r.user.Settings.QuietHours.Until(at, r.location())
}

// location is the recipient's time zone: the user's, UTC for a raw address, a user without one
// or with one the system does not know. It is loaded once per Send (LoadLocation reads the
// zone's file each time).
func (r *recipient) location() *time.Location {
	if r.loc == nil {
		r.loc = time.UTC
		if r.user != nil && r.user.Timezone != "" {
			if l, err := time.LoadLocation(r.user.Timezone); err == nil {
				r.loc = l
			}
		}
	}
	return r.loc
}

// resolve finds the recipient's channel targets, restricted to the requested channels, with
// what the contacts service knows of them, in one round trip. A requested channel the
// recipient cannot be reached on gets one target with no address, which becomes a skipped
// delivery.
func (s *Sender) resolve(ctx context.Context, req *SendRequest, channels []delivery.Channel, explicit bool) (*recipient, error) {
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
	if r.user != nil {
		byChannel[delivery.Inbox] = []string{r.user.ID} // inbox.go
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
		out = append(out, Target{Channel: delivery.Email, Address: a.Email})
	}
	if a.Phone != "" {
		out = append(out, Target{Channel: delivery.SMS, Address: a.Phone})
	}
	for _, t := range a.IOSTokens {
		out = append(out, Target{Channel: delivery.IOS, Address: t})
	}
	for _, t := range a.AndroidTokens {
		out = append(out, Target{Channel: delivery.Android, Address: t})
	}
	return out
}

// validate checks the request's shape and normalises its addresses in place. Inline content is
// held to the limits that rendered templates are held to (see checkInline).
func validate(req *SendRequest, now time.Time, limits templates.Limits) error {
	var v errs.Violations
	checkLen(&v, "idempotency_key", req.IdempotencyKey, MaxIdempotencyKey)
	switch {
	case req.UserID != "" && req.Address != nil:
		v.Add("recipient", "set either user_id or address, not both")
	case req.UserID != "":
		checkLen(&v, "recipient.user_id", req.UserID, maxUserID)
	case req.Address != nil:
		validateAddress(req.Address, &v)
	default:
		v.Add("recipient", "is required: set user_id or address")
	}
	if !categoryPattern.MatchString(req.Category) {
		v.Add("category", "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
	if req.Fallback != nil && len(req.Channels) > 0 {
		v.Add("fallback", "set either channels or fallback, not both")
	}
	if f := req.Fallback; f != nil && f.StepTimeout > 0 && req.TTL > 0 && f.StepTimeout >= req.TTL {
		v.Add("fallback.step_timeout", "must be shorter than the ttl: the next step would expire before it goes")
	}
	if v.Count("channels", len(req.Channels), len(delivery.Channels)) {
		seen := map[delivery.Channel]bool{}
		for i, ch := range req.Channels {
			if seen[ch] {
				v.Add(fmt.Sprintf("channels[%d]", i), "is repeated")
			}
			seen[ch] = true
		}
	}
	switch {
	case req.Template != nil && req.Content != nil:
		v.Add("message", "set either template or content, not both")
	case req.Template != nil:
		if req.Template.Name == "" {
			v.Add("template.name", "is required")
		}
		checkLen(&v, "template.name", req.Template.Name, maxTemplateName)
		checkLen(&v, "template.locale", req.Template.Locale, templates.MaxLocaleLen)
		if req.Template.Version < 0 {
			v.Add("template.version", "must be positive")
		}
	case req.Content != nil:
		c := req.Content
		ok := checkLen(&v, "content.title", c.Title, maxTitle)
		ok = checkLen(&v, "content.subject", c.Subject, maxTitle) && ok
		ok = checkLen(&v, "content.body", c.Body, maxBody) && ok
		ok = checkLen(&v, "content.html", c.HTML, maxHTML) && ok
		if c.Body == "" && c.Title == "" && c.HTML == "" {
			v.Add("content", "needs at least a title, body or html")
		}
		ok = checkLinks(&v, c) && ok // short links: shortlinks.go
		// Content already refused for its size, its text or a link is not measured further.
		if ok && storableData(req.Data) {
			checkInline(&v, req, limits)
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
	if !v.Count(field, len(tokens), maxTokens) {
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

// inlineFields names the request's field behind each part of inline content.
var inlineFields = map[string]string{
	templates.PartPushTitle: "content.title", templates.PartPushBody: "content.body",
	templates.PartSMSBody: "content.body", templates.PartEmailSubject: "content.subject",
	templates.PartEmailHTML: "content.html", templates.PartEmailText: "content.body",
	templates.PartData: "data",
}

// checkInline holds inline content to the limits that a template's rendered parts are held to
// (templates.Check), on the channels the Send may use (forChannels), as render maps it to them:
// the push payload its title, body and data make, the SMS segments of its body, and the email
// subject's length and line. Each channel's first problem is a violation of the content field
// at fault (or of data, when the data alone is too large for a push payload).
func checkInline(v *errs.Violations, req *SendRequest, limits templates.Limits) {
	c := req.Content
	chs := req.Channels
	if req.Fallback != nil {
		chs = req.Fallback.Channels
	}
	r := forChannels(inlineRendered(c), chs)
	for _, channel := range []templates.Rendered{
		{PushTitle: r.PushTitle, PushBody: r.PushBody},
		{SMSBody: r.SMSBody},
		{EmailSubject: r.EmailSubject, EmailHTML: r.EmailHTML, EmailText: r.EmailText},
	} {
		err := templates.Check(channel, req.Data, limits)
		if te, ok := err.(*templates.Error); ok {
			field := inlineFields[te.Part]
			if te.Part == templates.PartEmailSubject && c.Subject == "" {
				field = "content.title" // the title stands in for the subject
			}
			v.Add(field, te.Err.Error())
		} else if err != nil {
			v.Add("content", err.Error())
		}
	}
}

// checkLen records a violation when s is over max bytes, or is text PostgreSQL cannot store,
// and reports whether s is fine.
func checkLen(v *errs.Violations, field, s string, max int) bool {
	if !v.Bytes(field, s, max) {
		return false
	}
	if !pgtext.Valid(s) {
		v.Add(field, "must be UTF-8 text without NUL characters")
		return false
	}
	return true
}

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
