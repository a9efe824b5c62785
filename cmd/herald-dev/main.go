// Command herald-dev runs the whole of Herald on one machine, with nothing installed or
// configured beyond the machine's PostgreSQL binaries: an embedded NATS JetStream server, a
// private PostgreSQL in ./.herald/pg (or, where the postgres user cannot reach that, in a
// directory of this checkout's own under the temp dir; or the database in DATABASE_URL), the
// notifier, contacts and workers services, and the provider simulator that shows what was
// "delivered". `make run` starts it; Ctrl-C stops everything; the next start reuses the data.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/natsembed"
	"github.com/heraldhq/herald/internal/pgserver"
	contactsd "github.com/heraldhq/herald/services/contacts/daemon"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
	"github.com/heraldhq/herald/services/workers/sim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "herald-dev:", err)
		os.Exit(1)
	}
}

type config struct {
	dir          string
	databaseURL  string
	pgPort       int
	natsPort     int
	notifierGRPC string
	notifierHTTP string
	contactsGRPC string
	contactsHTTP string
	workersHTTP  string
	simAddr      string
	logLevel     string
}

func run(args []string) error {
	var c config
	fs := flag.NewFlagSet("herald-dev", flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", ".herald", "where the stack keeps its data and dev.env")
	fs.StringVar(&c.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "use this PostgreSQL instead of a private one (default $DATABASE_URL)")
	fs.IntVar(&c.pgPort, "pg-port", 7432, "port of the private PostgreSQL")
	fs.IntVar(&c.natsPort, "nats-port", 7422, "port of the embedded NATS server")
	fs.StringVar(&c.notifierGRPC, "notifier-grpc", "127.0.0.1:7400", "notifier gRPC address")
	fs.StringVar(&c.notifierHTTP, "notifier-http", "127.0.0.1:7480", "notifier HTTP address")
	fs.StringVar(&c.contactsGRPC, "contacts-grpc", "127.0.0.1:7401", "contacts gRPC address")
	fs.StringVar(&c.contactsHTTP, "contacts-http", "127.0.0.1:7481", "contacts HTTP address")
	fs.StringVar(&c.workersHTTP, "workers-http", "127.0.0.1:7482", "workers HTTP address")
	fs.StringVar(&c.simAddr, "sim-addr", "127.0.0.1:7490", "simulator address")
	fs.StringVar(&c.logLevel, "log-level", "warn", "services' log level (logs go to <dir>/herald.log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	s, err := start(ctx, c)
	if err != nil {
		return err
	}
	defer s.close()
	s.printSummary()
	select {
	case <-ctx.Done():
		fmt.Println("\nstopping...")
	case err = <-s.failed:
	}
	return err
}

type stack struct {
	cfg    config
	apiKey string
	// contactsKey is the notifier's own key for the contacts service (app herald-notifier).
	contactsKey string
	linkKeys    string
	// shortLinkKey keys the notifier's short link codes (HERALD_NOTIFIER_LINK_KEY in dev.env).
	shortLinkKey string
	logFile      *os.File
	pg           *pgserver.Server
	// pgDir is the private PostgreSQL's cluster; pgFallback, when not "", the directory under the
	// temp dir that holds it because the postgres user cannot reach cfg.dir.
	pgDir      string
	pgFallback string
	dbURL      string
	nats       *server.Server
	sim        *http.Server
	notifier   *notifierd.Daemon
	contacts   *contactsd.Daemon
	workers    *workersd.Daemon
	failed     chan error
}

func start(ctx context.Context, c config) (_ *stack, err error) {
	began := time.Now()
	s := &stack{cfg: c, failed: make(chan error, 4)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil, err
	}
	s.cfg.dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if s.logFile, err = os.OpenFile(filepath.Join(dir, "herald.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
		return nil, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(s.logFile, &slog.HandlerOptions{Level: level}))

	// The app keys and the link-signing key survive restarts in dev.env; the notifier installs
	// the app keys at start-up: the dev app's (an admin app) and its own for the contacts service.
	env := cli.ReadEnvFile(filepath.Join(dir, "dev.env"))
	s.apiKey = env["HERALD_API_KEY"]
	if _, err := appkey.Parse(s.apiKey); err != nil {
		s.apiKey = appkey.New().String()
	}
	s.contactsKey = env["HERALD_NOTIFIER_CONTACTS_KEY"]
	if _, err := appkey.Parse(s.contactsKey); err != nil {
		s.contactsKey = appkey.New().String()
	}
	s.linkKeys = env["HERALD_LINK_KEYS"]
	if keys, err := linktoken.ParseKeys(s.linkKeys); err != nil || len(keys) == 0 {
		secret := make([]byte, 32)
		rand.Read(secret)
		s.linkKeys = "dev:" + base64.StdEncoding.EncodeToString(secret)
	}
	// The short links' key: the codes of links already sent stay valid across restarts.
	s.shortLinkKey = env["HERALD_NOTIFIER_LINK_KEY"]
	if len(s.shortLinkKey) < 16 {
		secret := make([]byte, 24)
		rand.Read(secret)
		s.shortLinkKey = base64.RawURLEncoding.EncodeToString(secret)
	}

	fmt.Println("starting Herald...")
	s.dbURL = c.databaseURL
	if s.dbURL == "" {
		if err := s.startPostgres(ctx); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	if s.nats, err = natsembed.Start(natsembed.Config{Dir: filepath.Join(dir, "nats"), Port: c.natsPort}); err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	natsURL := s.nats.ClientURL()

	simLis, err := net.Listen("tcp", c.simAddr)
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	s.sim = &http.Server{Handler: sim.NewServer(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.sim.Serve(simLis); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- fmt.Errorf("simulator: %w", err)
		}
	}()

	// The notifier first: it owns the schema holding the app keys that the others check.
	nfs := flag.NewFlagSet("notifier", flag.ContinueOnError)
	var links notifierd.LinksConfig
	links.RegisterFlags(nfs) // the notifier's own defaults
	links.Key, links.BaseURL = s.shortLinkKey, "http://"+c.notifierHTTP
	var inbox notifierd.InboxConfig
	inbox.RegisterFlags(nfs) // the notifier's own defaults; user tokens signed with the link keys
	inbox.LinkKeys = s.linkKeys
	if s.notifier, err = notifierd.Start(ctx, notifierd.Config{
		GRPCAddr: c.notifierGRPC, HTTPAddr: c.notifierHTTP, DatabaseURL: s.dbURL, NATSURL: natsURL,
		ContactsAddr: c.contactsGRPC, ContactsKey: s.contactsKey, BootstrapKey: s.apiKey, BootstrapApp: "dev",
		StreamReplicas: 1, RepublishAfter: time.Minute, ReconcileInterval: time.Second,
		Links: links, Inbox: inbox, Log: log.With("service", "notifier"),
	}); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	contactsURL := "http://" + c.contactsHTTP
	if s.contacts, err = contactsd.Start(ctx, contactsd.Config{
		GRPCAddr: c.contactsGRPC, HTTPAddr: c.contactsHTTP, DatabaseURL: s.dbURL, NATSURL: natsURL,
		StreamReplicas: 1, PublicURL: contactsURL, LinkKeys: s.linkKeys,
		SMSHelpText: "Herald dev stack: reply STOP to stop, START to resume.",
		Log:         log.With("service", "contacts"),
	}); err != nil {
		return nil, fmt.Errorf("contacts: %w", err)
	}
	wfs := flag.NewFlagSet("workers", flag.ContinueOnError)
	var wcfg workersd.Config
	wcfg.RegisterFlags(wfs) // the workers' own defaults
	wcfg.HTTPAddr, wcfg.DatabaseURL, wcfg.NATSURL = c.workersHTTP, s.dbURL, natsURL
	wcfg.SimURL = "http://" + simLis.Addr().String()
	wcfg.ContactsAddr, wcfg.ContactsKey = c.contactsGRPC, s.apiKey
	wcfg.LinkKeys, wcfg.UnsubscribeURL = s.linkKeys, contactsURL
	wcfg.BaseBackoff = time.Second
	wcfg.Log = log.With("service", "workers")
	if s.workers, err = workersd.Start(ctx, wcfg); err != nil {
		return nil, fmt.Errorf("workers: %w", err)
	}
	for _, ch := range []<-chan error{s.notifier.Err(), s.contacts.Err(), s.workers.Err()} {
		go func() { s.failed <- <-ch }()
	}
	if err := s.writeEnv(); err != nil {
		return nil, err
	}
	fmt.Printf("ready in %.1fs\n", time.Since(began).Seconds())
	return s, nil
}

// startPostgres starts the private PostgreSQL, in s.cfg.dir when the postgres user can reach it
// and otherwise in a directory of this checkout's own under the temp dir (see pgDir), and
// creates the herald database.
func (s *stack) startPostgres(ctx context.Context) (err error) {
	if err := pgserver.Available(); err != nil {
		return err
	}
	if s.pgDir, s.pgFallback, err = pgDir(s.cfg.dir); err != nil {
		return err
	}
	s.pg, err = pgserver.Start(ctx, pgserver.Config{Dir: s.pgDir, Port: s.cfg.pgPort, Fsync: true, Log: s.logFile})
	if err != nil {
		return err
	}
	if err := s.pg.CreateDatabase(ctx, "herald"); err != nil {
		return err
	}
	s.dbURL = s.pg.URL("herald")
	return nil
}

func (s *stack) writeEnv() error {
	lines := []string{
		"# Written by herald-dev (make run). heraldctl reads this file when no flags are given.",
		"HERALD_API_KEY=" + s.apiKey,
		"HERALD_NOTIFIER_CONTACTS_KEY=" + s.contactsKey,
		"HERALD_NOTIFIER_ADDR=" + s.notifier.GRPCAddr(),
		"HERALD_CONTACTS_ADDR=" + s.contacts.GRPCAddr(),
		"HERALD_HTTP_URL=http://" + s.notifier.HTTPAddr(),
		"HERALD_CONTACTS_HTTP_URL=http://" + s.contacts.HTTPAddr(),
		"HERALD_NATS_URL=" + s.nats.ClientURL(),
		"HERALD_DATABASE_URL=" + s.dbURL,
		"HERALD_SIM_URL=http://" + s.cfg.simAddr,
		"HERALD_LINK_KEYS=" + s.linkKeys,
		"HERALD_NOTIFIER_LINK_KEY=" + s.shortLinkKey,
		"",
	}
	return os.WriteFile(filepath.Join(s.cfg.dir, "dev.env"), []byte(strings.Join(lines, "\n")), 0o600)
}

// dataSummary says where the stack keeps its data and how to remove it.
func (s *stack) dataSummary() string {
	switch {
	case s.pg == nil:
		return fmt.Sprintf(`  data       %s (PostgreSQL's is in DATABASE_URL's database)
             to start afresh: Ctrl-C, then rm -rf %[1]s`, s.cfg.dir)
	case s.pgFallback != "":
		return fmt.Sprintf(`  data       %s, and PostgreSQL's in %s: the postgres user cannot reach the first
             (the temp dir may be emptied at boot: the next start then begins with an empty database)
             to start afresh: Ctrl-C, then rm -rf %[1]s %[2]s`, s.cfg.dir, s.pgFallback)
	default:
		return fmt.Sprintf(`  data       %s (PostgreSQL's in %s)
             to start afresh: Ctrl-C, then rm -rf %[1]s`, s.cfg.dir, s.pgDir)
	}
}

func (s *stack) printSummary() {
	pg := "external (DATABASE_URL)"
	if s.pg != nil {
		pg = fmt.Sprintf("127.0.0.1:%d (data in %s)", s.pg.Port(), s.pgDir)
	}
	fmt.Printf(`
Herald is running.
  notifier   gRPC %s   HTTP http://%s   (short links: http://%s/l/...)
             the API as HTTP/JSON: http://%[2]s/v1/...   (OpenAPI: http://%[2]s/openapi.json)
  contacts   gRPC %[4]s   HTTP http://%[5]s
  workers    HTTP http://%s   (all channels through the simulator)
  simulator  http://%s   (what was "delivered"; JSON at /v1/messages)
  nats       %s
  postgres   %s
  logs       %s
%s

Environment for heraldctl, grpcurl and curl: %s
Try:
  go run ./cmd/heraldctl send --email you@example.com --subject Hello --body "It works"
  go run ./cmd/heraldctl status <notification id>
  set -a; . %[12]s; set +a; examples/curl/send.sh you@example.com

Ctrl-C stops everything.
`, s.notifier.GRPCAddr(), s.notifier.HTTPAddr(), s.cfg.notifierHTTP, s.contacts.GRPCAddr(), s.contacts.HTTPAddr(),
		s.workers.HTTPAddr(), s.cfg.simAddr, s.nats.ClientURL(), pg,
		filepath.Join(s.cfg.dir, "herald.log"), s.dataSummary(), filepath.Join(s.cfg.dir, "dev.env"))
}

// close stops everything in the reverse order of start.
func (s *stack) close() {
	if s.workers != nil {
		s.workers.Close()
	}
	if s.contacts != nil {
		s.contacts.Close()
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if s.sim != nil {
		s.sim.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
	if s.pg != nil {
		if err := s.pg.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "postgres:", err)
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
}
