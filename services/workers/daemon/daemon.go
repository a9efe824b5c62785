// Package daemon wires a running workers process: database, migrations, JetStream, one consumer
// per configured channel with its provider, and the HTTP listener for health and readiness.
// cmd/workers runs one from flags; the dev stack and the end-to-end tests start the same thing.
package daemon

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/events"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/tlsconfig"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/internal/workerstatus"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/apns"
	"github.com/heraldhq/herald/services/workers/consumer"
	"github.com/heraldhq/herald/services/workers/contacts"
	wevents "github.com/heraldhq/herald/services/workers/events"
	"github.com/heraldhq/herald/services/workers/fcm"
	"github.com/heraldhq/herald/services/workers/inbox"
	"github.com/heraldhq/herald/services/workers/route"
	"github.com/heraldhq/herald/services/workers/sendgrid"
	"github.com/heraldhq/herald/services/workers/sim"
	"github.com/heraldhq/herald/services/workers/smtp"
	"github.com/heraldhq/herald/services/workers/twilio"
)

// Config is everything a workers process needs to run.
type Config struct {
	HTTPAddr    string
	DatabaseURL string
	NATSURL     string
	// Channels this process serves, comma-separated ("ios,android,sms,email,inbox").
	Channels string
	WorkerID string

	// Providers per channel: "sim" (the simulator) for every channel, or iOS "apns", Android
	// "fcm", SMS "twilio", email "sendgrid" or "smtp".
	IOSProvider     string
	AndroidProvider string
	SMSProvider     string
	EmailProvider   string
	SimURL          string
	// ProvidersFile, when set, names a YAML file listing, per channel, several credentials in
	// failover order and the apps each serves (services/workers/route). The channels it lists
	// are sent through it instead of their provider flags; SIGHUP reads it again.
	ProvidersFile string
	// ProviderEntry, when set, adjusts the configuration a providers-file entry of channel ch
	// is built from (tests trust their fakes' certificates with it).
	ProviderEntry func(ch delivery.Channel, name string, c *Config)

	APNs     apns.Config
	APNsHost string // "production", "development" or a URL
	FCM      fcm.Config
	Twilio   twilio.Config
	SMTP     smtp.Config
	SMTPTLS  string // "starttls", "tls" or "none"

	SendGridAPIKey  string
	SendGridBaseURL string
	EmailFrom       string
	EmailFromName   string

	// ContactsAddr and ContactsKey reach the contacts service, which every batch is re-checked
	// against before sending. An empty address turns the re-check off.
	ContactsAddr string
	ContactsKey  string
	ContactsTLS  tlsconfig.Files
	// LinkKeys sign one-click unsubscribe links (the same keys as the contacts service's);
	// UnsubscribeURL is the contacts service's public URL. Either empty: no List-Unsubscribe.
	LinkKeys          string
	UnsubscribeURL    string
	UnsubscribeMailto string

	// BreakerFailures consecutive provider failures open a channel's circuit for
	// BreakerCooldown; RatePerSecond and Burst cap its sends (0: no cap).
	BreakerFailures int
	BreakerCooldown time.Duration
	RatePerSecond   float64
	Burst           int

	Concurrency    int
	BatchSize      int
	Lease          time.Duration
	SendTimeout    time.Duration
	AckWait        time.Duration
	MaxAttempts    int
	BaseBackoff    time.Duration
	MaxBackoff     time.Duration
	StreamReplicas int
	Log            *slog.Logger
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:7482", "HTTP listen address (health, readiness)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (required)")
	fs.StringVar(&c.NATSURL, "nats-url", nats.DefaultURL, "NATS URL(s), comma-separated")
	fs.StringVar(&c.Channels, "channels", "ios,android,sms,email,inbox", "channels this process delivers")
	fs.StringVar(&c.WorkerID, "worker-id", "", "this worker's id in leases and the attempt log (default: host-pid-random)")
	fs.StringVar(&c.IOSProvider, "ios-provider", "sim", "iOS provider: apns or sim")
	fs.StringVar(&c.AndroidProvider, "android-provider", "sim", "Android provider: fcm or sim")
	fs.StringVar(&c.SMSProvider, "sms-provider", "sim", "SMS provider: twilio or sim")
	fs.StringVar(&c.EmailProvider, "email-provider", "sim", "email provider: sendgrid, smtp or sim")
	fs.StringVar(&c.ProvidersFile, "providers-file", "", "YAML file of several providers or credentials per channel, in failover order (reloaded on SIGHUP)")
	fs.StringVar(&c.SimURL, "sim-url", "http://127.0.0.1:7490", "simulator base URL, for the sim provider")

	fs.StringVar(&c.APNs.Topic, "apns-topic", "", "APNs topic: the iOS app's bundle id")
	fs.StringVar(&c.APNsHost, "apns-host", "production", "APNs environment: production, development, or a URL")
	fs.StringVar(&c.APNs.KeyFile, "apns-key-file", "", "APNs .p8 provider key (token auth), or the certificate's key")
	fs.StringVar(&c.APNs.KeyID, "apns-key-id", "", "APNs key id (token auth)")
	fs.StringVar(&c.APNs.TeamID, "apns-team-id", "", "Apple developer team id (token auth)")
	fs.StringVar(&c.APNs.CertFile, "apns-cert-file", "", "APNs push certificate as PEM (certificate auth)")
	fs.StringVar(&c.APNs.P12File, "apns-p12-file", "", "APNs push certificate as PKCS #12 (certificate auth)")
	fs.StringVar(&c.APNs.Password, "apns-cert-password", "", "password of the APNs certificate's key or PKCS #12 file")

	fs.StringVar(&c.FCM.ProjectID, "fcm-project-id", "", "Firebase project id (default: the credentials' project)")
	fs.StringVar(&c.FCM.CredentialsFile, "fcm-credentials-file", "", "Firebase service-account JSON key file")
	fs.StringVar(&c.FCM.Endpoint, "fcm-endpoint", "", "FCM API base URL (default: Google's)")

	fs.StringVar(&c.Twilio.AccountSID, "twilio-account-sid", "", "Twilio account SID")
	fs.StringVar(&c.Twilio.AuthToken, "twilio-auth-token", "", "Twilio auth token (prefer --twilio-auth-token-file)")
	fs.StringVar(&c.Twilio.APIKey, "twilio-api-key", "", "Twilio API key SID (instead of the auth token)")
	fs.StringVar(&c.Twilio.APISecret, "twilio-api-secret", "", "Twilio API key secret")
	fs.StringVar(&c.Twilio.From, "twilio-from", "", "sending number, short code or sender id")
	fs.StringVar(&c.Twilio.MessagingServiceSID, "twilio-messaging-service-sid", "", "Twilio messaging service (instead of --twilio-from)")
	fs.StringVar(&c.Twilio.StatusCallback, "twilio-status-callback", "", "URL of the notifier's /webhooks/twilio/status")
	fs.StringVar(&c.Twilio.BaseURL, "twilio-base-url", "", "Twilio API base URL (default: Twilio's)")

	fs.StringVar(&c.SMTP.Host, "smtp-host", "", "SMTP server host")
	fs.IntVar(&c.SMTP.Port, "smtp-port", 0, "SMTP server port (default by --smtp-tls: 587, 465 or 25)")
	fs.StringVar(&c.SMTP.Username, "smtp-username", "", "SMTP user name")
	fs.StringVar(&c.SMTP.Password, "smtp-password", "", "SMTP password (prefer --smtp-password-file)")
	fs.StringVar(&c.SMTPTLS, "smtp-tls", "starttls", "SMTP connection security: starttls, tls or none")

	fs.StringVar(&c.SendGridAPIKey, "sendgrid-api-key", "", "SendGrid API key (prefer --sendgrid-api-key-file)")
	fs.StringVar(&c.SendGridBaseURL, "sendgrid-base-url", "https://api.sendgrid.com", "SendGrid API base URL")
	fs.StringVar(&c.EmailFrom, "email-from", "herald@example.com", "email sender address")
	fs.StringVar(&c.EmailFromName, "email-from-name", "Herald", "email sender name")
	fs.StringVar(&c.ContactsAddr, "contacts-addr", "127.0.0.1:7401", "contacts service gRPC address, to re-check recipients before sending (empty: no re-check)")
	fs.StringVar(&c.ContactsKey, "contacts-key", "", "app key the workers use with the contacts service")
	tlsconfig.RegisterClientFlags(fs, &c.ContactsTLS, "contacts-", "contacts service")
	fs.StringVar(&c.LinkKeys, "link-keys", "", "keys that sign unsubscribe links: id:base64secret,... (as the contacts service's)")
	fs.StringVar(&c.UnsubscribeURL, "unsubscribe-url", "", "public URL of the contacts service, for List-Unsubscribe links")
	fs.StringVar(&c.UnsubscribeMailto, "unsubscribe-mailto", "", "address offered as a mailto List-Unsubscribe")
	fs.IntVar(&c.BreakerFailures, "breaker-failures", 5, "consecutive provider failures that pause a channel")
	fs.DurationVar(&c.BreakerCooldown, "breaker-cooldown", 30*time.Second, "how long a paused channel waits before a probe")
	fs.Float64Var(&c.RatePerSecond, "rate", 0, "sends per second per channel (0: no limit), e.g. a Twilio sender's rate")
	fs.IntVar(&c.Burst, "burst", 1, "sends allowed at once above --rate")
	fs.IntVar(&c.Concurrency, "concurrency", 32, "provider calls in flight per channel")
	fs.IntVar(&c.BatchSize, "batch-size", 256, "deliveries per claim or record statement")
	fs.DurationVar(&c.Lease, "lease", time.Minute, "how long a claim lasts before another worker may take the delivery")
	fs.DurationVar(&c.SendTimeout, "send-timeout", 15*time.Second, "bound on one provider call")
	fs.DurationVar(&c.AckWait, "ack-wait", queue.DefaultAckWait, "JetStream ack wait")
	fs.IntVar(&c.MaxAttempts, "max-attempts", workers.DefaultPolicy.MaxAttempts, "attempts before a delivery is dead")
	fs.DurationVar(&c.BaseBackoff, "base-backoff", workers.DefaultPolicy.BaseBackoff, "first retry backoff")
	fs.DurationVar(&c.MaxBackoff, "max-backoff", workers.DefaultPolicy.MaxBackoff, "longest retry backoff")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", 1, "JetStream stream replicas")
}

// Daemon is a running workers process.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	closeOnce sync.Once
	routers   map[delivery.Channel]*route.Router
	reloading chan struct{} // closed when the SIGHUP handler is done
	senders   []workers.Sender
	status    jetstream.KeyValue
	cancel    context.CancelFunc
	done      chan struct{}
	pool      *pgxpool.Pool
	store     *deliverypg.Store
	contacts  *grpc.ClientConn
	gate      *contacts.Gate
	nc        *nats.Conn
	srv       *server.Server
	consumers []*consumer.Consumer
}

// Start brings the workers up.
func Start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("a database URL is required (--database-url or HERALD_DATABASE_URL)")
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	log := cfg.Log.With("worker", cfg.WorkerID)
	channels, err := parseChannels(cfg.Channels)
	if err != nil {
		return nil, err
	}
	var file *route.File
	if cfg.ProvidersFile != "" {
		if file, err = readProviders(cfg.ProvidersFile); err != nil {
			return nil, err
		}
	}
	senders := map[delivery.Channel]workers.Sender{}
	for _, ch := range channels {
		if ch == delivery.Inbox {
			continue // stored in the database: built below, once there is a pool
		}
		if file != nil && file.Channels[ch] != nil {
			continue // built from the file below, once there is a registry for its metrics
		}
		if senders[ch], err = sender(cfg, ch); err != nil {
			return nil, err
		}
	}

	d := &Daemon{cfg: cfg, log: log, routers: map[delivery.Channel]*route.Router{}}
	for _, s := range senders {
		d.senders = append(d.senders, s)
	}
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
	if err = deliverypg.Migrate(openCtx, d.pool, log); err != nil {
		return nil, err
	}
	if slices.Contains(channels, delivery.Inbox) {
		if err = inboxpg.Migrate(openCtx, d.pool, log); err != nil {
			return nil, err
		}
		senders[delivery.Inbox] = &inbox.Sender{Store: inboxpg.New(d.pool)}
	}
	if d.nc, err = nats.Connect(cfg.NATSURL, nats.Name("herald-workers"), nats.MaxReconnects(-1)); err != nil {
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
	if d.srv, err = server.New(log, "", cfg.HTTPAddr, tlsconfig.Files{}); err != nil {
		return nil, err
	}
	var gate workers.Gate
	if cfg.ContactsAddr != "" {
		creds, err := tlsconfig.DialOption(cfg.ContactsTLS)
		if err != nil {
			return nil, fmt.Errorf("contacts TLS: %w", err)
		}
		if d.contacts, err = grpc.NewClient(cfg.ContactsAddr,
			append(tracing.DialOptions(), creds, roundRobin, server.DialOption(), appkey.Credentials(cfg.ContactsKey))...); err != nil {
			return nil, fmt.Errorf("contacts client: %w", err)
		}
		d.gate = contacts.New(d.contacts, d.srv.Metrics)
		gate = d.gate
	} else {
		log.Warn("no --contacts-addr: deliveries are not re-checked against opt-outs before sending")
	}
	var links *workers.UnsubscribeLinks
	if cfg.LinkKeys != "" && cfg.UnsubscribeURL != "" {
		signer, err := linktoken.ParseSigner(cfg.LinkKeys)
		if err != nil {
			return nil, fmt.Errorf("--link-keys: %w", err)
		}
		links = &workers.UnsubscribeLinks{BaseURL: strings.TrimSuffix(cfg.UnsubscribeURL, "/"), Signer: signer,
			Mailto: cfg.UnsubscribeMailto}
	}
	metrics := consumer.NewMetrics(d.srv.Metrics)
	if file != nil {
		rm := route.NewMetrics(d.srv.Metrics)
		for _, ch := range channels {
			entries, ok := file.Channels[ch]
			if !ok {
				continue
			}
			r, err := newRouter(cfg, ch, entries, rm, log)
			if err != nil {
				return nil, err
			}
			d.routers[ch], senders[ch] = r, r
			d.senders = append(d.senders, r)
		}
	}
	if err = setup.Run(openCtx, "worker status bucket", func(ctx context.Context) (err error) {
		d.status, err = workerstatus.Open(ctx, js, cfg.StreamReplicas)
		return err
	}); err != nil {
		return nil, err
	}
	store := deliverypg.New(d.pool)
	d.store = store
	policy := workers.Policy{MaxAttempts: cfg.MaxAttempts, BaseBackoff: cfg.BaseBackoff, MaxBackoff: cfg.MaxBackoff}
	for _, ch := range channels {
		ccfg := consumer.Config{
			Channel: ch, Sender: senders[ch], Store: store, Policy: policy, WorkerID: cfg.WorkerID,
			Concurrency: cfg.Concurrency, BatchSize: cfg.BatchSize, Lease: cfg.Lease,
			SendTimeout: cfg.SendTimeout, AckWait: cfg.AckWait, Gate: gate,
			Announcer: &wevents.Announcer{JS: js}, Unsubscribe: links, Log: log,
			BreakerFailures: cfg.BreakerFailures, BreakerCooldown: cfg.BreakerCooldown,
			RatePerSecond: cfg.RatePerSecond, Burst: cfg.Burst, Metrics: metrics,
		}
		var c *consumer.Consumer
		if err = setup.Run(openCtx, string(ch)+" consumer", func(ctx context.Context) (err error) {
			c, err = consumer.Start(ctx, js, ccfg)
			return err
		}); err != nil {
			return nil, err
		}
		d.consumers = append(d.consumers, c)
	}

	d.srv.AddCheck("database", func(ctx context.Context) error { return d.pool.Ping(ctx) })
	d.srv.AddCheck("nats", func(context.Context) error {
		if !d.nc.IsConnected() {
			return fmt.Errorf("nats: %s", d.nc.Status())
		}
		return nil
	})
	d.srv.Start()
	bg, cancelBG := context.WithCancel(context.Background())
	d.cancel, d.done = cancelBG, make(chan struct{})
	go func() {
		defer close(d.done)
		d.report(bg, cfg.WorkerID, log)
	}()
	if len(d.routers) > 0 {
		d.reloading = make(chan struct{})
		go func() {
			defer close(d.reloading)
			d.reloadOnHangup(bg)
		}()
	}
	log.Info("workers ready", "http", d.srv.HTTPAddr(), "channels", cfg.Channels)
	return d, nil
}

// report writes each channel's circuit state and counts for the notifier's status page, every
// few seconds, until ctx ends.
func (d *Daemon) report(ctx context.Context, worker string, log *slog.Logger) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for _, c := range d.consumers {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			sent, failed := c.Counts()
			st := workerstatus.State{Channel: string(c.Channel()), Provider: c.Provider(),
				Worker: worker, Circuit: c.CircuitState(), Sent: sent, Failed: failed, Updated: time.Now()}
			if r := d.routers[c.Channel()]; r != nil {
				for _, x := range r.Routes() {
					st.Routes = append(st.Routes, workerstatus.Route{Provider: x.Label, Circuit: x.Circuit, Active: x.Active})
				}
			}
			err := workerstatus.Put(pctx, d.status, st)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.Debug("report worker status", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func parseChannels(s string) ([]delivery.Channel, error) {
	var out []delivery.Channel
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		ch, err := delivery.ParseChannel(name)
		if err != nil {
			return nil, fmt.Errorf("--channels: %w", err)
		}
		out = append(out, ch)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--channels: no channel given")
	}
	return out, nil
}

// sender builds channel ch's provider from cfg. Credentials come from files or the
// environment and never reach a log line or an error.
func sender(cfg Config, ch delivery.Channel) (workers.Sender, error) {
	provider := map[delivery.Channel]string{
		delivery.IOS: cfg.IOSProvider, delivery.Android: cfg.AndroidProvider,
		delivery.SMS: cfg.SMSProvider, delivery.Email: cfg.EmailProvider,
	}[ch]
	var s workers.Sender
	var err error
	switch {
	case provider == "sim":
		return sim.NewSender(cfg.SimURL, ch), nil
	case provider == "apns" && ch == delivery.IOS:
		c := cfg.APNs
		switch cfg.APNsHost {
		case "", "production":
			c.Host = apns.HostProduction
		case "development":
			c.Host = apns.HostDevelopment
		default:
			c.Host = cfg.APNsHost
		}
		c.Timeout = cfg.SendTimeout
		s, err = apns.New(c)
	case provider == "fcm" && ch == delivery.Android:
		c := cfg.FCM
		c.Timeout = cfg.SendTimeout
		s, err = fcm.New(c)
	case provider == "twilio" && ch == delivery.SMS:
		c := cfg.Twilio
		c.Timeout = cfg.SendTimeout
		s, err = twilio.New(c)
	case provider == "sendgrid" && ch == delivery.Email:
		s, err = sendgrid.New(sendgrid.Config{
			APIKey: cfg.SendGridAPIKey, BaseURL: cfg.SendGridBaseURL,
			From: cfg.EmailFrom, FromName: cfg.EmailFromName, Timeout: cfg.SendTimeout,
		})
	case provider == "smtp" && ch == delivery.Email:
		c := cfg.SMTP
		if c.TLS, err = smtp.ParseTLSMode(cfg.SMTPTLS); err != nil {
			return nil, fmt.Errorf("--smtp-tls: %w", err)
		}
		c.From, c.FromName, c.Timeout = cfg.EmailFrom, cfg.EmailFromName, cfg.SendTimeout
		s, err = smtp.New(c)
	default:
		return nil, fmt.Errorf("channel %s: unknown provider %q", ch, provider)
	}
	if err != nil {
		return nil, fmt.Errorf("channel %s, provider %s: %w", ch, provider, err)
	}
	return s, nil
}

// HTTPAddr is where health and readiness are served.
func (d *Daemon) HTTPAddr() string { return d.srv.HTTPAddr() }

// Err reports a listener that failed while serving.
func (d *Daemon) Err() <-chan error { return d.srv.Err() }

// Close stops the consumers (finishing and recording the sends in flight), then the listener
// and the connections. Calls after the first do nothing.
func (d *Daemon) Close() { d.closeOnce.Do(d.close) }

func (d *Daemon) close() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
		if d.reloading != nil {
			<-d.reloading
		}
	}
	for _, c := range d.consumers {
		c.Stop()
	}
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.srv.Close(ctx)
		cancel()
	}
	if d.gate != nil {
		d.gate.Close()
	}
	if d.contacts != nil {
		d.contacts.Close()
	}
	for _, s := range d.senders {
		if c, ok := s.(interface{ Close() }); ok {
			c.Close() // idle provider connections (SMTP sessions say QUIT)
		}
	}
	if d.nc != nil {
		d.nc.Drain()
	}
	if d.store != nil {
		d.store.Close()
	}
	if d.pool != nil {
		d.pool.Close()
	}
}

// roundRobin spreads calls to the contacts service over every address its name resolves to
// (every pod behind a headless Service), instead of sticking to the first.
var roundRobin = grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`)
