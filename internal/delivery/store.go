package delivery

import (
	"time"

	"github.com/google/uuid"
)

// Delivery is one channel target of a notification, as the store keeps it.
type Delivery struct {
	ID             uuid.UUID
	NotificationID uuid.UUID
	// UserID is the recipient's user id; "" for a raw address.
	UserID string
	// AppID is the calling app's id; zero when unknown (a delivery made before it was kept).
	AppID   uuid.UUID
	Channel Channel
	// To is the address (email, E.164 phone, device token); empty for a delivery skipped for
	// lack of one. Never logged.
	To       string
	Category string
	Priority Priority
	// Critical and DefaultOptIn are the category's rules when the notification was accepted;
	// the workers apply them when they re-check the recipient's settings.
	Critical     bool
	DefaultOptIn bool
	State        State
	Reason       string
	Content      Content
	// Step is the delivery's place in its notification's fallback chain, from 1; 0 when the
	// notification goes to every channel at once. A step starts only when every earlier one
	// failed for good, or was sent StepTimeout ago with no delivery event (0: sent is enough).
	Step        int
	StepTimeout time.Duration
	// Digest, when creating a delivery Scheduled with ReasonDigest, collects it as an item of
	// its recipient's open digest for its channel (opening one that closes at CloseAt when none
	// is open). Not stored as such: DigestID names the digest.
	Digest *DigestItem
	// DigestID is the digest the delivery is an item of (zero for none), and DigestDeliveryID
	// the delivery that sent it once the digest closed (State Digested).
	DigestID         uuid.UUID
	DigestDeliveryID uuid.UUID
	// Attempts counts the claims of the current drive; a re-driven dead letter starts a new
	// drive with a fresh budget.
	Attempts          int
	Drive             int
	LastError         string
	Provider          string
	ProviderMessageID string
	// DueAt is when the reconciler looks at the delivery next, if nothing moved it before: the
	// send time of a scheduled delivery, the end of a retry's backoff, the re-publish deadline
	// of a queued one, the lease expiry of a sending one. Nil once terminal.
	DueAt     *time.Time
	ExpiresAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
	SentAt    *time.Time
}

// DigestItem is what opens a digest for a delivery collected into one when none is open.
type DigestItem struct {
	Template string
	Locale   string
	CloseAt  time.Time
}

// InDigest reports whether d, being created, goes into its recipient's open digest: it carries
// a Digest and is scheduled (a digest's item the plan held back for another reason is not).
func (d *Delivery) InDigest() bool { return d.Digest != nil && d.State == Scheduled }

// SendTime returns when d would be sent: its due time when scheduled (its digest's close time
// for a digest's item being made), now otherwise.
func (d *Delivery) SendTime(now time.Time) time.Time {
	if d.InDigest() { // an item goes when its digest closes
		return d.Digest.CloseAt
	}
	if d.DueAt != nil && d.DueAt.After(now) && d.State == Scheduled {
		return *d.DueAt
	}
	return now
}

// Attempt is what became of one claim of a delivery, to record: the provider's answer, or a
// skip decided at send time. It answers the claim it names (Attempt and Drive), so an answer
// that comes after the lease passed to another worker changes nothing but the attempt log.
type Attempt struct {
	DeliveryID uuid.UUID
	Attempt    int
	Drive      int
	// State is where the delivery goes: Sent, Failed, Skipped, Dead, or Retrying until RetryAt.
	State             State
	RetryAt           time.Time
	Reason            string
	Error             string // the provider's error, without addresses or secrets
	Provider          string
	ProviderMessageID string
	Started           time.Time
	Latency           time.Duration
}

// Outcome names the attempt log's outcome of a state an attempt moves its delivery to.
func (s State) Outcome() string {
	if s == Retrying {
		return "retry"
	}
	return string(s)
}

// Due is a delivery the reconciler took because its deadline passed, and that must go on its
// channel's queue again, unless Held.
type Due struct {
	ID      uuid.UUID
	Channel Channel
	// OnTime marks a delivery whose time came (a scheduled one, or a retry whose backoff is
	// over): no sign that a message was lost.
	OnTime bool
	// Held marks a queued delivery whose message is most likely still waiting in its queue
	// (published after the oldest message no worker has received yet): it is not published
	// again, and is looked at once more after the re-publish deadline.
	Held bool
}

// DeadFilter selects dead letters. The zero filter selects all of them.
type DeadFilter struct {
	IDs     []uuid.UUID
	Channel Channel
	Reason  string
}

// Event is a provider's report about a delivery it accepted that moves it on: delivered or
// bounced. Only a delivery in one of the states From lists moves, and of several events for one
// delivery the earliest counts; the provider and its message id fill in what the worker has
// not recorded yet.
type Event struct {
	DeliveryID        uuid.UUID
	State             State // Delivered or Bounced
	Reason            string
	Provider          string
	ProviderMessageID string
	EventID           string
	OccurredAt        time.Time
}

// EventFrom lists the states a provider's event may move a delivery from: a delivery the
// provider accepted, also one whose worker has not recorded it yet.
var EventFrom = []State{Sending, Sent, Retrying, Queued}

// Reasons the store records on its own.
const (
	ReasonTTL         = "ttl"
	ReasonCanceled    = "canceled"
	ReasonUserDeleted = "user_deleted"
	// ReasonFallbackNotNeeded skips the later steps of a fallback chain once an earlier one
	// reached the recipient.
	ReasonFallbackNotNeeded = "fallback_not_needed"
	// ReasonStepTimeout marks a sent step of a fallback chain whose step timeout ran out with no
	// delivery event, when the next step goes: why the chain moved on.
	ReasonStepTimeout = "step_timeout"
)
