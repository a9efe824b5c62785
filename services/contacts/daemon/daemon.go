// Package daemon wires a running contacts service: database, migrations, and the gRPC and HTTP
// listeners. cmd/contacts runs one from flags; the dev stack and the end-to-end tests start the
// same thing in-process.
package daemon

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/retention"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
	cevents "github.com/heraldhq/herald/services/contacts/events"
	"github.com/heraldhq/herald/services/contacts/postgres"
	"github.com/heraldhq/herald/services/contacts/rpc"
	"github.com/heraldhq/herald/services/contacts/web"
)

// Config is everything a contacts service needs to run.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// DisableHTTPAPI keeps the API off the HTTP listener (it is served there as HTTP/JSON
	// otherwise), for deployments that allow only mutual-TLS gRPC callers.
	DisableHTTPAPI bool
	DatabaseURL    string
	NATSURL        string
	StreamReplicas int
	// PublicURL is where end users reach this service's HTTP pages (preference page,
	// unsubscribe, SMS webhook), e.g. https://notify.example.com.
	PublicURL string
	// LinkKeys sign preference and unsubscribe links: "id:base64secret,..."; the first signs.
	LinkKeys string
	// TwilioAuthToken verifies Twilio's inbound SMS webhook; empty turns the webhook off.
	TwilioAuthToken string
	SMSHelpText     string
	// SMSKeywordRetention is how long the record of an SMS STOP or START is kept; 0 keeps it
	// for ever. A request older than that, posted again, is applied again (see
	// postgres.PruneSMSKeywords).
	SMSKeywordRetention time.Duration
	// DeviceRetention is how long a device a provider declared dead is kept (listed as
	// inactive, with the provider's reason) before it is deleted; 0 keeps it for ever.
	DeviceRetention time.Duration
	// TLS secures the gRPC listener; with a client CA, callers need certificates (mutual TLS).
	TLS tlsconfig.Files
	Log *slog.Logger
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7401", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:7481", "HTTP listen address (the API as HTTP/JSON, health, readiness, metrics)")
	fs.BoolVar(&c.DisableHTTPAPI, "disable-http-api", false, "do not serve the API as HTTP/JSON on --http-addr (gRPC only)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (required)")
	fs.StringVar(&c.NATSURL, "nats-url", nats.DefaultURL, "NATS URL(s), comma-separated")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", 1, "JetStream stream replicas")
	fs.StringVar(&c.PublicURL, "public-url", "http://127.0.0.1:7481", "public base URL of this service's HTTP pages")
	fs.StringVar(&c.LinkKeys, "link-keys", "", "keys that sign preference and unsubscribe links: id:base64secret,... (first signs)")
	fs.StringVar(&c.TwilioAuthToken, "twilio-auth-token", "", "Twilio auth token, to verify inbound SMS webhooks (empty: webhook off)")
	tlsconfig.RegisterServerFlags(fs, &c.TLS)
	fs.StringVar(&c.SMSHelpText, "sms-help-text", "Reply STOP to stop these messages, START to receive them again.", "answer to an SMS HELP")
	fs.DurationVar(&c.SMSKeywordRetention, "sms-keyword-retention", 0,
		"how long the record of an SMS STOP or START is kept, which refuses its request replayed; 0: kept for ever "+
			"(set it no shorter than the time between rotations of the Twilio auth token)")
	fs.DurationVar(&c.DeviceRetention, "device-retention", 90*24*time.Hour,
		"how long a device a provider declared dead is kept (listed as inactive) before it is deleted; 0: kept for ever")
}

// Daemon is a running contacts service.
type Daemon struct {
	pool    *pgxpool.Pool
	nc      *nats.Conn
	applier jetstream.ConsumeContext
	srv     *server.Server
	cancel  context.CancelFunc
	done    chan struct{}
}

// Start brings the contacts service up. App keys are checked against the notifier's schema, so
// the notifier's migrations must have run (they have once any notifier has started).
func Start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("a database URL is required (--database-url or HERALD_DATABASE_URL)")
	}
	log := cfg.Log
	d := &Daemon{}
	defer func() {
		if err != nil {
			d.Close()
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
	if d.nc, err = nats.Connect(cfg.NATSURL, nats.Name("herald-contacts"), nats.MaxReconnects(-1)); err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	setup := queue.Setup{Log: log} // each step tried again until openCtx ends
	if err = setup.Run(openCtx, "events stream", func(ctx context.Context) error { return events.Ensure(ctx, js, cfg.StreamReplicas) }); err != nil {
		return nil, err
	}
	store := postgres.New(d.pool)
	svc := contacts.New(store, &cevents.Publisher{JS: js})
	if err = setup.Run(openCtx, "provider facts consumer", func(ctx context.Context) (err error) {
		d.applier, err = cevents.Apply(ctx, js, svc)
		return err
	}); err != nil {
		return nil, err
	}

	auth := appkey.NewAuthenticator(appkey.PostgresStore{Pool: d.pool})
	if d.srv, err = server.New(log, cfg.GRPCAddr, cfg.HTTPAddr, cfg.TLS,
		errs.UnaryServerInterceptor(log),
		appkey.UnaryServerInterceptor(auth, "/herald.v1.")); err != nil {
		return nil, err
	}
	api := &rpc.Server{Service: svc}
	if cfg.LinkKeys != "" {
		signer, err := linktoken.ParseSigner(cfg.LinkKeys)
		if err != nil {
			return nil, fmt.Errorf("--link-keys: %w", err)
		}
		pages := web.New(svc, web.Config{PublicURL: strings.TrimSuffix(cfg.PublicURL, "/"), Signer: signer,
			TwilioAuthToken: cfg.TwilioAuthToken, SMSHelpText: cfg.SMSHelpText, Log: log})
		pages.Register(d.srv.HTTP)
		api.Links = pages
	} else {
		log.Warn("no --link-keys: preference links, unsubscribe and the SMS webhook are off")
	}
	heraldv1.RegisterContactsServiceServer(d.srv, api)
	if !cfg.DisableHTTPAPI {
		local, err := d.srv.Local()
		if err != nil {
			return nil, err
		}
		if err := d.srv.ServeJSON(local, heraldv1.RegisterContactsServiceHandler); err != nil {
			return nil, err
		}
	}
	d.srv.AddCheck("database", func(ctx context.Context) error { return d.pool.Ping(ctx) })
	d.srv.AddCheck("nats", func(context.Context) error {
		if !d.nc.IsConnected() {
			return fmt.Errorf("nats: %s", d.nc.Status())
		}
		return nil
	})
	d.srv.Start()

	pruner := &retention.Pruner{DB: d.pool, Tables: retentionTables(cfg),
		Metrics: retention.NewMetrics(d.srv.Metrics), Log: log}
	bg, cancelBG := context.WithCancel(context.Background())
	d.cancel, d.done = cancelBG, make(chan struct{})
	go func() {
		defer close(d.done)
		pruner.Run(bg)
	}()
	log.Info("contacts ready", "grpc", d.srv.GRPCAddr(), "http", d.srv.HTTPAddr())
	return d, nil
}

// feedRetention is how long the change feed keeps a change: longer than a cache over it may go
// without reading it (see contacts.New), after which the cache forgets everything.
const feedRetention = time.Hour

// retentionTables lists the tables the contacts service prunes.
func retentionTables(cfg Config) []retention.Table {
	return []retention.Table{
		{Name: postgres.ChangesTable, Keep: feedRetention, Prune: postgres.PruneChanges},
		{Name: "contacts.sms_keywords", Keep: cfg.SMSKeywordRetention, Prune: postgres.PruneSMSKeywords},
		{Name: "contacts.devices", Keep: cfg.DeviceRetention, Prune: postgres.PruneDevices},
	}
}

// GRPCAddr is where the API listens.
func (d *Daemon) GRPCAddr() string { return d.srv.GRPCAddr() }

// HTTPAddr is where health and readiness are served.
func (d *Daemon) HTTPAddr() string { return d.srv.HTTPAddr() }

// Err reports a listener that failed while serving.
func (d *Daemon) Err() <-chan error { return d.srv.Err() }

// Close stops serving, waiting up to 10 s for calls in progress.
func (d *Daemon) Close() {
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d.srv.Close(ctx)
		cancel()
	}
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	if d.applier != nil {
		d.applier.Stop()
		<-d.applier.Closed()
	}
	if d.nc != nil {
		d.nc.Drain()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}
