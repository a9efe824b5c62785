package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/heraldhq/herald/internal/appkey"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	contactsd "github.com/heraldhq/herald/services/contacts/daemon"
	contactspg "github.com/heraldhq/herald/services/contacts/postgres"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
	notifierpg "github.com/heraldhq/herald/services/notifier/postgres"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
	"github.com/heraldhq/herald/services/workers/sim"
)

func TestMain(m *testing.M) {
	// The Google SDK must never probe the cloud metadata address.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	code := pgtest.Main(m)
	if dir, err := binDir(); err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

const sendgridKey = "SG.test-key"

// stack is a whole Herald started in-process against a private PostgreSQL database, an
// in-process JetStream server and the SendGrid fake.
type stack struct {
	opts      stackOptions
	log       *slog.Logger
	logs      *logBuffer
	providers func(*workersd.Config)
	dbURL     string
	linkKeys  string
	sim       *sim.Server
	simURL    string
	natsURL   string
	nats      *server.Server
	pool      *pgxpool.Pool
	key       string // the bootstrap admin app's, which the tests' clients use
	fake      *sendgridfake.Fake
	fakeURL   string
	notifier  *notifierd.Daemon
	contacts  *contactsd.Daemon
	workers   *workersd.Daemon
	// contactsKey is the notifiers' own key for the contacts service (app herald-notifier).
	contactsKey string

	conn     *grpc.ClientConn
	notify   heraldv1.NotificationServiceClient
	tmpl     heraldv1.TemplateServiceClient
	people   heraldv1.ContactsServiceClient
	contConn *grpc.ClientConn
}

type stackOptions struct {
	noWorkers bool
	// republishAfter overrides the notifier's (default 2 s: tests of lost messages want it short).
	republishAfter time.Duration
	// providers, when set, configures the workers' iOS, Android and SMS channels (the default is
	// the simulator for those and SendGrid's fake for email).
	providers func(*workersd.Config)
	// links, when set, turns short links on in the notifier (links_test.go).
	links *notifierd.LinksConfig
	// noTopicFanout leaves the fan-out of topic sends to other notifiers (topic_test.go).
	noTopicFanout bool
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// logBuffer collects every log line of a stack, at debug level, for the canary check.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(b.buf.String(), "\n")
}

// personalData matches what must never reach a log line: email addresses, the tests' phone
// numbers and device tokens (canaries: every test uses them, so every test checks them).
var personalData = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z.]{2,}|\+1415555\d{4}|\+44\d{10}|` +
	iosToken + `|fcm-registration-token`)

// stackLogger returns the stack's logger: JSON at debug level into a buffer that is checked for
// personal data when the test ends (and text to stderr with -v).
func stackLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	var w io.Writer = buf
	if testing.Verbose() {
		w = io.MultiWriter(buf, os.Stderr)
	}
	t.Cleanup(func() { // registered first, so it runs after every service has stopped
		for _, line := range buf.lines() {
			if m := personalData.FindString(line); m != "" {
				t.Errorf("a log line holds personal data %q: %s", m, line)
			}
		}
	})
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func migrateAll(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, m := range []func(context.Context, *pgxpool.Pool, *slog.Logger) error{
		notifierpg.Migrate, deliverypg.Migrate, contactspg.Migrate, inboxpg.Migrate,
	} {
		if err := m(ctx, pool, log); err != nil {
			return err
		}
	}
	return nil
}

func startStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &stack{key: appkey.New().String(), contactsKey: appkey.New().String(),
		linkKeys: "test:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}
	s.log, s.logs = stackLogger(t)
	s.opts = opts
	s.dbURL = pgtest.DB(t, "herald", migrateAll)
	s.nats = natstest.Start(t)
	s.natsURL = s.nats.ClientURL()
	s.fake = sendgridfake.New(sendgridKey)
	s.fakeURL = s.fake.Start()
	t.Cleanup(s.fake.Close)
	s.sim = sim.NewServer()
	simSrv := httptest.NewServer(s.sim)
	t.Cleanup(simSrv.Close)
	s.simURL = simSrv.URL
	var err error
	if s.pool, err = pgdb.Open(ctx, s.dbURL, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)

	s.startContacts(t, "127.0.0.1:0", "127.0.0.1:0")
	s.notifier = s.startNotifier(t)
	s.providers = opts.providers
	if !opts.noWorkers {
		s.startWorkers(t)
	}

	s.conn = dial(t, s.notifier.GRPCAddr(), s.key)
	s.contConn = dial(t, s.contacts.GRPCAddr(), s.key)
	s.notify = heraldv1.NewNotificationServiceClient(s.conn)
	s.tmpl = heraldv1.NewTemplateServiceClient(s.conn)
	s.people = heraldv1.NewContactsServiceClient(s.contConn)
	return s
}

// startContacts starts the stack's contacts service on the addresses (port 0 for new ones).
func (s *stack) startContacts(t testing.TB, grpcAddr, httpAddr string) {
	t.Helper()
	c, err := contactsd.Start(context.Background(), contactsd.Config{
		GRPCAddr: grpcAddr, HTTPAddr: httpAddr, DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		PublicURL: "http://contacts.test", LinkKeys: s.linkKeys, TwilioAuthToken: "twilio-token",
		Log: s.log.With("service", "contacts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s.contacts = c
}

// startNotifier starts a notifier on the stack's database and NATS (a second one is another
// replica), stopped when the test ends.
func (s *stack) startNotifier(t testing.TB) *notifierd.Daemon {
	t.Helper()
	d, err := notifierd.Start(context.Background(), notifierd.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.contactsKey, BootstrapKey: s.key, BootstrapApp: "test",
		RepublishAfter: cmp.Or(s.opts.republishAfter, 2*time.Second), ReconcileInterval: 200 * time.Millisecond,
		OpsInterval: 500 * time.Millisecond,
		Links:       ptrOr(s.opts.links),
		Topics:      notifierd.TopicsConfig{NoFanout: s.opts.noTopicFanout},
		Inbox:       notifierd.InboxConfig{LinkKeys: s.linkKeys, Origins: "*", Heartbeat: 5 * time.Second, MaxStreams: 5},
		Log:         s.log.With("service", "notifier"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// dial connects to a gRPC address with key, closed when the test ends.
func dial(t testing.TB, addr, key string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), appkey.Credentials(key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// workersConfig is the configuration both the in-process workers and the workers binary use in
// these tests: short leases and backoffs so that recovery paths finish quickly.
func (s *stack) workersConfig() workersd.Config {
	return workersd.Config{
		HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL, Channels: "ios,android,sms,email,inbox",
		EmailProvider: "sendgrid", IOSProvider: "sim", AndroidProvider: "sim", SMSProvider: "sim", SimURL: s.simURL,
		ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.key, LinkKeys: s.linkKeys,
		UnsubscribeURL: "http://contacts.test",
		SendGridAPIKey: sendgridKey, SendGridBaseURL: s.fakeURL, EmailFrom: "herald@example.com",
		EmailFromName: "Herald", Concurrency: 16, BatchSize: 64, Lease: 3 * time.Second,
		SendTimeout: 2 * time.Second, AckWait: 5 * time.Second, MaxAttempts: 5,
		BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, StreamReplicas: 1,
		// Failing providers in these tests should reach their outcome, not pause the channel.
		BreakerFailures: 1000, BreakerCooldown: time.Second,
	}
}

func (s *stack) startWorkers(t testing.TB) {
	t.Helper()
	cfg := s.workersConfig()
	if s.providers != nil {
		s.providers(&cfg)
	}
	cfg.Log = s.log.With("service", "workers")
	var err error
	if s.workers, err = workersd.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.workers.Close)
}

// waitFor polls cond until it holds or the deadline passes. The deadline is generous: it only
// bounds a broken run, it is not an assertion about speed.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
