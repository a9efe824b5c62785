package daemon

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/appkey"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// DefaultDeliveryRetention is how long the delivery history is kept when --delivery-retention
// does not say.
const DefaultDeliveryRetention = 90 * 24 * time.Hour

// keyFeedRetention is how long the key change feed keeps a change: longer than a cache over it
// may go without reading it (appkey.FeedStale), after which the cache forgets everything.
const keyFeedRetention = time.Hour

// RetentionConfig says how long the notifier keeps the history of what it sent.
type RetentionConfig struct {
	// Deliveries is how long a finished delivery, and its attempt log, are kept after it was
	// accepted and after its last change, and provider events after they arrived (and as long
	// as their delivery); a notification goes with its last delivery. 0 keeps them for ever.
	Deliveries time.Duration
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *RetentionConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Deliveries, "delivery-retention", DefaultDeliveryRetention,
		"how long a finished delivery, its attempts and its provider events are kept after it was accepted and last changed; "+
			"a notification goes with its last delivery (then GetNotification answers NOT_FOUND); 0: kept for ever, else at least 24h")
}

// check refuses a retention shorter than the idempotency window: a Send repeated within it must
// find its notification.
func (c RetentionConfig) check() error {
	if c.Deliveries > 0 && c.Deliveries < notifier.IdempotencyWindow {
		return fmt.Errorf("--delivery-retention %s: must be at least %s, as long as an idempotency key stands for its notification (or 0: kept for ever)",
			c.Deliveries, notifier.IdempotencyWindow)
	}
	return nil
}

// retentionTables lists the tables the notifier prunes, in the order a pass takes them: the
// deliveries before the provider events and notifications that stay as long as they do.
func retentionTables(cfg Config, deliveries *deliverypg.Store) []retention.Table {
	links := cfg.Links.Retention
	if links <= 0 {
		links = defaultLinkRetention
	}
	keep := cfg.Retention.Deliveries
	return []retention.Table{
		{Name: appkey.ChangesTable, Keep: keyFeedRetention, Prune: pgdb.PruneChanges(appkey.ChangesTable)},
		{Name: "notifier.links", Keep: links, Prune: postgres.PruneLinks},
		{Name: "notifier.link_clicks", Keep: links, Prune: postgres.PruneClicks},
		{Name: "delivery.attempts", Keep: keep, Prune: func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
			return deliveries.In(tx).PruneAttempts(ctx, from, cutoff, limit)
		}},
		{Name: "delivery.deliveries", Keep: keep, Prune: func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
			return deliveries.In(tx).PruneDeliveries(ctx, from, cutoff, limit)
		}},
		{Name: "delivery.digests", Keep: keep, Prune: func(ctx context.Context, tx pgx.Tx, from, cutoff time.Time, limit int) (int, time.Time, error) {
			return deliveries.In(tx).PruneDigests(ctx, from, cutoff, limit)
		}},
		{Name: "notifier.provider_events", Keep: keep, Prune: postgres.PruneProviderEvents},
		{Name: "notifier.notifications", Keep: keep, Prune: postgres.PruneNotifications},
		{Name: "notifier.topic_sends", Keep: keep, Prune: postgres.PruneTopicSends}, // after their notifications
		// The in-app inbox (inbox.go): its own retention, the messages users read.
		{Name: "inbox.messages", Keep: cfg.Inbox.Retention, Prune: inboxpg.PruneMessages},
	}
}
