// Package ops watches Herald's queues for operators: it samples, every few seconds, how many
// deliveries wait on each channel (from JetStream and PostgreSQL), how fast they are sent and
// how often they fail, the dead letters and the workers' provider circuits, keeps the last 15
// minutes in memory, and serves them as Prometheus gauges, to the status page and to
// AdminService.GetQueueStats.
package ops

import "time"

// ChannelSample is one channel's state at one moment.
type ChannelSample struct {
	Channel string `json:"channel"`
	// Pending are deliveries queued for a worker; InFlight are held by one, being sent.
	Pending  int64 `json:"pending"`
	InFlight int64 `json:"in_flight"`
	// Scheduled and Retrying count deliveries waiting for their time; DeadLetters those that
	// used up their attempts.
	Scheduled   int64 `json:"scheduled"`
	Retrying    int64 `json:"retrying"`
	DeadLetters int64 `json:"dead_letters"`
	// OldestAgeSeconds is how long the oldest message of the channel's queue that no worker has
	// received yet has waited.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// SendRate and FailureRate are provider calls per second over the last minute.
	SendRate    float64 `json:"send_rate"`
	FailureRate float64 `json:"failure_rate"`
}

// Sample is every channel at one moment.
type Sample struct {
	Time     time.Time       `json:"time"`
	Channels []ChannelSample `json:"channels"`
}

// DeadLetterGroup counts dead letters of one channel and reason.
type DeadLetterGroup struct {
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
	Count   int64  `json:"count"`
}

// Circuit is a provider circuit of one workers process, as it last reported it.
type Circuit struct {
	Channel  string    `json:"channel"`
	Provider string    `json:"provider"`
	Worker   string    `json:"worker"`
	State    string    `json:"state"` // "closed", "open" or "half-open"
	Updated  time.Time `json:"updated"`
	// Active marks, on a channel with several credentials (one circuit each), the one that
	// last took a message.
	Active bool `json:"active,omitempty"`
}

// Snapshot is what operators look at: the latest sample, the last 15 minutes of samples
// (oldest first), the dead letters by reason and the circuits.
type Snapshot struct {
	Latest      Sample            `json:"latest"`
	History     []Sample          `json:"history"`
	DeadLetters []DeadLetterGroup `json:"dead_letters"`
	Circuits    []Circuit         `json:"circuits"`
	// Engagement is the click-through per template, category and channel over the last
	// EngagementPeriod, counted every EngagementInterval; empty until counted.
	Engagement []EngagementRow `json:"engagement"`
}

// Source gives the current snapshot; *Watcher implements it.
type Source interface {
	Snapshot() Snapshot
}
