// Package delivery holds the vocabulary that the notifier and the workers share about one
// delivery: its channel, its states, and the rendered content the notifier stores for the
// workers to send. The deliveries table in PostgreSQL is the contract between the two services;
// this package is its Go side.
package delivery

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Channel is a way of reaching a recipient. Its string is what the database stores and what the
// queue subjects are named after.
type Channel string

// The channels Herald delivers on.
const (
	IOS     Channel = "ios"
	Android Channel = "android"
	SMS     Channel = "sms"
	Email   Channel = "email"
	// Inbox is the user's in-app inbox: stored for the user and served by InboxService, not
	// sent to a provider. Its address is the user id.
	Inbox Channel = "inbox"
)

// Channels lists every channel, in the order the API enumerates them.
var Channels = []Channel{IOS, Android, SMS, Email, Inbox}

// ParseChannel returns the channel named s, or an error naming s.
func ParseChannel(s string) (Channel, error) {
	switch c := Channel(s); c {
	case IOS, Android, SMS, Email, Inbox:
		return c, nil
	}
	return "", fmt.Errorf("unknown channel %q", s)
}

// State is where a delivery is in its life. See DESIGN.md, "A delivery's life".
type State string

// The states of a delivery.
const (
	Scheduled State = "scheduled"
	// Waiting is a later step of a fallback chain, held until the steps before it end: it is
	// queued when they all failed (or the step timeout passed with no delivery event), and
	// skipped when one of them reached the recipient.
	Waiting   State = "waiting"
	Queued    State = "queued"
	Sending   State = "sending"
	Retrying  State = "retrying"
	Sent      State = "sent"
	Delivered State = "delivered"
	Bounced   State = "bounced"
	Skipped   State = "skipped"
	Failed    State = "failed"
	Dead      State = "dead"
	Expired   State = "expired"
	Canceled  State = "canceled"
	// Digested is an item of a digest that closed: its content went out in the digest's own
	// delivery (Delivery.DigestDeliveryID). While its digest is open an item is Scheduled with
	// ReasonDigest, due only at its expiry: the reconciler expires it then, and never
	// publishes it.
	Digested State = "digested"
)

// Terminal reports whether a delivery in state s will never be sent (again). Sent, delivered
// and bounced are terminal for sending even though provider events may still move them.
func (s State) Terminal() bool {
	switch s {
	case Scheduled, Waiting, Queued, Sending, Retrying:
		return false
	}
	return true
}

// Content is what the notifier rendered for one delivery, stored with it so that a worker (or a
// re-publish after a lost message) needs nothing else. Each channel uses its own fields: push
// uses Title, Body and Data; SMS uses Body; email uses Subject, HTML and Text.
type Content struct {
	Title   string         `json:"title,omitempty"`
	Body    string         `json:"body,omitempty"`
	Subject string         `json:"subject,omitempty"`
	HTML    string         `json:"html,omitempty"`
	Text    string         `json:"text,omitempty"`
	Data    map[string]any `json:"data,omitempty"`
}

// Priority is how urgent a notification is.
type Priority string

// The priorities.
const (
	Low    Priority = "low"
	Normal Priority = "normal"
	High   Priority = "high"
)

// Defaults shared by the services that move deliveries between states.
const (
	// DefaultTTL is how long after its send time a delivery may still be sent.
	DefaultTTL = 24 * time.Hour
)

// Fallback asks for a recipient's channels one after another instead of all at once: the first
// channel the recipient can be reached on goes first, and each next one only when the steps
// before it failed for good, or were sent StepTimeout ago with no delivery event (0: sent is
// enough).
type Fallback struct {
	Channels    []Channel     `json:"channels"`
	StepTimeout time.Duration `json:"step_timeout,omitempty"`
}

// Bounds of a fallback's step timeout: a shorter one would move on before most providers
// report a delivery, a longer one outlives most notifications' ttl.
const (
	MinStepTimeout = time.Second
	MaxStepTimeout = 7 * 24 * time.Hour
)

// Digest collects a recipient's notifications of a category on one channel into one message:
// the first item opens the digest, which closes Window after it, or at the next DailyAt in the
// recipient's time zone; its delivery is rendered by the stored template Template from the
// items. Exactly one of Window and DailyAt is set.
type Digest struct {
	Window   time.Duration `json:"window,omitempty"`
	DailyAt  string        `json:"daily_at,omitempty"`
	Template string        `json:"template"`
}

// Bounds of a digest's window: a second lets tests use a short one; a week outlives what a
// digest is for.
const (
	MinDigestWindow = time.Second
	MaxDigestWindow = 7 * 24 * time.Hour
)

// ParseDailyAt reads a daily time "HH:MM" (24-hour, two digits each).
func ParseDailyAt(s string) (hour, minute int, err error) {
	digit := func(i int) int { return int(s[i] - '0') }
	if len(s) != 5 || s[2] != ':' {
		return 0, 0, fmt.Errorf("must be HH:MM, e.g. 08:30")
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, 0, fmt.Errorf("must be HH:MM, e.g. 08:30")
		}
	}
	hour, minute = digit(0)*10+digit(1), digit(3)*10+digit(4)
	if hour > 23 || minute > 59 {
		return 0, 0, fmt.Errorf("must be between 00:00 and 23:59")
	}
	return hour, minute, nil
}

// CloseAt returns when a digest whose first item comes at at closes: Window later, or at the
// next DailyAt strictly after at in loc. A daily time that a daylight saving change skips on
// that day is read with the offset before the change: 02:30 on the day clocks go from 02:00
// to 03:00 is 03:30.
func (g Digest) CloseAt(at time.Time, loc *time.Location) time.Time {
	if g.DailyAt == "" {
		return at.Add(g.Window)
	}
	h, m, err := ParseDailyAt(g.DailyAt)
	if err != nil { // checked when the digest was accepted
		return at.Add(24 * time.Hour)
	}
	local := at.In(loc)
	day := func(y int, mo time.Month, d int) time.Time {
		t := time.Date(y, mo, d, h, m, 0, 0, loc)
		if t.Hour() != h || t.Minute() != m { // skipped by a daylight saving change
			t = time.Date(y, mo, d, h, m, 0, 0, time.FixedZone("", offsetBefore(y, mo, d, loc))).In(loc)
		}
		return t
	}
	next := day(local.Year(), local.Month(), local.Day())
	for !next.After(at) {
		local = local.AddDate(0, 0, 1)
		next = day(local.Year(), local.Month(), local.Day())
	}
	return next
}

// offsetBefore is loc's UTC offset at the start of the day: before a change later that day.
func offsetBefore(y int, mo time.Month, d int, loc *time.Location) int {
	_, off := time.Date(y, mo, d, 0, 0, 0, 0, loc).Zone()
	return off
}

// DigestRecord is a digest as the store keeps it: the open (or closed) collection of items for
// one app, recipient (user, or raw address when UserID is ""), category and channel.
type DigestRecord struct {
	ID       uuid.UUID
	AppID    uuid.UUID
	UserID   string
	Category string
	Channel  Channel
	// To is the address of the items, never logged.
	To       string
	Template string
	Locale   string
	// Closed is false while items may join; DeliveryID is the digest's delivery once closed
	// (zero when every item was canceled or expired and nothing was sent).
	Closed     bool
	CloseAt    time.Time
	CreatedAt  time.Time
	DeliveryID uuid.UUID
}

// ReasonDigest marks an item waiting in an open digest.
const ReasonDigest = "digest"
