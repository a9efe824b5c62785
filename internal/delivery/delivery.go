// Package delivery holds the vocabulary that the notifier and the workers share about one
// delivery: its channel, its states, and the rendered content the notifier stores for the
// workers to send. The deliveries table in PostgreSQL is the contract between the two services;
// this package is its Go side.
package delivery

import (
	"fmt"
	"time"
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
)

// Channels lists every channel, in the order the API enumerates them.
var Channels = []Channel{IOS, Android, SMS, Email}

// ParseChannel returns the channel named s, or an error naming s.
func ParseChannel(s string) (Channel, error) {
	switch c := Channel(s); c {
	case IOS, Android, SMS, Email:
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
