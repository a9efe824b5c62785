// Package workers turns queued deliveries into provider calls. The root package holds what a
// delivery looks like to a worker, the Sender interface that each provider implements, the
// error classes, and Decide, which turns a provider's answer into sent, retry later, or give up.
// The consumer (consumer/) pulls batches of delivery ids from JetStream, claims them through
// Store (internal/delivery), calls a Sender, and records the outcomes.
package workers

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
)

// Message is one claimed delivery, with everything a provider needs to send it.
type Message struct {
	DeliveryID     uuid.UUID
	NotificationID uuid.UUID
	Channel        delivery.Channel
	// To is the channel's address: an email address, an E.164 number or a device token. It must
	// never be logged.
	To string
	// UserID is the recipient's user id, or "" for a raw address.
	UserID string
	// App is the calling app's id and DeviceApp the app (iOS bundle id, Android package) the
	// device token was registered for; "" when unknown (a raw token, no re-check). A channel
	// with several credentials picks one by them (services/workers/route).
	App       string
	DeviceApp string
	Category  string
	// Critical and DefaultOptIn are the category's rules (see preference.Category).
	Critical     bool
	DefaultOptIn bool
	Priority     delivery.Priority
	Content      delivery.Content
	// UnsubscribeURL and UnsubscribeMailto, when set, go into an email's List-Unsubscribe
	// header (RFC 2369), with one-click unsubscribe (RFC 8058) for the URL.
	UnsubscribeURL    string
	UnsubscribeMailto string
	// Attempt counts provider calls for this delivery in this drive, this one included (1 on
	// the first try). A dead letter re-driven starts a new drive.
	Attempt int
	Drive   int
	// ExpiresAt is when the delivery stops being worth sending; providers that support it (APNs,
	// FCM) pass it on.
	ExpiresAt time.Time
	// AcceptedAt is when the notifier accepted the delivery.
	AcceptedAt time.Time
}

// Rules returns the message's category as the preference package sees it.
func (m *Message) Rules() preference.Category {
	return preference.Category{Name: m.Category, Critical: m.Critical, DefaultOptIn: m.DefaultOptIn}
}

// Result is what a provider answered when it accepted a message.
type Result struct {
	// ProviderMessageID is the provider's id for the message, when it gives one.
	ProviderMessageID string
	// Provider, when set, names the provider and credential that answered, for a Sender that
	// chooses among several (services/workers/route); it is set with an error too.
	Provider string
}

// Sender sends messages on one channel through one provider. Implementations are safe for
// concurrent use. Send returns nil when the provider accepted the message; otherwise an error
// that Classify understands (a *PermanentError, a *TransientError), or any other error, which
// counts as transient.
type Sender interface {
	// Provider names the provider, e.g. "sendgrid", for the delivery record and metrics.
	Provider() string
	Send(ctx context.Context, m *Message) (Result, error)
}

// Effect is what a provider's answer says about the recipient's address beyond this delivery.
// The workers publish it as an event; the contacts service applies it.
type Effect string

// The effects of provider answers.
const (
	NoEffect Effect = ""
	// DeactivateToken: the device token is no longer valid (APNs 410 Unregistered, FCM
	// UNREGISTERED or SENDER_ID_MISMATCH, an invalid token). Since, when set, is when the
	// provider learned it: a token registered again after that stays active.
	DeactivateToken Effect = "deactivate_token"
	// InvalidNumber: the phone number cannot receive SMS (Twilio 21211, 21612, 21614).
	InvalidNumber Effect = "invalid_number"
	// OptOut: the recipient opted out at the provider (Twilio 21610, a STOP reply).
	OptOut Effect = "opt_out"
)

// PermanentError is a provider answer that retrying cannot change: a bad token, an invalid
// address, a payload the provider refuses.
type PermanentError struct {
	// Reason is a short machine-readable cause, e.g. "bad_token", recorded as the delivery's
	// reason.
	Reason string
	// Effect is what the answer means for the address, if anything.
	Effect Effect
	// Since qualifies DeactivateToken (APNs gives the time the token became invalid).
	Since time.Time
	Err   error
}

func (e *PermanentError) Error() string { return fmt.Sprintf("permanent (%s): %v", e.Reason, e.Err) }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent returns a *PermanentError.
func Permanent(reason string, err error) error { return &PermanentError{Reason: reason, Err: err} }

// PermanentWithEffect returns a *PermanentError that also changes the address's standing.
func PermanentWithEffect(reason string, effect Effect, since time.Time, err error) error {
	return &PermanentError{Reason: reason, Effect: effect, Since: since, Err: err}
}

// ConfigError is a provider answer that blames Herald's configuration, not the message: bad
// credentials, a revoked key, a project mismatch. The delivery is not at fault, so the attempt
// is not counted; the channel pauses and operators are alerted.
type ConfigError struct {
	Err error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("provider configuration: %v", e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// Misconfigured returns a *ConfigError.
func Misconfigured(err error) error { return &ConfigError{Err: err} }

// TransientError is a provider answer worth retrying: a timeout, a 5xx, a rate limit.
type TransientError struct {
	// RetryAfter is the provider's requested wait (Retry-After); zero means use the backoff.
	RetryAfter time.Duration
	// Refused says the provider's answer proves it did not take the message (a 5xx, a 429, a
	// refused connection), so another provider may be asked at once without risking a second
	// copy. A timeout or a connection lost mid-call proves nothing and is not refused.
	Refused bool
	Err     error
}

func (e *TransientError) Error() string { return fmt.Sprintf("transient: %v", e.Err) }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient returns a *TransientError.
func Transient(retryAfter time.Duration, err error) error {
	return &TransientError{RetryAfter: retryAfter, Err: err}
}

// Refused returns a *TransientError whose answer proves the provider did not take the message.
func Refused(retryAfter time.Duration, err error) error {
	return &TransientError{RetryAfter: retryAfter, Refused: true, Err: err}
}

// NotAccepted reports whether err proves that the message did not reach the provider, so that
// sending it through another provider cannot make a second copy: a refusal (Refused), a
// configuration error (the provider refused Herald's credentials), a send that never left
// (NotSentError), or a refused TCP connection. Timeouts and other transient errors are
// ambiguous: the provider may have taken the message.
func NotAccepted(err error) bool {
	var tr *TransientError
	var ce *ConfigError
	var ns *NotSentError
	switch {
	case err == nil:
		return false
	case errors.As(err, &tr) && tr.Refused, errors.As(err, &ce), errors.As(err, &ns):
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Outcome is how a provider answered one send.
type Outcome int

// The outcomes of a send.
const (
	OutcomeSent Outcome = iota
	OutcomeRetry
	OutcomeFailed
)

// Classify maps a Send error to an outcome, the reason to record and, for retries, the wait the
// provider asked for. Errors of unknown kind are transient: retrying a send that might have
// worked is bounded by the attempt limit, giving up on one that would have worked is a loss.
func Classify(err error) (o Outcome, reason string, retryAfter time.Duration) {
	if err == nil {
		return OutcomeSent, "", 0
	}
	var perm *PermanentError
	if errors.As(err, &perm) {
		return OutcomeFailed, perm.Reason, 0
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return OutcomeRetry, "provider_config", 0
	}
	var tr *TransientError
	if errors.As(err, &tr) {
		return OutcomeRetry, "provider_unavailable", tr.RetryAfter
	}
	return OutcomeRetry, "provider_error", 0
}

// NotSentError is the answer of a Sender that did not call its provider: the channel's circuit
// is open, or its rate limit leaves no time to send within the lease. The delivery goes back
// unsent, its attempt not counted, to come again after RetryAfter.
type NotSentError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *NotSentError) Error() string { return "not sent: " + e.Reason }

// Verdict is what an attempt comes to. Decide makes it once; the store, the metrics and the log
// each read it.
type Verdict struct {
	// State is where the delivery goes: Sent, Failed, Dead, Retrying, or Skipped (decided
	// before the send, not by Decide). Empty when Release is set.
	State delivery.State
	// Release: the provider was not called, or blamed Herald's configuration rather than the
	// message. The delivery goes back unrecorded, its attempt not counted, and comes again
	// after RetryAfter.
	Release    bool
	RetryAfter time.Duration
	// RetryAt is when a Retrying delivery may be sent again.
	RetryAt time.Time
	// Reason is a short machine-readable cause when not sent.
	Reason string
	// Effect and Since: what a permanent answer means for the address.
	Effect Effect
	Since  time.Time
}

// Decide turns a Sender's answer to attempt (1-based, within the current drive) into a verdict
// under policy p: sent; failed for good, with the answer's effect on the address; retried after
// a backoff (at least the provider's Retry-After, jitter in [0, 1)) until the policy's attempts
// are used up, then dead. A configuration error or a send that did not happen (NotSentError)
// gives the delivery back instead: neither says anything of the message. Decide does nothing
// but decide.
func Decide(err error, attempt int, p Policy, now time.Time, jitter float64) Verdict {
	var ns *NotSentError
	if errors.As(err, &ns) {
		return Verdict{Release: true, RetryAfter: ns.RetryAfter, Reason: ns.Reason}
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return Verdict{Release: true, Reason: "provider_config"}
	}
	o, reason, retryAfter := Classify(err)
	switch o {
	case OutcomeSent:
		return Verdict{State: delivery.Sent}
	case OutcomeFailed:
		v := Verdict{State: delivery.Failed, Reason: reason}
		var perm *PermanentError
		if errors.As(err, &perm) {
			v.Effect, v.Since = perm.Effect, perm.Since
		}
		return v
	}
	if attempt >= p.MaxAttempts {
		return Verdict{State: delivery.Dead, Reason: reason}
	}
	return Verdict{State: delivery.Retrying, Reason: reason, RetryAt: now.Add(p.Backoff(attempt, retryAfter, jitter))}
}

// Attempt is one claimed delivery's send (or skip), to record.
type Attempt struct {
	Message  *Message
	Provider string
	Verdict
	Error             string // the provider's error, without addresses or secrets
	ProviderMessageID string
	Started           time.Time
	Latency           time.Duration
}

// Record returns what the store records of a.
func (a *Attempt) Record() delivery.Attempt {
	return delivery.Attempt{
		DeliveryID: a.Message.DeliveryID, Attempt: a.Message.Attempt, Drive: a.Message.Drive,
		State: a.State, RetryAt: a.RetryAt, Reason: a.Reason, Error: a.Error, Provider: a.Provider,
		ProviderMessageID: a.ProviderMessageID, Started: a.Started, Latency: a.Latency,
	}
}

// Store claims deliveries and records what became of them; internal/delivery's stores implement
// it.
type Store interface {
	// Claim takes the deliveries among ids that may be sent now for worker, each for lease, and
	// returns them. The others have nothing to do here: they are done, held by a live worker,
	// or wait for their time, which the reconciler sees to.
	Claim(ctx context.Context, worker string, lease time.Duration, ids []uuid.UUID) ([]delivery.Delivery, error)
	// Record stores the attempts and moves their deliveries on. A sent delivery always lands
	// (the provider has the message); other outcomes only while worker still holds the lease of
	// that attempt.
	Record(ctx context.Context, worker string, attempts []delivery.Attempt) error
	// Release gives claimed deliveries back unsent, their attempt not counted.
	Release(ctx context.Context, worker string, ids []uuid.UUID) error
}

// NewMessage returns the message of a claimed delivery.
func NewMessage(d *delivery.Delivery) *Message {
	var app string
	if d.AppID != uuid.Nil {
		app = d.AppID.String()
	}
	return &Message{App: app,
		DeliveryID: d.ID, NotificationID: d.NotificationID, Channel: d.Channel, To: d.To, UserID: d.UserID,
		Category: d.Category, Critical: d.Critical, DefaultOptIn: d.DefaultOptIn, Priority: d.Priority,
		Content: d.Content, Attempt: d.Attempts, Drive: d.Drive, ExpiresAt: d.ExpiresAt, AcceptedAt: d.CreatedAt,
	}
}

// Gate re-checks, just before a send, that the recipient still wants it: an opt-out or a
// suppression recorded after the notification was accepted stops it.
type Gate interface {
	// Check answers, for each message that must not be sent, why; messages not in the answer
	// go ahead. An error means it could not check, and nothing may be sent.
	Check(ctx context.Context, msgs []*Message) (map[uuid.UUID]string, error)
}

// Announcer tells the contacts service what provider answers mean for addresses (a dead token,
// an invalid number, an opt-out at the provider), and tells operators' tools about dead letters.
type Announcer interface {
	// Announce publishes a's effect; a must carry one.
	Announce(ctx context.Context, a Attempt) error
	// DeadLetter publishes that a, the last allowed attempt, failed and its delivery is dead.
	// The fact carries no address.
	DeadLetter(ctx context.Context, a Attempt) error
}

// Policy is a channel's retry policy.
type Policy struct {
	MaxAttempts int
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
}

// DefaultPolicy retries for about an hour and a half before giving up.
var DefaultPolicy = Policy{MaxAttempts: 10, BaseBackoff: 5 * time.Second, MaxBackoff: 15 * time.Minute}

// Backoff returns how long to wait after the given failed attempt (1-based): exponential with
// full jitter in its upper half, at least retryAfter when the provider asked for it. jitter is
// a number in [0, 1).
func (p Policy) Backoff(attempt int, retryAfter time.Duration, jitter float64) time.Duration {
	d := p.BaseBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	d = d/2 + time.Duration(float64(d/2)*jitter)
	return max(d, retryAfter)
}
