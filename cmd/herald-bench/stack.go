package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/pgserver"
)

// stack is Herald as the benchmark runs it: a private PostgreSQL, NATS and the three services,
// each its own process on loopback, and the provider fakes inside the benchmark's process.
type stack struct {
	cfg    config
	out    io.Writer
	dir    string // temp dir: binaries, data, logs, credential files
	bin    string
	logs   string
	failed chan error // a child that exits before it is stopped

	pg      *pgserver.Server
	pgPID   int
	pgLog   *os.File
	dbURL   string
	natsURL string

	nats, notifier, contacts, workers *proc

	notifierGRPC, notifierHTTP string
	contactsGRPC, contactsHTTP string
	workersHTTP                string
	pprof                      map[string]string // service → its pprof listener, with --profile

	// recv passes what the provider fakes receive to the tracker of the phase under way.
	recv receiver

	key string // the bootstrap admin app's key, which the load generator sends with
	// contactsKey is the notifier's own key for the contacts service, which it installs.
	contactsKey string
	linkKeys    string
	prov        *providers
}

// repoRoot returns the directory holding go.work, looking up from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Herald repository (no go.work above the working directory): run herald-bench from the repository")
		}
		dir = parent
	}
}

// binaries the benchmark builds and runs.
var binaries = []string{
	"./services/notifier/cmd/notifier",
	"./services/contacts/cmd/contacts",
	"./services/workers/cmd/workers",
	"./cmd/herald-nats",
}

// newStack makes the temp dir and builds the binaries into it.
func newStack(ctx context.Context, cfg config, out io.Writer) (_ *stack, err error) {
	s := &stack{cfg: cfg, out: out, failed: make(chan error, 1)}
	s.recv.cur.Store(newTracker(time.Now()))
	if s.dir, err = os.MkdirTemp("", "herald-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	// PostgreSQL runs as the postgres user when the benchmark runs as root: it must be able to
	// enter the temp dir.
	if err := os.Chmod(s.dir, 0o755); err != nil {
		return nil, err
	}
	s.bin, s.logs = filepath.Join(s.dir, "bin"), filepath.Join(s.dir, "logs")
	for _, d := range []string{s.bin, s.logs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	fmt.Fprintf(out, "building %s ... ", strings.Join(binaries, " "))
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", s.bin + "/"}, binaries...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, b)
	}
	fmt.Fprintf(out, "%.1fs\n", time.Since(began).Seconds())
	return s, nil
}

// start starts PostgreSQL, NATS, the notifier, the contacts service, the provider fakes and,
// unless withWorkers is false, the workers.
func (s *stack) start(ctx context.Context, withWorkers bool) (err error) {
	began := time.Now()
	s.key = appkey.New().String()
	s.contactsKey = appkey.New().String()
	secret := make([]byte, 32)
	rand.Read(secret)
	s.linkKeys = "bench:" + base64.StdEncoding.EncodeToString(secret)

	if err := pgserver.Available(); err != nil {
		return err
	}
	if s.pgLog, err = os.Create(filepath.Join(s.logs, "postgres.log")); err != nil {
		return err
	}
	// Fsync: fsync, synchronous_commit and full_page_writes stay at PostgreSQL's defaults (on),
	// as in production.
	pgDir := filepath.Join(s.dir, "pg")
	if s.pg, err = pgserver.Start(ctx, pgserver.Config{Dir: pgDir, Fsync: true, Log: s.pgLog}); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := s.pg.CreateDatabase(ctx, "herald"); err != nil {
		return err
	}
	s.dbURL = s.pg.URL("herald")
	if s.pgPID, err = postmasterPID(pgDir); err != nil {
		return err
	}

	natsLog := filepath.Join(s.logs, "nats.log")
	if s.nats, err = startProc("nats", filepath.Join(s.bin, "herald-nats"), []string{
		"--addr", "127.0.0.1:0", "--store-dir", filepath.Join(s.dir, "nats"),
		"--sync-always=" + strconv.FormatBool(s.cfg.natsSyncAlways),
	}, nil, natsLog, s.failed); err != nil {
		return err
	}
	if s.natsURL, err = waitLine(ctx, natsLog, "herald-nats: ready ", s.failed); err != nil {
		return err
	}

	var addrs []string
	for len(addrs) < 5 {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	s.notifierGRPC, s.notifierHTTP, s.contactsGRPC, s.contactsHTTP, s.workersHTTP =
		addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	logLevel := []string{"--log-level", s.cfg.serviceLogLevel}

	profiling := map[string][]string{}
	for _, name := range []string{"notifier", "contacts", "workers"} {
		if profiling[name], err = s.pprofArgs(name); err != nil {
			return err
		}
	}

	// The notifier first: it owns the schema holding the app keys that the others check.
	if s.notifier, err = startProc("notifier", filepath.Join(s.bin, "notifier"), append([]string{
		"--grpc-addr", s.notifierGRPC, "--http-addr", s.notifierHTTP, "--nats-url", s.natsURL,
		"--contacts-addr", s.contactsGRPC, "--public-url", "http://" + s.notifierHTTP,
		"--bootstrap-app", "bench",
		// The app's request rate must not be what limits the load.
		"--app-rate", "1000000", "--app-burst", "1000000",
	}, append(logLevel, profiling["notifier"]...)...), []string{
		"HERALD_DATABASE_URL=" + s.dbURL, "HERALD_BOOTSTRAP_KEY=" + s.key, "HERALD_CONTACTS_KEY=" + s.contactsKey,
	}, filepath.Join(s.logs, "notifier.log"), s.failed); err != nil {
		return err
	}
	if err := waitReady(ctx, "notifier", "http://"+s.notifierHTTP+"/readyz", s.failed); err != nil {
		return err
	}
	if s.contacts, err = startProc("contacts", filepath.Join(s.bin, "contacts"), append([]string{
		"--grpc-addr", s.contactsGRPC, "--http-addr", s.contactsHTTP, "--nats-url", s.natsURL,
		"--public-url", "http://" + s.contactsHTTP,
	}, append(logLevel, profiling["contacts"]...)...), []string{
		"HERALD_DATABASE_URL=" + s.dbURL, "HERALD_LINK_KEYS=" + s.linkKeys,
	}, filepath.Join(s.logs, "contacts.log"), s.failed); err != nil {
		return err
	}
	if err := waitReady(ctx, "contacts", "http://"+s.contactsHTTP+"/readyz", s.failed); err != nil {
		return err
	}
	if s.prov, err = startProviders(s.dir, s.cfg.providerLatency, &s.recv); err != nil {
		return err
	}
	if withWorkers {
		if err := s.startWorkers(ctx, s.failed); err != nil {
			return err
		}
	}
	fmt.Fprintf(s.out, "stack ready in %.1fs (postgres, nats, notifier, contacts%s as processes; logs in %s)\n",
		time.Since(began).Seconds(), map[bool]string{true: ", workers", false: ""}[withWorkers], s.logs)
	return nil
}

// startWorkers starts the workers, on every channel, against the provider fakes, and waits
// until they are ready, until ctx ends, or until failed reports a child's death (nil: when
// another goroutine watches s.failed and ends ctx).
func (s *stack) startWorkers(ctx context.Context, failed <-chan error) (err error) {
	args := []string{
		"--http-addr", s.workersHTTP, "--nats-url", s.natsURL, "--channels", "ios,android,sms,email",
		"--contacts-addr", s.contactsGRPC, "--unsubscribe-url", "http://" + s.contactsHTTP,
		"--log-level", s.cfg.serviceLogLevel,
	}
	if addr := s.pprof["workers"]; addr != "" {
		args = append(args, "--pprof-addr", addr)
	}
	if s.cfg.workerConcurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(s.cfg.workerConcurrency))
	}
	if s.cfg.workerBatchSize > 0 {
		args = append(args, "--batch-size", strconv.Itoa(s.cfg.workerBatchSize))
	}
	env := append([]string{
		"HERALD_DATABASE_URL=" + s.dbURL, "HERALD_CONTACTS_KEY=" + s.key, "HERALD_LINK_KEYS=" + s.linkKeys,
	}, s.prov.workerEnv...)
	if s.workers, err = startProc("workers", filepath.Join(s.bin, "workers"), append(args, s.prov.workerArgs...),
		env, filepath.Join(s.logs, "workers.log"), s.failed); err != nil {
		return err
	}
	return waitReady(ctx, "workers", "http://"+s.workersHTTP+"/readyz", failed)
}

// postmasterPID reads the postmaster's pid from its pid file.
func postmasterPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postgres pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// services returns the stack's Go processes that are running, in start order.
func (s *stack) services() []*proc {
	var out []*proc
	for _, p := range []*proc{s.nats, s.notifier, s.contacts, s.workers} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// close stops everything in the reverse order of start and removes the temp dir (unless
// --keep). It is safe to call on a stack that started only in part.
func (s *stack) close() {
	for _, p := range []*proc{s.workers, s.notifier, s.contacts, s.nats} {
		if p != nil {
			p.stop(15 * time.Second)
		}
	}
	if s.prov != nil {
		s.prov.close()
	}
	if s.pg != nil {
		if err := s.pg.Stop(); err != nil {
			fmt.Fprintln(s.out, "postgres:", err)
		}
	}
	if s.pgLog != nil {
		s.pgLog.Close()
	}
	if s.dir == "" {
		return
	}
	if s.cfg.keep {
		fmt.Fprintln(s.out, "kept", s.dir)
		return
	}
	if err := os.RemoveAll(s.dir); err != nil {
		fmt.Fprintln(s.out, "remove temp dir:", err)
	}
}
