// Package notifier decides what Herald sends. It accepts a notification from a calling app,
// validates it, resolves the recipient's channel targets, renders the content, records the
// notification and one delivery per target in PostgreSQL, and hands each delivery to its
// channel's queue. The reconciler in this package re-publishes deliveries whose message was
// lost, releases deliveries held by dead workers, fires scheduled ones and expires stale ones.
//
// The API's work comes in parts, each with only the dependencies it uses, so that a change to
// one (and its tests) does not reach the others: Sender accepts notifications and answers for
// them, Templates and Categories keep what a Send is decided with, Apps keeps the calling apps
// and their keys, and Operations serves dead letters, statistics and engagement. Handoff puts
// deliveries on their queues for Sender and Operations.
//
// The root package holds the domain and the interfaces it consumes; postgres/ stores it,
// queue/ publishes to JetStream, rpc/ serves the gRPC API, daemon/ wires a running service.
package notifier

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/contactscache"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/ratelimit"
)

// Notification is one accepted Send: who it is for, what it says, and its deliveries.
type Notification struct {
	ID             uuid.UUID
	AppID          uuid.UUID
	IdempotencyKey string
	// RequestHash fingerprints the request, so a reused idempotency key with a different request
	// is told apart from a retry.
	RequestHash []byte
	Category    string
	// Critical and DefaultOptIn are the category's rules when the notification was accepted;
	// the workers apply them when they re-check the user's settings.
	Critical     bool
	DefaultOptIn bool
	UserID       string
	Template     *TemplateRef
	Priority     delivery.Priority
	SendAt       time.Time
	ExpiresAt    time.Time
	CreatedAt    time.Time
	Deliveries   []*Delivery
	// Links are the short links in the deliveries' content, stored with them (see shorten).
	Links []Link
	// TopicSendID names the topic send that created the notification, or, on a topic send's
	// own notification, itself (topic.go); uuid.Nil otherwise.
	TopicSendID uuid.UUID
	// Topic is the topic send, with its progress on its own notification; GetNotification
	// fills it in.
	Topic *TopicSend
}

// Delivery is one channel target of a notification; internal/delivery keeps it and makes its
// transitions.
type Delivery = delivery.Delivery

// TemplateRef names a stored template version.
type TemplateRef struct {
	Name    string
	Version int    // 0 means the latest
	Locale  string // "" means the default
}

// App is a calling service.
type App struct {
	ID        uuid.UUID
	Name      string
	Admin     bool
	CreatedAt time.Time
	// AllowedCategories and AllowedChannels scope what the app may send; empty means all.
	AllowedCategories []string
	AllowedChannels   []delivery.Channel
	// RatePerSecond and Burst bound its Send calls across replicas; 0 means the default.
	RatePerSecond float64
	Burst         int
	// Contacts is what the app may do with the contacts service's data.
	Contacts appkey.ContactsAccess
}

// KeyInfo describes an app key without its secret.
type KeyInfo struct {
	ID        string
	AppID     uuid.UUID
	CreatedAt time.Time
	RevokedAt *time.Time
}

// User is what the notifier needs to know of a recipient from the contacts service: the user
// as the contacts cache resolves them.
type User = contactscache.User

// Target is one address on one channel.
type Target = contactscache.Target

// Recipients is what the contacts service knows of the recipients of a Send.
type Recipients struct {
	Users        map[string]User
	Suppressions []preference.Suppression
}

// The stores below are cut by the part that consumes each, so that a part, and its test fakes,
// see only the tables it works on. The postgres package implements all of them with one Store;
// internal/delivery's stores implement UnpublishedStore and DeadLetterStore.

// Notifications keeps the notifications a Sender accepts.
type Notifications interface {
	// CreateNotifications records notifications with their deliveries (and short links), all
	// in one transaction (group commit: one log flush for all of them). A notification whose
	// idempotency key its app already used is not written, and reported not created. When one
	// notification cannot be stored, the others are, and its error is reported in its place;
	// err is for the whole batch (the database is unavailable).
	CreateNotifications(ctx context.Context, ns []*Notification) (created []bool, errs []error, err error)
	// NotificationByKey returns the app's notification with that idempotency key, or a NotFound
	// error.
	NotificationByKey(ctx context.Context, appID uuid.UUID, key string) (*Notification, error)
	// ReleaseKey frees an idempotency key held by a notification created before olderThan.
	ReleaseKey(ctx context.Context, appID uuid.UUID, key string, olderThan time.Time) error
	// Cancel cancels the app's notification's deliveries that are not yet being sent and
	// returns the notification. Errors: NotFound.
	Cancel(ctx context.Context, appID, id uuid.UUID, at time.Time) (*Notification, error)
	// Notification returns the app's notification with its deliveries, or a NotFound error.
	Notification(ctx context.Context, appID, id uuid.UUID) (*Notification, error)
}

// TemplateStore keeps the template versions of Templates.
type TemplateStore interface {
	// CreateTemplate stores t, created by the app t.AppID, as the next version of its name and
	// returns it as stored. When the name exists, may (if not nil) is first given the app that
	// created its version 1 (uuid.Nil for versions older than the record of apps), and its error
	// is returned instead.
	CreateTemplate(ctx context.Context, t *Template, may func(owner uuid.UUID) error) (*Template, error)
	// Template returns a template version (0: the latest), or a NotFound error.
	Template(ctx context.Context, name string, version int) (*Template, error)
}

// CategoryStore keeps the categories of Categories.
type CategoryStore interface {
	// Categories returns every category.
	Categories(ctx context.Context) ([]preference.Category, error)
	// PutCategory creates or replaces a category.
	PutCategory(ctx context.Context, c preference.Category) error
}

// AppStore keeps the calling apps of Apps and their keys.
type AppStore interface {
	// CreateApp stores a new app, or returns a Conflict error when the name is taken.
	CreateApp(ctx context.Context, a *App) error
	// UpdateApp replaces an app's scopes (contacts access included) and rates. Errors: NotFound.
	UpdateApp(ctx context.Context, a *App) error
	// Apps lists every app by name.
	Apps(ctx context.Context) ([]App, error)
	// AddKey stores a key's hash for an app. Errors: NotFound (app), FailedPrecondition (the
	// app has maxActive active keys already).
	AddKey(ctx context.Context, appID uuid.UUID, keyID string, secretHash []byte, maxActive int) error
	// RevokeKey revokes a key (idempotently). Errors: NotFound.
	RevokeKey(ctx context.Context, keyID string, at time.Time) (KeyInfo, error)
	// Keys lists an app's keys, newest first. Errors: NotFound (app).
	Keys(ctx context.Context, appID uuid.UUID) ([]KeyInfo, error)
}

// StatsStore counts deliveries and records what became of them, for Operations.
type StatsStore interface {
	// DeliveryStats counts deliveries accepted since then, per template, category and channel.
	DeliveryStats(ctx context.Context, since time.Time) ([]DeliveryStats, error)
	// DeliveryApp returns the app that sent a delivery. Errors: NotFound.
	DeliveryApp(ctx context.Context, deliveryID uuid.UUID) (uuid.UUID, error)
	// RecordProviderEvents stores each event once, keyed by (Provider, ID), and in the same
	// transaction moves the deliveries of the new ones (see ProviderEventKind.DeliveryState and
	// delivery.EventFrom). It returns the events the caller must still act on: the new ones, and
	// earlier ones whose address fact was never marked announced; each with its delivery's id,
	// channel, address, user and category when the delivery is known. Events of unknown
	// deliveries are stored and otherwise ignored.
	RecordProviderEvents(ctx context.Context, events []ProviderEvent) ([]ProviderEvent, error)
}

// UnpublishedStore takes the deliveries of a failed publish from Handoff, for the reconciler.
type UnpublishedStore interface {
	// Unpublished marks queued deliveries whose message did not reach their queue as due at
	// once, for the reconciler's next pass.
	Unpublished(ctx context.Context, ids []uuid.UUID, at time.Time) error
}

// DeadLetterStore finds and queues again the dead deliveries Operations lists and re-drives.
type DeadLetterStore interface {
	// DeadLetters lists dead deliveries matching f, by id, after the given id.
	DeadLetters(ctx context.Context, f delivery.DeadFilter, after uuid.UUID, limit int) ([]delivery.Delivery, error)
	// Redrive queues the dead deliveries matching f again with a fresh attempt budget and
	// returns them to publish.
	Redrive(ctx context.Context, f delivery.DeadFilter, now time.Time, republishAfter time.Duration) ([]delivery.Due, error)
}

// Publisher puts deliveries on their channels' queues.
type Publisher interface {
	// Publish puts each channel's deliveries on its queue, as few messages as their number
	// allows, and waits for the broker's acknowledgements. On an error any of them may be
	// unpublished; the reconciler publishes them again.
	Publish(ctx context.Context, byChannel map[delivery.Channel][]uuid.UUID) error
}

// Limiter enforces app request rates and category frequency caps across replicas; the
// ratelimit package implements it on JetStream.
type Limiter interface {
	// AllowRequest takes one request from the app's token bucket, or says how long until one
	// is available.
	AllowRequest(ctx context.Context, app string, ratePerSecond float64, burst int) (bool, time.Duration, error)
	// Take records one event against each cap that has room, answering which did.
	Take(ctx context.Context, caps []ratelimit.Cap) ([]bool, error)
	// Peek answers which caps have room, recording nothing.
	Peek(ctx context.Context, caps []ratelimit.Cap) ([]bool, error)
}

// Directory looks up recipients in the contacts service.
type Directory interface {
	// Resolve returns, in one round trip, the users that exist among userIDs and the
	// suppressions on the targets and on those users' own addresses.
	Resolve(ctx context.Context, userIDs []string, targets []Target) (*Recipients, error)
}
