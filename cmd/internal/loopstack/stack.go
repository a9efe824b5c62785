// Package loopstack runs Herald as separate processes on loopback, for the end-to-end
// benchmark (cmd/herald-bench) and the fault suite (cmd/herald-chaos): it builds the service
// binaries, starts a private PostgreSQL with production durability, NATS JetStream (one server
// or a three-node cluster, cmd/herald-nats), the notifier, contacts and workers services, and
// the four provider fakes in the calling process, and it can kill and restart each of them.
// A Tracker matches the deliveries Send accepted with those the fakes received.
package loopstack

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
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/pgserver"
)

// Config says how the stack runs.
type Config struct {
	// TempPrefix names the temp dir that holds binaries, data and logs.
	TempPrefix string
	// NATSSyncAlways makes NATS fsync every write.
	NATSSyncAlways bool
	// NATSNodes is 1 (one server, the default) or 3 (a cluster, whose streams the services
	// create with StreamReplicas).
	NATSNodes      int
	StreamReplicas int
	// ServiceLogLevel is every service's --log-level.
	ServiceLogLevel string
	// WorkerConcurrency and WorkerBatchSize, when positive, set the workers' flags.
	WorkerConcurrency int
	WorkerBatchSize   int
	// ProviderLatency is how long every provider fake takes to answer.
	ProviderLatency time.Duration
	// BootstrapApp names the admin app whose key the stack installs.
	BootstrapApp string
	// Args are added to the flags of the service they name: "notifier", "contacts" or
	// "workers".
	Args map[string][]string
	// Keep keeps the temp dir instead of removing it.
	Keep bool
	// PostgresSettings are more PostgreSQL server settings, "name=value" each.
	PostgresSettings []string
	// EmailFailover sends email through two SendGrid fakes in failover order (a providers
	// file), so that faults of the first exercise failover to the second.
	EmailFailover bool
}

// Stack is Herald as separate processes on loopback: a private PostgreSQL, NATS and the three
// services, and the provider fakes inside the calling process.
type Stack struct {
	cfg  Config
	Out  io.Writer
	Dir  string // temp dir: binaries, data, logs, credential files
	bin  string
	Logs string
	// Failed receives an error when a child exits before it is stopped or killed.
	Failed chan error

	pg     *pgserver.Server
	pgDir  string
	pgPort int
	PGPID  int
	pgLog  *os.File
	DBURL  string
	// NATSURL lists every NATS server's client URL, comma-separated.
	NATSURL string
	NATS    []*NATSNode

	Notifier, Contacts, Workers *Proc

	NotifierGRPC, NotifierHTTP string
	ContactsGRPC, ContactsHTTP string
	WorkersHTTP                string

	// Recv passes what the provider fakes receive to the tracker of the phase under way.
	Recv Receiver

	// AdminKey is the bootstrap admin app's key, which a load generator sends with.
	AdminKey string
	// contactsKey is the notifier's own key for the contacts service, which it installs.
	contactsKey string
	linkKeys    string
	Prov        *Providers
}

// NATSNode is one NATS server of the stack.
type NATSNode struct {
	Name        string
	Addr        string // client host:port
	ClusterAddr string // route host:port (clusters only)
	dir, log    string
	Proc        *Proc // nil while it is down
}

// RepoRoot returns the directory holding go.work, looking up from the working directory.
func RepoRoot() (string, error) {
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
			return "", errors.New("not inside the Herald repository (no go.work above the working directory): run it from the repository")
		}
		dir = parent
	}
}

// binaries the stack builds and runs.
var binaries = []string{
	"./services/notifier/cmd/notifier",
	"./services/contacts/cmd/contacts",
	"./services/workers/cmd/workers",
	"./cmd/herald-nats",
}

// New makes the temp dir and builds the binaries into it.
func New(ctx context.Context, cfg Config, out io.Writer) (_ *Stack, err error) {
	if cfg.NATSNodes <= 0 {
		cfg.NATSNodes = 1
	}
	if cfg.TempPrefix == "" {
		cfg.TempPrefix = "herald-stack-"
	}
	if cfg.BootstrapApp == "" {
		cfg.BootstrapApp = "admin"
	}
	if cfg.ServiceLogLevel == "" {
		cfg.ServiceLogLevel = "warn"
	}
	s := &Stack{cfg: cfg, Out: out, Failed: make(chan error, 1)}
	s.Recv.Cur.Store(NewTracker(time.Now()))
	if s.Dir, err = os.MkdirTemp("", cfg.TempPrefix); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// PostgreSQL runs as the postgres user when this runs as root: it must be able to enter the
	// temp dir.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return nil, err
	}
	s.bin, s.Logs = filepath.Join(s.Dir, "bin"), filepath.Join(s.Dir, "logs")
	for _, d := range []string{s.bin, s.Logs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	root, err := RepoRoot()
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

// Start starts PostgreSQL, NATS, the notifier, the contacts service, the provider fakes and,
// unless withWorkers is false, the workers.
func (s *Stack) Start(ctx context.Context, withWorkers bool) (err error) {
	began := time.Now()
	s.AdminKey = appkey.New().String()
	s.contactsKey = appkey.New().String()
	secret := make([]byte, 32)
	rand.Read(secret)
	s.linkKeys = "bench:" + base64.StdEncoding.EncodeToString(secret)

	if err := pgserver.Available(); err != nil {
		return err
	}
	if s.pgLog, err = os.Create(filepath.Join(s.Logs, "postgres.log")); err != nil {
		return err
	}
	s.pgDir = filepath.Join(s.Dir, "pg")
	if err := s.StartPostgres(ctx); err != nil {
		return err
	}
	if err := s.pg.CreateDatabase(ctx, "herald"); err != nil {
		return err
	}
	s.DBURL = s.pg.URL("herald")

	if err := s.startNATS(ctx); err != nil {
		return err
	}

	addrs, err := FreeAddrs(5)
	if err != nil {
		return err
	}
	s.NotifierGRPC, s.NotifierHTTP, s.ContactsGRPC, s.ContactsHTTP, s.WorkersHTTP =
		addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]

	// The notifier first: it owns the schema holding the app keys that the others check.
	if err := s.StartNotifier(ctx, s.Failed); err != nil {
		return err
	}
	if err := s.StartContacts(ctx, s.Failed); err != nil {
		return err
	}
	if s.Prov, err = StartProviders(s.Dir, s.cfg.ProviderLatency, &s.Recv); err != nil {
		return err
	}
	if s.cfg.EmailFailover {
		if err := s.Prov.AddEmailBackup(s.Dir, s.cfg.ProviderLatency, &s.Recv); err != nil {
			return err
		}
	}
	if withWorkers {
		if err := s.StartWorkers(ctx, s.Failed); err != nil {
			return err
		}
	}
	fmt.Fprintf(s.Out, "stack ready in %.1fs (postgres, nats, notifier, contacts%s as processes; logs in %s)\n",
		time.Since(began).Seconds(), map[bool]string{true: ", workers", false: ""}[withWorkers], s.Logs)
	return nil
}

// StartPostgres starts PostgreSQL (fsync, synchronous_commit and full_page_writes at their
// defaults, on, as in production) on the stack's data directory; after the first start, on the
// same port, so that the services' URL stays right.
func (s *Stack) StartPostgres(ctx context.Context) (err error) {
	s.pg, err = pgserver.Start(ctx, pgserver.Config{Dir: s.pgDir, Port: s.pgPort, Fsync: true, Log: s.pgLog,
		Settings: s.cfg.PostgresSettings})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	s.pgPort = s.pg.Port()
	if s.PGPID, err = postmasterPID(s.pgDir); err != nil {
		return err
	}
	return nil
}

// KillPostgres stops PostgreSQL in immediate mode (as pg_ctl stop -m immediate does: no
// checkpoint, crash recovery at the next start).
func (s *Stack) KillPostgres() error { return s.pg.Kill() }

// natsArgs returns the flags of NATS node i.
func (s *Stack) natsArgs(n *NATSNode) []string {
	args := []string{"--addr", n.Addr, "--store-dir", n.dir,
		"--sync-always=" + strconv.FormatBool(s.cfg.NATSSyncAlways)}
	if len(s.NATS) > 1 {
		var routes []string
		for _, o := range s.NATS {
			routes = append(routes, "nats-route://"+o.ClusterAddr)
		}
		args = append(args, "--name", n.Name, "--cluster-name", "herald", "--cluster-addr", n.ClusterAddr,
			"--routes", strings.Join(routes, ","))
	}
	return args
}

// startNATS starts NATS: one server, or a cluster of s.cfg.NATSNodes.
func (s *Stack) startNATS(ctx context.Context) error {
	n := s.cfg.NATSNodes
	addrs, err := FreeAddrs(2 * n)
	if err != nil {
		return err
	}
	var urls []string
	for i := range n {
		node := &NATSNode{Name: "nats", Addr: addrs[2*i], dir: filepath.Join(s.Dir, "nats"),
			log: filepath.Join(s.Logs, "nats.log")}
		if n > 1 {
			node.Name = fmt.Sprintf("nats-%d", i+1)
			node.ClusterAddr = addrs[2*i+1]
			node.dir = filepath.Join(s.Dir, node.Name)
			node.log = filepath.Join(s.Logs, node.Name+".log")
		}
		s.NATS = append(s.NATS, node)
		urls = append(urls, "nats://"+node.Addr)
	}
	s.NATSURL = strings.Join(urls, ",")
	// A cluster's nodes wait for each other: start them all, then wait for each.
	from := make([]int64, n)
	for i, node := range s.NATS {
		from[i] = fileSize(node.log)
		if node.Proc, err = StartProc(node.Name, filepath.Join(s.bin, "herald-nats"), s.natsArgs(node), nil,
			node.log, s.Failed); err != nil {
			return err
		}
	}
	for i, node := range s.NATS {
		if _, err := WaitLine(ctx, node.log, from[i], "herald-nats: ready ", s.Failed); err != nil {
			return err
		}
	}
	return nil
}

// StartNATSNode starts NATS node i again, on its address and store, and waits until it accepts
// connections; failed receives an error if it exits unexpectedly later.
func (s *Stack) StartNATSNode(ctx context.Context, i int, failed chan<- error) (err error) {
	node := s.NATS[i]
	from := fileSize(node.log)
	if node.Proc, err = StartProc(node.Name, filepath.Join(s.bin, "herald-nats"), s.natsArgs(node), nil,
		node.log, failed); err != nil {
		return err
	}
	_, err = WaitLine(ctx, node.log, from, "herald-nats: ready ", nil)
	return err
}

// StartNotifier starts the notifier and waits until it is ready, until ctx ends, or until
// failed reports a child's death (nil: when another goroutine watches s.Failed).
func (s *Stack) StartNotifier(ctx context.Context, failed <-chan error) (err error) {
	args := append([]string{
		"--grpc-addr", s.NotifierGRPC, "--http-addr", s.NotifierHTTP, "--nats-url", s.NATSURL,
		"--contacts-addr", s.ContactsGRPC, "--public-url", "http://" + s.NotifierHTTP,
		"--bootstrap-app", s.cfg.BootstrapApp,
		// The app's request rate must not be what limits the load.
		"--app-rate", "1000000", "--app-burst", "1000000",
		"--log-level", s.cfg.ServiceLogLevel,
	}, s.streamArgs()...)
	if s.Notifier, err = StartProc("notifier", filepath.Join(s.bin, "notifier"), append(args, s.cfg.Args["notifier"]...), []string{
		"HERALD_DATABASE_URL=" + s.DBURL, "HERALD_BOOTSTRAP_KEY=" + s.AdminKey, "HERALD_CONTACTS_KEY=" + s.contactsKey,
		"HERALD_LINK_KEYS=" + s.linkKeys,
	}, filepath.Join(s.Logs, "notifier.log"), s.Failed); err != nil {
		return err
	}
	return WaitReady(ctx, "notifier", "http://"+s.NotifierHTTP+"/readyz", failed)
}

// StartContacts starts the contacts service and waits until it is ready, until ctx ends, or
// until failed reports a child's death (nil: when another goroutine watches s.Failed).
func (s *Stack) StartContacts(ctx context.Context, failed <-chan error) (err error) {
	args := append([]string{
		"--grpc-addr", s.ContactsGRPC, "--http-addr", s.ContactsHTTP, "--nats-url", s.NATSURL,
		"--public-url", "http://" + s.ContactsHTTP, "--log-level", s.cfg.ServiceLogLevel,
	}, s.streamArgs()...)
	if s.Contacts, err = StartProc("contacts", filepath.Join(s.bin, "contacts"), append(args, s.cfg.Args["contacts"]...), []string{
		"HERALD_DATABASE_URL=" + s.DBURL, "HERALD_LINK_KEYS=" + s.linkKeys,
	}, filepath.Join(s.Logs, "contacts.log"), s.Failed); err != nil {
		return err
	}
	return WaitReady(ctx, "contacts", "http://"+s.ContactsHTTP+"/readyz", failed)
}

func (s *Stack) streamArgs() []string {
	if s.cfg.StreamReplicas > 0 {
		return []string{"--stream-replicas", strconv.Itoa(s.cfg.StreamReplicas)}
	}
	return nil
}

// StartWorkers starts the workers, on every channel, against the provider fakes, and waits
// until they are ready, until ctx ends, or until failed reports a child's death (nil: when
// another goroutine watches s.Failed and ends ctx).
func (s *Stack) StartWorkers(ctx context.Context, failed <-chan error) (err error) {
	args := append([]string{
		"--http-addr", s.WorkersHTTP, "--nats-url", s.NATSURL, "--channels", "ios,android,sms,email,inbox",
		"--contacts-addr", s.ContactsGRPC, "--unsubscribe-url", "http://" + s.ContactsHTTP,
		"--log-level", s.cfg.ServiceLogLevel,
	}, s.streamArgs()...)
	if s.cfg.WorkerConcurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(s.cfg.WorkerConcurrency))
	}
	if s.cfg.WorkerBatchSize > 0 {
		args = append(args, "--batch-size", strconv.Itoa(s.cfg.WorkerBatchSize))
	}
	args = append(args, s.cfg.Args["workers"]...)
	env := append([]string{
		"HERALD_DATABASE_URL=" + s.DBURL, "HERALD_CONTACTS_KEY=" + s.AdminKey, "HERALD_LINK_KEYS=" + s.linkKeys,
	}, s.Prov.WorkerEnv...)
	if s.Workers, err = StartProc("workers", filepath.Join(s.bin, "workers"), append(args, s.Prov.WorkerArgs...),
		env, filepath.Join(s.Logs, "workers.log"), s.Failed); err != nil {
		return err
	}
	return WaitReady(ctx, "workers", "http://"+s.WorkersHTTP+"/readyz", failed)
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

// Services returns the stack's Go processes that are running, in start order.
func (s *Stack) Services() []*Proc {
	var out []*Proc
	for _, n := range s.NATS {
		if n.Proc != nil {
			out = append(out, n.Proc)
		}
	}
	for _, p := range []*Proc{s.Notifier, s.Contacts, s.Workers} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// Close stops everything in the reverse order of start and removes the temp dir (unless
// Config.Keep). It is safe to call on a stack that started only in part.
func (s *Stack) Close() {
	for _, p := range []*Proc{s.Workers, s.Notifier, s.Contacts} {
		if p != nil {
			p.Stop(15 * time.Second)
		}
	}
	for _, n := range s.NATS {
		if n.Proc != nil {
			n.Proc.Stop(15 * time.Second)
		}
	}
	if s.Prov != nil {
		s.Prov.Close()
	}
	if s.pg != nil {
		if err := s.pg.Stop(); err != nil {
			fmt.Fprintln(s.Out, "postgres:", err)
		}
	}
	if s.pgLog != nil {
		s.pgLog.Close()
	}
	if s.Dir == "" {
		return
	}
	if s.cfg.Keep {
		fmt.Fprintln(s.Out, "kept", s.Dir)
		return
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		fmt.Fprintln(s.Out, "remove temp dir:", err)
	}
}
