package daemon

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/linktoken"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/inboxfeed"
	"github.com/heraldhq/herald/services/notifier/postgres"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

// InboxConfig configures the in-app inbox: InboxService, user tokens and the live feed.
type InboxConfig struct {
	// LinkKeys sign user tokens: "id:base64secret,..." (the first signs), the same keys as the
	// contacts service's and the workers'. Empty: no user tokens, so InboxService takes app keys
	// only and the live feed is off.
	LinkKeys string
	// Origins may call the inbox routes and the feed from their pages (CORS): comma-separated,
	// "*" for any.
	Origins string
	// Heartbeat is the time between the feed's keep-alive comments.
	Heartbeat time.Duration
	// MaxStreams bounds one user's open feed streams per notifier.
	MaxStreams int
	// Retention is how long a message is kept after its Send was accepted; 0 keeps it for ever.
	Retention time.Duration
}

// DefaultInboxRetention is how long inbox messages are kept when --inbox-retention does not
// say: as long as the delivery history.
const DefaultInboxRetention = DefaultDeliveryRetention

// RegisterFlags binds c's fields to flags with their defaults.
func (c *InboxConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.LinkKeys, "link-keys", "", "keys that sign inbox user tokens: id:base64secret,... (as the contacts service's; prefer --link-keys-file); empty: no user tokens, no live feed")
	fs.StringVar(&c.Origins, "inbox-origins", "*", "origins whose pages may call the inbox routes and its live feed with a user token (CORS), comma-separated; * for any")
	fs.DurationVar(&c.Heartbeat, "inbox-heartbeat", inboxfeed.DefaultHeartbeat, "time between keep-alive comments on the inbox live feed")
	fs.IntVar(&c.MaxStreams, "inbox-max-streams", inboxfeed.DefaultMaxStreams, "open inbox live feed streams allowed per user on each notifier")
	fs.DurationVar(&c.Retention, "inbox-retention", DefaultInboxRetention, "how long an inbox message is kept after its Send was accepted, read or not (0: for ever)")
}

func (c *InboxConfig) tokens(log *slog.Logger) (*notifier.UserTokens, error) {
	if c.LinkKeys == "" {
		log.Warn("no --link-keys: inbox user tokens and the live feed are off")
		return nil, nil
	}
	signer, err := linktoken.ParseSigner(c.LinkKeys)
	if err != nil {
		return nil, fmt.Errorf("--link-keys: %w", err)
	}
	return &notifier.UserTokens{Signer: signer}, nil
}

func (c *InboxConfig) origins() []string {
	var out []string
	for o := range strings.SplitSeq(c.Origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimSuffix(o, "/"))
		}
	}
	return out
}

// openInbox migrates the inbox schema and opens its store.
func (d *Daemon) openInbox(ctx context.Context, log *slog.Logger) error {
	if err := inboxpg.Migrate(ctx, d.pool, log); err != nil {
		return err
	}
	d.inbox = inboxpg.New(d.pool)
	return nil
}

// startInbox serves InboxService and, with user tokens, the live feed at GET /v1/inbox/feed.
// The feed is served even with --disable-http-api: it takes user tokens only, never app keys.
func (d *Daemon) startInbox(cfg Config, store *postgres.Store, tokens *notifier.UserTokens) {
	in := &notifier.Inbox{Store: d.inbox, Opens: store}
	heraldv1.RegisterInboxServiceServer(d.srv, &rpc.InboxServer{Inbox: in, Tokens: tokens})
	if tokens == nil {
		return
	}
	// One connection per notifier listens; it is not the pool's, because a LISTEN holds its
	// connection for good.
	connCfg := d.pool.Config().ConnConfig.Copy()
	hub := inboxfeed.NewHub(func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.ConnectConfig(ctx, connCfg)
	}, inboxpg.Channel, cfg.Log)
	d.feed = &inboxfeed.Feed{Hub: hub, Store: d.inbox, Tokens: tokens, Log: cfg.Log,
		Heartbeat: cfg.Inbox.Heartbeat, MaxStreams: cfg.Inbox.MaxStreams, Origins: cfg.Inbox.origins()}
	d.feed.Register(d.srv.Metrics)
	d.srv.HTTP.Handle("GET /v1/inbox/feed", inboxfeed.CORS(d.feed.Origins, d.feed))
}

// serveInboxJSON serves InboxService's HTTP/JSON routes, with CORS for the pages of the
// configured origins.
func (d *Daemon) serveInboxJSON(cfg Config, local *grpc.ClientConn) error {
	if err := d.srv.ServeJSON(local, heraldv1.RegisterInboxServiceHandler); err != nil {
		return err
	}
	d.srv.HTTP.Handle("/v1/inbox/", inboxfeed.CORS(cfg.Inbox.origins(), d.srv.API()))
	return nil
}
