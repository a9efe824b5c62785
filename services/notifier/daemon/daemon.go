// Package daemon wires a running notifier: database, migrations, JetStream, the gRPC and HTTP
// listeners and the reconciler. cmd/notifier runs one from flags; the dev stack and the
// end-to-end tests start the same thing in-process.
package daemon

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/coherent"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/events"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/ratelimit"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/internal/tlsconfig"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/internal/workerstatus"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/contacts"
	"github.com/heraldhq/herald/services/notifier/inboxfeed"
	"github.com/heraldhq/herald/services/notifier/links"
	"github.com/heraldhq/herald/services/notifier/ops"
	"github.com/heraldhq/herald/services/notifier/postgres"
	nqueue "github.com/heraldhq/herald/services/notifier/queue"
	"github.com/heraldhq/herald/services/notifier/rpc"
	"github.com/heraldhq/herald/services/notifier/statuspage"
	"github.com/heraldhq/herald/services/notifier/webhooks"
)

// Config is everything a notifier needs to run.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// DisableHTTPAPI keeps the API off the HTTP listener (it is served there as HTTP/JSON
	// otherwise), for deployments that allow only mutual-TLS gRPC callers.
	DisableHTTPAPI bool
	DatabaseURL    string
	NATSURL        string
	ContactsAddr   string
	// ContactsKey is the notifier's own app key for the contacts service, which it looks
	// recipients up with whoever the caller is. It is installed at start-up as a key of the app
	// ContactsApp, with contacts read access, unless it belongs to another app already (then
	// it is used with that app's rights). Required with ContactsAddr.
	ContactsKey string
	ContactsApp string
	// BootstrapKey, when set, is installed as a key of the admin app BootstrapApp at start-up,
	// so a deployment can create its first key from a secret it generated itself.
	BootstrapKey string
	BootstrapApp string
	// StreamReplicas is the JetStream replication factor (3 on a cluster).
	StreamReplicas    int
	RepublishAfter    time.Duration
	ReconcileInterval time.Duration
	// ReconcileTimeout bounds one reconciler pass (0: notifier.DefaultPassTimeout).
	ReconcileTimeout time.Duration
	// AppRate and AppBurst are the request rate of apps that have none of their own (0: none).
	AppRate  float64
	AppBurst int
	// SMSMaxSegments bounds a rendered SMS.
	SMSMaxSegments int
	// OpsInterval is how often the queues are sampled for metrics and the status page.
	OpsInterval time.Duration
	// TLS secures the gRPC listener; with a client CA, callers need certificates (mutual TLS).
	// ContactsTLS is how this service reaches the contacts service.
	TLS         tlsconfig.Files
	ContactsTLS tlsconfig.Files
	// PublicURL is where providers reach this service's webhooks (behind any proxy).
	PublicURL string
	// SendGridWebhookKey verifies SendGrid's signed event webhook; TwilioAuthToken verifies
	// Twilio's status callbacks. Empty turns that webhook off.
	SendGridWebhookKey string
	TwilioAuthToken    string
	// Links configures short links and click tracking (links.go); off without a key.
	Links LinksConfig
	// Retention says how long the delivery history is kept (retention.go).
	Retention RetentionConfig
	// Inbox configures the in-app inbox (inbox.go).
	Inbox InboxConfig
	// Topics configures the fan-out of topic sends (topics.go).
	Topics TopicsConfig
	Log    *slog.Logger
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7400", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:7480", "HTTP listen address (the API as HTTP/JSON, health, readiness, metrics)")
	fs.BoolVar(&c.DisableHTTPAPI, "disable-http-api", false, "do not serve the API as HTTP/JSON on --http-addr (gRPC only)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (required)")
	fs.StringVar(&c.NATSURL, "nats-url", nats.DefaultURL, "NATS URL(s), comma-separated")
	fs.StringVar(&c.ContactsAddr, "contacts-addr", "127.0.0.1:7401", "contacts service gRPC address (empty: no user recipients, no suppressions)")
	fs.StringVar(&c.ContactsKey, "contacts-key", "", "the notifier's own app key (hk_...) for the contacts service, installed at start-up (required with --contacts-addr)")
	fs.StringVar(&c.ContactsApp, "contacts-app", "herald-notifier", "name of the app that owns --contacts-key, given contacts read access")
	fs.StringVar(&c.BootstrapKey, "bootstrap-key", "", "an app key (hk_...) to install for the bootstrap app at start-up")
	fs.StringVar(&c.BootstrapApp, "bootstrap-app", "admin", "name of the admin app that owns the bootstrap key")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", 1, "JetStream stream replicas")
	fs.DurationVar(&c.RepublishAfter, "republish-after", 5*time.Minute, "re-publish a queued delivery not picked up after this long")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", time.Second, "time between reconciler passes")
	fs.DurationVar(&c.ReconcileTimeout, "reconcile-timeout", notifier.DefaultPassTimeout, "longest a reconciler pass may run before it is cut (the next pass carries on)")
	fs.Float64Var(&c.AppRate, "app-rate", 2000, "Send calls per second per app, for apps without their own rate (0: unlimited)")
	fs.IntVar(&c.AppBurst, "app-burst", 4000, "Send calls allowed at once above --app-rate")
	fs.DurationVar(&c.OpsInterval, "ops-interval", 5*time.Second, "how often queue depth is sampled for metrics and the status page")
	fs.IntVar(&c.SMSMaxSegments, "sms-max-segments", templates.DefaultSMSSegments, "longest SMS a template may render, in segments")
	tlsconfig.RegisterServerFlags(fs, &c.TLS)
	tlsconfig.RegisterClientFlags(fs, &c.ContactsTLS, "contacts-", "contacts service")
	fs.StringVar(&c.PublicURL, "public-url", "http://127.0.0.1:7480", "public base URL of this service's webhooks")
	fs.StringVar(&c.SendGridWebhookKey, "sendgrid-webhook-public-key", "", "SendGrid event webhook verification key (base64 or PEM); empty: webhook off")
	fs.StringVar(&c.TwilioAuthToken, "twilio-auth-token", "", "Twilio auth token, to verify status callbacks; empty: webhook off")
	c.Links.RegisterFlags(fs)
	c.Retention.RegisterFlags(fs)
	c.Topics.RegisterFlags(fs)
	c.Inbox.RegisterFlags(fs)
}

// Daemon is a running notifier.
type Daemon struct {
	pool       *pgxpool.Pool
	deliveries *deliverypg.Store
	nc         *nats.Conn
	contacts   *grpc.ClientConn
	// contactsAPI carries the HTTP/JSON API's contacts calls, with the caller's own key.
	contactsAPI *grpc.ClientConn
	dir         *contacts.Directory
	sender      *notifier.Sender
	clicks      *links.Recorder
	feed        *inboxfeed.Feed
	inbox       *inboxpg.Store
	erasures    jetstream.ConsumeContext
	srv         *server.Server
	cancel      context.CancelFunc
	done        chan struct{}
}

// Start brings a notifier up: it migrates the schema, ensures the streams, and serves.
func Start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("a database URL is required (--database-url or HERALD_DATABASE_URL)")
	}
	if err := cfg.Retention.check(); err != nil {
		return nil, err
	}
	log := cfg.Log
	d := &Daemon{done: make(chan struct{})}
	defer func() {
		if err != nil {
			if d.srv != nil {
				d.srv.Close(context.Background()) // release the listeners
			}
			d.closeResources()
		}
	}()

	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if d.pool, err = pgdb.Open(openCtx, cfg.DatabaseURL, 0); err != nil {
		return nil, err
	}
	if err = postgres.Migrate(openCtx, d.pool, log); err != nil {
		return nil, err
	}
	if err = deliverypg.Migrate(openCtx, d.pool, log); err != nil {
		return nil, err
	}
	if err = d.openInbox(openCtx, log); err != nil { // inbox.go
		return nil, err
	}
	d.deliveries = deliverypg.New(d.pool)
	store := postgres.New(d.pool, d.deliveries)
	if cfg.BootstrapKey != "" {
		key, err := appkey.Parse(cfg.BootstrapKey)
		if err != nil {
			return nil, fmt.Errorf("bootstrap key: %w", err)
		}
		if err := store.EnsureKey(openCtx, postgres.Grant{App: cfg.BootstrapApp, Admin: true}, key.ID, key.Hash()); err != nil {
			return nil, fmt.Errorf("bootstrap key: %w", err)
		}
	}
	if cfg.ContactsAddr != "" {
		if cfg.ContactsKey == "" {
			return nil, fmt.Errorf("--contacts-key is required with --contacts-addr: the notifier's own app key for the contacts service (generate one as for --bootstrap-key; the notifier installs it)")
		}
		key, err := appkey.Parse(cfg.ContactsKey)
		if err != nil {
			return nil, fmt.Errorf("contacts key: %w", err)
		}
		err = store.EnsureKey(openCtx, postgres.Grant{App: cmp.Or(cfg.ContactsApp, "herald-notifier"), Contacts: appkey.ContactsRead},
			key.ID, key.Hash())
		if errs.KindOf(err) == errs.Conflict {
			log.Info("the contacts key belongs to another app: it is used with that app's rights", "key_id", key.ID, "err", err)
		} else if err != nil {
			return nil, fmt.Errorf("contacts key: %w", err)
		}
	}

	if d.nc, err = nats.Connect(cfg.NATSURL, nats.Name("herald-notifier"), nats.MaxReconnects(-1)); err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	setup := queue.Setup{Log: log} // each step tried again until openCtx ends
	if err = setup.Run(openCtx, "streams", func(ctx context.Context) error {
		return queue.EnsureStreams(ctx, js, queue.StreamConfig{Replicas: cfg.StreamReplicas})
	}); err != nil {
		return nil, err
	}
	if err = setup.Run(openCtx, "events stream", func(ctx context.Context) error { return events.Ensure(ctx, js, cfg.StreamReplicas) }); err != nil {
		return nil, err
	}
	// A deleted user's delivery history keeps only their id.
	erase := func(ctx context.Context, _ string, e events.Event) error {
		if e.UserID == "" {
			return nil
		}
		if err := store.EraseUser(ctx, e.UserID); err != nil {
			log.Warn("erase deleted user's deliveries", "err", err)
			return err
		}
		if err := d.inbox.EraseUser(ctx, e.UserID); err != nil {
			log.Warn("erase deleted user's inbox", "err", err)
			return err
		}
		log.Info("erased deleted user's deliveries", "user_id", e.UserID)
		return nil
	}
	if err = setup.Run(openCtx, "user deletions consumer", func(ctx context.Context) (err error) {
		d.erasures, err = events.Consume(ctx, js, "notifier", []string{events.UserDeleted}, erase)
		return err
	}); err != nil {
		return nil, err
	}
	pub, err := nqueue.NewPublisher(d.nc, 5*time.Second)
	if err != nil {
		return nil, err
	}

	// One poller of the change feed keeps both the key cache and the templates' exact: a Send
	// waits for one poll, which serves both.
	keys := appkey.PostgresStore{Pool: d.pool}
	feed := coherent.NewPoller(keys, appkey.FeedStale)
	auth := appkey.NewAuthenticatorWith(keys, feed)
	tokens, err := cfg.Inbox.tokens(log) // inbox.go
	if err != nil {
		return nil, err
	}
	d.srv, err = server.New(log, cfg.GRPCAddr, cfg.HTTPAddr, cfg.TLS,
		errs.UnaryServerInterceptor(log),
		rpc.AuthInterceptor(appkey.UnaryServerInterceptor(auth, "/herald.v1."), tokens))
	if err != nil {
		return nil, err
	}
	metrics := notifier.NewMetrics(d.srv.Metrics)
	var limiter *ratelimit.Limiter
	if err = setup.Run(openCtx, "rate-limit bucket", func(ctx context.Context) (err error) {
		limiter, err = ratelimit.New(ctx, js, ratelimit.Config{Replicas: cfg.StreamReplicas})
		return err
	}); err != nil {
		return nil, err
	}
	handoff := &notifier.Handoff{Publisher: pub, Deliveries: d.deliveries, Log: log}
	tmpls := &notifier.Templates{Store: store, Limits: templates.Limits{SMSSegments: cfg.SMSMaxSegments}, Feed: feed}
	cats := &notifier.Categories{Store: store}
	sender := &notifier.Sender{Store: store, Templates: tmpls, Categories: cats, Handoff: handoff, Log: log,
		RepublishAfter: cfg.RepublishAfter, Limiter: limiter, DefaultRate: cfg.AppRate, DefaultBurst: cfg.AppBurst,
		Metrics: metrics, Digests: d.deliveries}
	d.sender = sender
	if cfg.ContactsAddr != "" {
		creds, err := tlsconfig.DialOption(cfg.ContactsTLS)
		if err != nil {
			return nil, fmt.Errorf("contacts TLS: %w", err)
		}
		d.contacts, err = grpc.NewClient(cfg.ContactsAddr,
			append(tracing.DialOptions(), creds, roundRobin, server.DialOption(), appkey.Credentials(cfg.ContactsKey))...)
		if err != nil {
			return nil, fmt.Errorf("contacts client: %w", err)
		}
		d.dir = contacts.New(d.contacts, d.srv.Metrics)
		sender.Directory = d.dir
	}

	var status jetstream.KeyValue
	if err = setup.Run(openCtx, "worker status bucket", func(ctx context.Context) (err error) {
		status, err = workerstatus.Open(ctx, js, cfg.StreamReplicas)
		return err
	}); err != nil {
		return nil, err
	}
	watcher := ops.NewWatcher(js, d.pool, status, d.srv.Metrics, log)
	if cfg.OpsInterval > 0 {
		watcher.Interval = cfg.OpsInterval
	}
	watcher.Engagement = engagement(store) // click-through on the status page: links.go
	page := statuspage.New(watcher, log)
	d.srv.HTTP.Handle("GET /status", page)
	d.srv.HTTP.Handle("GET /status/", page)
	api := &rpc.Server{
		Sender:     sender,
		Templates:  tmpls,
		Categories: cats,
		Apps:       &notifier.Apps{Store: store, Log: log},
		Operations: &notifier.Operations{Deliveries: d.deliveries, Store: store, Handoff: handoff, Log: log,
			RepublishAfter: cfg.RepublishAfter},
		QueueStats: watcher,
		Topics:     d.startTopics(cfg, store, sender, log), // topics.go
	}
	heraldv1.RegisterNotificationServiceServer(d.srv, api)
	heraldv1.RegisterTemplateServiceServer(d.srv, api)
	heraldv1.RegisterAdminServiceServer(d.srv, api)
	d.startInbox(cfg, store, tokens) // inbox.go
	if !cfg.DisableHTTPAPI {
		if err := d.serveJSON(cfg); err != nil {
			return nil, err
		}
	}
	hooks, err := webhooks.New(webhooks.Config{
		PublicURL: strings.TrimSuffix(cfg.PublicURL, "/"), SendGridPublicKey: cfg.SendGridWebhookKey,
		TwilioAuthToken: cfg.TwilioAuthToken, JS: js, Store: store, Log: log, Received: metrics.ProviderEvents,
	})
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	d.srv.HTTP.Handle("/webhooks/", hooks)
	if err := d.startLinks(cfg, store, sender); err != nil { // short links: links.go
		return nil, err
	}
	d.srv.AddCheck("database", func(ctx context.Context) error { return d.pool.Ping(ctx) })
	d.srv.AddCheck("nats", func(context.Context) error {
		if !d.nc.IsConnected() {
			return fmt.Errorf("nats: %s", d.nc.Status())
		}
		return nil
	})
	d.srv.Start()

	rctx, rcancel := context.WithCancel(context.Background())
	d.cancel = rcancel
	rec := &notifier.Reconciler{Store: d.deliveries, Publisher: pub, Queue: pub, Log: log, Metrics: metrics,
		Interval: cfg.ReconcileInterval, PassTimeout: cfg.ReconcileTimeout, RepublishAfter: cfg.RepublishAfter, Batch: 1000,
		Digests: &notifier.DigestCloser{Store: store, Templates: tmpls, Publisher: pub, Log: log, // digest.go
			RepublishAfter: cfg.RepublishAfter, Batch: 100, Parallel: 8, Metrics: metrics}}
	var wg sync.WaitGroup
	wg.Go(func() { watcher.Run(rctx) })
	wg.Go(func() { rec.Run(rctx) })
	if api.Topics != nil && !cfg.Topics.NoFanout {
		wg.Go(func() { api.Topics.Run(rctx) })
	}
	pruner := &retention.Pruner{DB: d.pool, Tables: retentionTables(cfg, d.deliveries), // retention.go
		Metrics: retention.NewMetrics(d.srv.Metrics), Log: log}
	wg.Go(func() { pruner.Run(rctx) })
	if d.feed != nil {
		wg.Go(func() { d.feed.Hub.Run(rctx) })
	}
	go func() {
		wg.Wait()
		close(d.done)
	}()
	log.Info("notifier ready", "grpc", d.srv.GRPCAddr(), "http", d.srv.HTTPAddr(),
		"nats", strings.Split(cfg.NATSURL, ",")[0])
	return d, nil
}

// LimitFailures counts the times the rate limit store could not answer and limits were waived.
func (d *Daemon) LimitFailures() int64 { return d.sender.LimitFailures() }

// GRPCAddr is where the API listens.
func (d *Daemon) GRPCAddr() string { return d.srv.GRPCAddr() }

// HTTPAddr is where health and readiness are served.
func (d *Daemon) HTTPAddr() string { return d.srv.HTTPAddr() }

// Err reports a listener that failed while serving.
func (d *Daemon) Err() <-chan error { return d.srv.Err() }

// Close stops serving, waiting up to 10 s for calls in progress, then releases everything.
func (d *Daemon) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d.feed != nil {
		d.feed.Close() // its streams never end by themselves, and the HTTP shutdown waits for them
	}
	d.srv.Close(ctx)
	d.cancel()
	<-d.done
	d.closeResources()
}

func (d *Daemon) closeResources() {
	if d.sender != nil { // after the listeners: no Send is under way
		d.sender.Close()
	}
	if d.deliveries != nil {
		d.deliveries.Close()
	}
	if d.clicks != nil { // after the listeners: no more clicks come in; before the pool
		d.clicks.Close()
	}
	if d.erasures != nil {
		d.erasures.Stop()
		<-d.erasures.Closed()
	}
	if d.dir != nil {
		d.dir.Close()
	}
	if d.contacts != nil {
		d.contacts.Close()
	}
	if d.contactsAPI != nil {
		d.contactsAPI.Close()
	}
	if d.nc != nil {
		d.nc.Drain()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}

// serveJSON serves the HTTP/JSON API on the HTTP listener: the notifier's own services, and
// the contacts service's, passed on to it over gRPC with the caller's key, so that one address
// serves the whole API.
func (d *Daemon) serveJSON(cfg Config) error {
	local, err := d.srv.Local()
	if err != nil {
		return err
	}
	if err := d.srv.ServeJSON(local, heraldv1.RegisterNotificationServiceHandler, heraldv1.RegisterTemplateServiceHandler); err != nil {
		return err
	}
	if err := d.serveInboxJSON(cfg, local); err != nil { // inbox.go
		return err
	}
	if cfg.ContactsAddr == "" {
		return nil
	}
	creds, err := tlsconfig.DialOption(cfg.ContactsTLS)
	if err != nil {
		return fmt.Errorf("contacts TLS: %w", err)
	}
	// Not d.contacts: its per-call credentials are the notifier's own key, and these calls must
	// carry the caller's.
	if d.contactsAPI, err = grpc.NewClient(cfg.ContactsAddr, append(tracing.DialOptions(), creds, roundRobin, server.DialOption())...); err != nil {
		return fmt.Errorf("contacts client: %w", err)
	}
	return d.srv.ServeJSON(d.contactsAPI, heraldv1.RegisterContactsServiceHandler)
}

// roundRobin spreads calls to the contacts service over every address its name resolves to
// (every pod behind a headless Service), instead of sticking to the first.
var roundRobin = grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`)
