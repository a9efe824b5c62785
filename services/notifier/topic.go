package notifier

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
)

// Topics: SendToTopic records one send for every subscriber of a topic, and answers; the
// fan-out (Topics.Run) then pages through the subscribers from the contacts service and sends
// each page as SendBatch would (Sender.sendAll: settings, suppressions, caps and quiet hours
// per recipient, one group commit per page). Whole pages are the unit of progress: a page's
// recipients are committed, then the topic send's cursor moves past them. Each recipient's
// notification has an idempotency key made of the topic send and the user, so a page sent
// again after a crash (or by a replica that took over an expired lease) finds its
// notifications already there and creates nothing twice. Memory is bounded by one page,
// whatever the number of subscribers.
//
// CancelNotification of a topic send marks it canceled, which stops its fan-out, and then pages
// through the notifications it created, canceling their deliveries as for one notification.
// A page the fan-out commits while the cancel runs may come too late for the cancel's paging;
// its advance then fails, as the state changed, and the fan-out cancels that page itself.

// TopicState is where a topic send's fan-out is.
type TopicState string

// The states of a topic send.
const (
	TopicFanningOut TopicState = "fanning_out"
	TopicDone       TopicState = "done"
	// TopicCanceled: CancelNotification of the topic send stopped its fan-out, or came after it
	// was done.
	TopicCanceled TopicState = "canceled"
)

// TopicCounts are what a topic send's fan-out did with its subscribers so far.
type TopicCounts struct {
	// Recipients got their notification.
	Recipients int64
	// Skipped got none by decision: no longer a user, or no address on any usable channel.
	Skipped int64
	// Failed got none because it could not be made (e.g. the template failed for them).
	Failed int64
}

// TopicSend is one SendToTopic: the request every subscriber's Send is decided by, and how far
// its fan-out got.
type TopicSend struct {
	// ID is also the id of the topic send's own notification.
	ID    uuid.UUID
	AppID uuid.UUID
	Topic string
	State TopicState
	// Cursor is the contacts service's page token of the first page not yet committed ("": the
	// first page; once done, "").
	Cursor string
	TopicCounts
	CreatedAt time.Time
	DoneAt    *time.Time
	// Request is the send each subscriber gets (without a recipient); Caller the app's scope
	// when it was accepted, which each recipient's Send is held to.
	Request *SendRequest
	Caller  appkey.Caller
	// Deliveries counts the recipients' deliveries by state; filled only by GetNotification of
	// the topic send itself, once it is done.
	Deliveries map[delivery.State]int64
}

// TopicStore keeps topic sends and their leases.
type TopicStore interface {
	// CreateTopicSend records n, the topic send's own notification (no deliveries), and ts in
	// one transaction. It reports false, storing nothing, when n's idempotency key was already
	// used by the app.
	CreateTopicSend(ctx context.Context, n *Notification, ts *TopicSend) (bool, error)
	// TopicSend returns a topic send; with counts, its recipients' deliveries counted by
	// state. Errors: NotFound.
	TopicSend(ctx context.Context, id uuid.UUID, counts bool) (*TopicSend, error)
	// ClaimTopicSend leases to owner, for lease, the oldest topic send that is fanning out and
	// whose lease (if any) expired; nil when there is none.
	ClaimTopicSend(ctx context.Context, owner string, lease time.Duration) (*TopicSend, error)
	// AdvanceTopicSend moves ts's cursor from ts.Cursor to next, adds add to its counts, marks
	// it done when done, and renews owner's lease, if owner still holds it and the cursor is
	// still ts.Cursor; it reports whether it did. With next == ts.Cursor and nothing to add it
	// only renews the lease.
	AdvanceTopicSend(ctx context.Context, ts *TopicSend, owner, next string, add TopicCounts, done bool, lease time.Duration) (bool, error)
	// CancelTopicSend marks a topic send canceled at at, whatever its state, and ends its lease:
	// from then on no claim takes it and no advance moves it. Canceling it again changes
	// nothing.
	CancelTopicSend(ctx context.Context, id uuid.UUID, at time.Time) error
	// TopicRecipients returns the ids of up to limit notifications the topic send created
	// (not its own), in id order, after the id after (uuid.Nil: from the first).
	TopicRecipients(ctx context.Context, id, after uuid.UUID, limit int) ([]uuid.UUID, error)
	// CancelNotifications cancels the deliveries of notifications that are not yet being
	// sent, as Notifications.Cancel does for one, and returns how many.
	CancelNotifications(ctx context.Context, ids []uuid.UUID, at time.Time) (int, error)
}

// SubscriberLister pages through a topic's subscribers; the contacts package implements it
// with ContactsService.ListSubscribers.
type SubscriberLister interface {
	// Subscribers returns up to max subscribers of topic, from the page that page names (""
	// the first), and the token of the next page ("": this was the last).
	Subscribers(ctx context.Context, topic, page string, max int) (ids []string, next string, err error)
}

// Topics serves SendToTopic and runs the fan-out of topic sends.
type Topics struct {
	Sender      *Sender
	Store       TopicStore
	Subscribers SubscriberLister
	Log         *slog.Logger
	// Owner names this process in leases; it must differ between processes.
	Owner string
	// Lease is how long a fan-out holds a topic send without renewing it: after a crash,
	// another replica takes over once it expires. Default 30 s.
	Lease time.Duration
	// Interval is how often an idle fan-out looks for topic sends; SendToTopic on this
	// replica wakes it sooner. Default 1 s.
	Interval time.Duration
	// PageSize is how many subscribers a page holds; at most MaxBatch. Default 1,000.
	PageSize int
	// Metrics registers the fan-out's metrics (nil: none).
	Metrics prometheus.Registerer

	wake        chan struct{} // SendToTopic wakes Run; nil unless made by NewTopics
	subscribers *prometheus.CounterVec
	retries     prometheus.Counter
}

// topicPattern is the form of a topic name, as the contacts service checks it.
var topicPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

func (t *Topics) lease() time.Duration { return cmp.Or(t.Lease, 30*time.Second) }

func (t *Topics) pageSize() int { return min(cmp.Or(t.PageSize, MaxBatch), MaxBatch) }

// NewTopics returns Topics ready for SendToTopic and Run.
func NewTopics(t Topics) *Topics {
	t.wake = make(chan struct{}, 1)
	if t.Log == nil {
		t.Log = slog.New(slog.DiscardHandler)
	}
	if t.Owner == "" {
		t.Owner = uuid.NewString()
	}
	t.subscribers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_topic_subscribers_total",
		Help: "Subscribers of topic sends reached by the fan-out, by outcome: recipient (their notification was made), skipped (no longer a user, or no address), failed.",
	}, []string{"outcome"})
	t.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_topic_page_retries_total",
		Help: "Pages of topic sends sent again after a failure (the contacts service or the database unavailable); their recipients are made once.",
	})
	if t.Metrics != nil {
		t.Metrics.MustRegister(t.subscribers, t.retries)
	}
	return &t
}

// SendToTopic records a send to every subscriber of topic, decided as req (which names no
// recipient) would be for each, and returns its notification (no deliveries) once it is
// durably recorded; the fan-out follows. A repeated idempotency key answers the first topic
// send, Duplicate. Errors: Invalid (with field violations), Conflict (idempotency key reused
// with another request), NotFound (category, template), PermissionDenied, Exhausted.
func (t *Topics) SendToTopic(ctx context.Context, caller appkey.Caller, topic string, req *SendRequest) (*SendResult, error) {
	s := t.Sender
	if err := s.admit(ctx, caller); err != nil {
		return nil, err
	}
	now := s.now()
	// The request is validated as each recipient's Send will be; the recipient is a stand-in.
	var v errs.Violations
	if !topicPattern.MatchString(topic) {
		v.Add("topic", "must be 1-64 lower-case letters, digits, '_', '-' or '.', starting with a letter")
	}
	if req.UserID != "" || req.Address != nil {
		v.Add("recipient", "a topic send has no recipient: its subscribers are")
	}
	probe := *req
	probe.UserID = "topic"
	err := validate(&probe, now, s.Templates.Limits)
	if e, ok := err.(*errs.Error); ok && e.Kind == errs.Invalid {
		for _, f := range e.Fields {
			v.Add(f.Field, f.Reason)
		}
	} else if err != nil {
		return nil, err
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	// What would refuse every recipient alike is refused now: the category, the app's scope,
	// the template.
	cat, err := s.Categories.category(ctx, req.Category)
	if err != nil {
		return nil, err
	}
	requested, field := req.Channels, "channels"
	if req.Fallback != nil {
		requested, field = req.Fallback.Channels, "fallback.channels"
	}
	if _, err := scope(caller, cat, requested, field); err != nil {
		return nil, err
	}
	if req.Template != nil {
		if _, _, err := s.Templates.template(ctx, req.Template.Name, req.Template.Version); err != nil {
			return nil, err
		}
	} else if _, err := s.render(ctx, &probe, "", &Notification{}); err != nil { // inline: the same for all
		return nil, err
	}
	if req.IdempotencyKey != "" {
		if res, err, done := t.replay(ctx, caller, req, now); done {
			return res, err
		}
	}

	n := &Notification{
		ID: mustV7(), AppID: caller.AppID, IdempotencyKey: req.IdempotencyKey, RequestHash: req.RequestHash,
		Category: req.Category, Template: req.Template, Priority: cmp.Or(req.Priority, delivery.Normal),
		SendAt: now, CreatedAt: now,
	}
	if req.SendAt.After(now) {
		n.SendAt = req.SendAt
	}
	n.ExpiresAt = n.SendAt.Add(cmp.Or(req.TTL, delivery.DefaultTTL))
	n.TopicSendID = n.ID
	stored := *req
	ts := &TopicSend{ID: n.ID, AppID: caller.AppID, Topic: topic, State: TopicFanningOut, CreatedAt: now,
		Request: &stored, Caller: appkey.Caller{AppID: caller.AppID, AppName: caller.AppName,
			AllowedCategories: caller.AllowedCategories, AllowedChannels: caller.AllowedChannels}}
	created, err := t.Store.CreateTopicSend(ctx, n, ts)
	if err != nil {
		return nil, err
	}
	if !created { // a concurrent SendToTopic with the same key won the race
		res, err, _ := t.replay(ctx, caller, req, now)
		return res, err
	}
	n.Topic = ts
	t.Log.Info("topic send accepted", "notification_id", n.ID, "topic", topic, "app", caller.AppName)
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return &SendResult{Notification: n}, nil
}

// replay answers a SendToTopic whose idempotency key names an earlier one, and reports whether
// it did (done false: the key is free).
func (t *Topics) replay(ctx context.Context, caller appkey.Caller, req *SendRequest, now time.Time) (*SendResult, error, bool) {
	s := t.Sender
	prev, err := s.Store.NotificationByKey(ctx, caller.AppID, req.IdempotencyKey)
	switch {
	case err == nil && now.Sub(prev.CreatedAt) < IdempotencyWindow:
		res, err := s.replay(prev, req)
		return res, err, true
	case err == nil: // the key's window is over: it may name a new topic send
		if err := s.Store.ReleaseKey(ctx, caller.AppID, req.IdempotencyKey, now.Add(-IdempotencyWindow)); err != nil {
			return nil, err, true
		}
	case !errs.Is(err, errs.NotFound):
		return nil, err, true
	}
	return nil, nil, false
}

// GetNotification returns a notification the calling app sent, as Sender.GetNotification
// does, with its topic send: the progress on the topic send's own notification, the topic on
// one it created. Errors: NotFound.
func (t *Topics) GetNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	n, err := t.Sender.GetNotification(ctx, caller, id)
	if err != nil || n.TopicSendID == uuid.Nil {
		return n, err
	}
	ts, err := t.Store.TopicSend(ctx, n.TopicSendID, false)
	if errs.Is(err, errs.NotFound) { // pruned by hand: the notification stands without it
		return n, nil
	}
	if err != nil {
		return nil, err
	}
	// The deliveries are counted once the fan-out is over (done or canceled): counting reads
	// every one of them (about half a second for 200,000), which callers polling the progress
	// must not pay for each poll while the pages go by.
	if n.TopicSendID == n.ID && ts.State != TopicFanningOut {
		if ts, err = t.Store.TopicSend(ctx, n.TopicSendID, true); err != nil {
			return nil, err
		}
	}
	if n.TopicSendID != n.ID { // a recipient's: only which topic send it came from
		ts = &TopicSend{ID: ts.ID, Topic: ts.Topic}
	}
	n.Topic = ts
	return n, nil
}

// cancelPage is how many recipients' notifications a topic send's cancel takes at a time.
const cancelPage = 1000

// CancelNotification cancels a notification the calling app sent, as Sender.CancelNotification
// does, and returns it as GetNotification does. A topic send's own notification also stops its
// fan-out (no more subscribers are reached, even after it was done) and cancels the deliveries
// not yet being sent of every notification it created. Canceling again does it all again,
// changing nothing more. Errors: NotFound.
func (t *Topics) CancelNotification(ctx context.Context, caller appkey.Caller, id uuid.UUID) (*Notification, error) {
	n, err := t.Sender.CancelNotification(ctx, caller, id)
	if err != nil {
		return nil, err
	}
	if n.TopicSendID == n.ID {
		// A client that hangs up must not leave the recipients half canceled.
		ctx := context.WithoutCancel(ctx)
		at := t.Sender.now()
		if err := t.Store.CancelTopicSend(ctx, id, at); err != nil {
			return nil, err
		}
		canceled, err := t.cancelRecipients(ctx, id, at)
		if err != nil {
			return nil, err
		}
		t.Log.Info("canceled topic send", "notification_id", id, "app", caller.AppName, "deliveries", canceled)
	}
	return t.GetNotification(ctx, caller, id)
}

// cancelRecipients cancels the deliveries of the notifications topic send id created, a page
// at a time by id, and returns how many.
func (t *Topics) cancelRecipients(ctx context.Context, id uuid.UUID, at time.Time) (int, error) {
	total, after := 0, uuid.Nil
	for {
		ids, err := t.Store.TopicRecipients(ctx, id, after, cancelPage)
		if err != nil {
			return total, err
		}
		if len(ids) > 0 {
			n, err := t.Store.CancelNotifications(ctx, ids, at)
			if err != nil {
				return total, err
			}
			total += n
		}
		if len(ids) < cancelPage {
			return total, nil
		}
		after = ids[len(ids)-1]
	}
}

// RecipientKey is the idempotency key of the notification a topic send creates for a
// subscriber: the same on every replay of the page.
func RecipientKey(topicSend uuid.UUID, userID string) string {
	return "topic:" + topicSend.String() + ":" + userID
}

// Run fans out topic sends until ctx ends: it leases one, pages through its subscribers to the
// end, and looks for the next.
func (t *Topics) Run(ctx context.Context) {
	tick := time.NewTicker(cmp.Or(t.Interval, time.Second))
	defer tick.Stop()
	for {
		for {
			ts, err := t.Store.ClaimTopicSend(ctx, t.Owner, t.lease())
			if err != nil {
				if ctx.Err() == nil {
					t.Log.Warn("claim a topic send", "err", err)
				}
				break
			}
			if ts == nil {
				break
			}
			t.fanOut(ctx, ts)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.wake:
		}
	}
}

// fanOut sends ts to its subscribers, page by page, while it holds the lease.
func (t *Topics) fanOut(ctx context.Context, ts *TopicSend) {
	log := t.Log.With("notification_id", ts.ID, "topic", ts.Topic)
	log.Info("fanning out a topic send", "from_cursor", ts.Cursor != "")
	backoff, attempt := 100*time.Millisecond, 0
	for ctx.Err() == nil {
		began := time.Now()
		ids, next, err := t.Subscribers.Subscribers(ctx, ts.Topic, ts.Cursor, t.pageSize())
		listed := time.Since(began)
		var add TopicCounts
		var made []uuid.UUID
		if err == nil {
			attempt++
			add, made, err = t.sendPage(ctx, ts, ids, attempt >= maxPageAttempts)
		}
		log.Debug("topic send page", "subscribers", len(ids), "list", listed, "send", time.Since(began)-listed, "err", err)
		if err != nil { // transient: the page is sent again; its recipients are made once
			t.retries.Inc()
			log.Warn("topic send page failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			if ok, err := t.Store.AdvanceTopicSend(ctx, ts, t.Owner, ts.Cursor, TopicCounts{}, false, t.lease()); err == nil && !ok {
				t.stopped(ctx, ts, made)
				return
			}
			continue
		}
		backoff, attempt = 100*time.Millisecond, 0
		cursor := next
		ok, err := t.Store.AdvanceTopicSend(ctx, ts, t.Owner, cursor, add, next == "", t.lease())
		if err != nil {
			log.Warn("advance the topic send", "err", err)
			continue // the page is sent again: nothing twice
		}
		if !ok {
			t.stopped(ctx, ts, made)
			return
		}
		ts.Cursor = cursor
		t.subscribers.WithLabelValues("recipient").Add(float64(add.Recipients))
		t.subscribers.WithLabelValues("skipped").Add(float64(add.Skipped))
		t.subscribers.WithLabelValues("failed").Add(float64(add.Failed))
		ts.Recipients, ts.Skipped, ts.Failed = ts.Recipients+add.Recipients, ts.Skipped+add.Skipped, ts.Failed+add.Failed
		if next == "" {
			log.Info("topic send done", "recipients", ts.Recipients, "skipped", ts.Skipped, "failed", ts.Failed)
			return
		}
	}
}

// stopped ends a fan-out whose advance failed: another replica took the lease over, or the
// topic send was canceled. A cancel's paging may have gone by before the page just sent was
// committed, so the page's notifications (made) are canceled here; the state it read is
// final, as a canceled topic send never changes again. Failures are retried until they pass or
// ctx ends: the page would otherwise be sent.
func (t *Topics) stopped(ctx context.Context, ts *TopicSend, made []uuid.UUID) {
	log := t.Log.With("notification_id", ts.ID, "topic", ts.Topic)
	backoff := 100 * time.Millisecond
	for {
		err := t.cancelPage(ctx, ts, made)
		if err == nil {
			return
		}
		log.Warn("stop the fan-out (a canceled topic send's page is canceled); retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// cancelPage cancels the deliveries of made if ts was canceled.
func (t *Topics) cancelPage(ctx context.Context, ts *TopicSend, made []uuid.UUID) error {
	cur, err := t.Store.TopicSend(ctx, ts.ID, false)
	if err != nil {
		return err
	}
	if cur.State != TopicCanceled {
		t.Log.Info("lost the topic send's lease", "notification_id", ts.ID, "topic", ts.Topic)
		return nil
	}
	n := 0
	if len(made) > 0 {
		if n, err = t.Store.CancelNotifications(ctx, made, t.Sender.now()); err != nil {
			return err
		}
	}
	t.Log.Info("topic send canceled; fan-out stopped", "notification_id", ts.ID, "topic", ts.Topic,
		"page_deliveries_canceled", n)
	return nil
}

// maxPageAttempts is how many times a page is sent before its recipients' unexpected errors
// count as failed instead of holding the fan-out back; unavailable services are waited out
// however long it takes.
const maxPageAttempts = 8

// sendPage sends ts to one page of subscribers, counts what became of them, and returns the
// ids of the notifications they have, even when the page failed (a cancel must reach them).
// An error means the page must be sent again: a recipient's answer that may change on a retry
// (the database or the contacts service unavailable; until last, an unexpected error) fails
// the whole page.
func (t *Topics) sendPage(ctx context.Context, ts *TopicSend, ids []string, last bool) (TopicCounts, []uuid.UUID, error) {
	var c TopicCounts
	if len(ids) == 0 {
		return c, nil, nil
	}
	reqs := make([]*SendRequest, len(ids))
	for i, id := range ids {
		r := *ts.Request
		r.UserID, r.Address, r.TopicSendID = id, nil, ts.ID
		r.IdempotencyKey = RecipientKey(ts.ID, id)
		// Deterministic, so that a replay of the page is recognised as the same request.
		h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%x", ts.ID, id, ts.Request.RequestHash))
		r.RequestHash = h[:]
		reqs[i] = &r
	}
	// One lookup of the whole page fills the contacts cache, so that the recipients' own
	// lookups are answered from memory instead of in shared misses, a wave at a time: it makes
	// a page about five times faster.
	if dir := t.Sender.Directory; dir != nil {
		if _, err := dir.Resolve(ctx, ids, nil); err != nil {
			return TopicCounts{}, nil, err
		}
	}
	results := t.Sender.sendAll(ctx, ts.Caller, reqs)
	made := make([]uuid.UUID, 0, len(results))
	for _, res := range results {
		if res.Err == nil && res.Result != nil {
			made = append(made, res.Result.Notification.ID)
		}
	}
	for i, res := range results {
		switch kind := errs.KindOf(res.Err); {
		case res.Err == nil:
			c.Recipients++
		case kind == errs.Unavailable || (!last && (kind == errs.Internal || kind == errs.Exhausted)):
			return TopicCounts{}, made, fmt.Errorf("subscriber %d of the page: %w", i, res.Err)
		case kind == errs.NotFound, // the user was deleted (the template was checked at accept)
			kind == errs.Invalid && onlyRecipient(res.Err):
			c.Skipped++
		default:
			c.Failed++
			t.Log.Warn("topic send recipient failed", "notification_id", ts.ID, "err", res.Err)
		}
	}
	return c, made, nil
}

// onlyRecipient reports whether an Invalid error is about the recipient alone (no address on
// any channel the send may use), not about the request.
func onlyRecipient(err error) bool {
	e, ok := err.(*errs.Error)
	if !ok || len(e.Fields) == 0 {
		return false
	}
	for _, f := range e.Fields {
		if f.Field != "recipient" {
			return false
		}
	}
	return true
}
