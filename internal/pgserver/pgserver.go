// Package pgserver runs a private PostgreSQL server from the machine's binaries, as a child
// process: the dev stack keeps its cluster in a persistent directory, tests in a temp dir (see
// package pgtest).
//
// PostgreSQL refuses to run as root. When the caller is root, initdb and postgres run as the
// postgres user and Config.Dir is chowned to it, so every parent of Config.Dir must be searchable
// by that user (Reachable says whether it is). t.TempDir is not (its parent is a mode 0700
// directory owned by root), nor is root's home on Debian: use a directory from
// os.MkdirTemp("", ...) itself as Config.Dir, or chmod its parent to 0755.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// User is the cluster's superuser, which every URL connects as (trust authentication, loopback
// only).
const User = "herald"

// Config says where the server keeps its cluster and how it runs.
type Config struct {
	// Dir is the cluster's data directory; it also holds the server's unix socket. Start creates
	// and initialises it (initdb) when it holds no cluster yet.
	Dir string
	// Port is the loopback TCP port to listen on; 0 picks a free one.
	Port int
	// Fsync makes commits durable. Tests leave it off: with fsync, synchronous_commit and
	// full_page_writes off, a commit survives Stop but the last few hundred milliseconds of
	// commits may be lost to Kill, and all of them to a machine crash.
	Fsync bool
	// Log receives the server's log (its stderr) and initdb's output; nil discards them. Writes
	// must not block, and it must stay usable until the server has stopped.
	Log io.Writer
	// Settings are more server settings, "name=value" each (postgres -c).
	Settings []string
}

// Server is a running PostgreSQL server started by Start.
type Server struct {
	dir    string
	port   int
	cmd    *exec.Cmd
	log    *logTail
	exited <-chan struct{} // closed when the postmaster has exited
	err    error           // the postmaster's exit status; read after exited is closed

	mu       sync.Mutex
	stopping bool // Stop or Kill was called
}

// How long Stop waits for a fast shutdown (a checkpoint) and Kill for an immediate one before
// they resort to SIGKILL.
const (
	stopGrace = time.Minute
	killGrace = 30 * time.Second
)

// maxSocketPath is PostgreSQL's limit on a unix socket's path (sizeof(sun_path) - 1 on Linux).
const maxSocketPath = 107

// errPortTaken marks a start that failed because something else holds the port.
var errPortTaken = errors.New("in use")

// pickPort returns a free port for a Config with Port 0; tests replace it.
var pickPort = freePort

// Start initialises cfg.Dir if it holds no cluster, starts postgres on it and waits, within ctx,
// until the server accepts connections. ctx bounds only the start-up. It returns the error of
// Available when the binaries are missing, and an error carrying the tail of the server's log
// when the server exits during start-up.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("start postgres: no Config.Dir")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	// The socket's path must fit in sockaddr_un, or the server starts without one and fails.
	if sock := filepath.Join(dir, ".s.PGSQL.65535"); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("start postgres: cluster dir %s is too long to hold a unix socket (%s is over %d bytes)", dir, sock, maxSocketPath)
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, cred); err != nil {
		return nil, err
	}
	if pid := running(dir); pid != 0 {
		return nil, fmt.Errorf("start postgres: a postgres (pid %d) is already running in %s: stop it first", pid, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := initdb(ctx, bin, dir, cfg, cred); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}

	// A port picked here is free only until postgres binds it; if another process takes it in
	// between, pick another.
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			if port, err = pickPort(); err != nil {
				return nil, err
			}
		}
		s, err := launch(ctx, bin, dir, port, cfg, cred)
		if err != nil && cfg.Port == 0 && attempt < 5 && errors.Is(err, errPortTaken) {
			continue
		}
		return s, err
	}
}

// launch starts the postmaster on port and waits until it accepts connections.
func launch(ctx context.Context, bin, dir string, port int, cfg Config, cred *syscall.Credential) (*Server, error) {
	args := []string{
		"-D", dir,
		"-k", dir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=200",
	}
	if !cfg.Fsync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, setting := range cfg.Settings {
		args = append(args, "-c", setting)
	}
	log := &logTail{w: cfg.Log}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = log, log
	// After a SIGKILL, orphaned backends notice the postmaster's death and exit, closing the log
	// pipe they inherited; do not wait forever for one that does not.
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = procAttr(cred, syscall.SIGQUIT)
	exited := make(chan struct{})
	s := &Server{dir: dir, port: port, cmd: cmd, log: log, exited: exited}
	waited, err := startChild(cmd)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		s.err = <-waited
		close(exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Kill()
		return nil, err
	}
	return s, nil
}

// waitReady polls until the server accepts connections, it exits, or ctx ends. It polls the
// unix socket in the server's dir, which no other server can answer on, and the postmaster
// creates that socket only once it listens on its TCP port.
func (s *Server) waitReady(ctx context.Context) error {
	cc, err := pgx.ParseConfig(s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	local := cc.Copy()
	local.Host, local.Fallbacks = s.dir, nil
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		err := ping(ctx, local)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != "57P03" { // cannot_connect_now: starting up
			return fmt.Errorf("start postgres: %w", err)
		}
		select {
		case <-s.exited:
			// The log is all there is to tell a lost race for the port from other failures.
			if strings.Contains(s.log.String(), "could not bind") {
				return fmt.Errorf("start postgres: port %d %w; log:\n%s", s.port, errPortTaken, s.log)
			}
			return fmt.Errorf("start postgres: exited during start-up (%v); log:\n%s", s.err, s.log)
		case <-ctx.Done():
			return fmt.Errorf("start postgres: not ready: %w (last: %v); log:\n%s", ctx.Err(), err, s.log)
		case <-poll.C:
		}
	}
	if err := ping(ctx, cc); err != nil {
		return fmt.Errorf("start postgres: on port %d: %w", s.port, err)
	}
	return nil
}

// ping connects once.
func ping(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// Port returns the loopback TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// URL returns the URL that connects to database as User over loopback TCP.
func (s *Server) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(User),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates the database name; it returns nil if the database exists already.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// duplicate_database, or unique_violation when a concurrent CREATE won the race.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Stop shuts the server down cleanly (a fast shutdown: sessions are ended, a checkpoint is
// written) and waits until it has exited, killing it if that takes over a minute. It returns an
// error if the server had already exited on its own or did not shut down cleanly; calling it
// again returns nil.
func (s *Server) Stop() error {
	return s.shutdown(syscall.SIGINT, stopGrace)
}

// Kill stops the server the way a crash would (an immediate shutdown: no checkpoint, crash
// recovery on the next Start) and waits until it and its backends have exited. Start on the
// same Dir and Port then brings it back. Kill returns an error only if the server had already
// exited on its own or did not stop.
func (s *Server) Kill() error {
	return s.shutdown(syscall.SIGQUIT, killGrace)
}

func (s *Server) shutdown(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	first := !s.stopping
	s.stopping = true
	s.mu.Unlock()
	select {
	case <-s.exited:
		if first {
			return fmt.Errorf("stop postgres: it had exited (%v); log:\n%s", s.err, s.log)
		}
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop postgres: %w", err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-s.exited:
	case <-timer.C:
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("stop postgres: still running %v after %v; killed", grace, sig)
	}
	if sig == syscall.SIGINT && s.err != nil {
		return fmt.Errorf("stop postgres: %w; log:\n%s", s.err, s.log)
	}
	return nil
}

// initdb creates a cluster in dir with User as its trusted superuser.
func initdb(ctx context.Context, bin, dir string, cfg Config, cred *syscall.Credential) error {
	args := []string{"-D", dir, "-U", User, "-A", "trust", "-E", "UTF8", "--locale=C"}
	if !cfg.Fsync {
		args = append(args, "--no-sync")
	}
	out := &logTail{w: cfg.Log}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = out, out
	// initdb removes what it created when it gets SIGTERM, but not after SIGKILL, and a half-made
	// cluster with a PG_VERSION would not be initialised again.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.SysProcAttr = procAttr(cred, syscall.SIGTERM)
	waited, err := startChild(cmd)
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if err := <-waited; err != nil {
		return fmt.Errorf("initdb %s: %w; output:\n%s", dir, err, out)
	}
	return nil
}

// runAs returns the credentials of the postgres user when the caller is root, and nil otherwise.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres refuses to run as root, and there is no postgres user to run it as (install postgresql: apt-get install -y postgresql): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// prepareDir creates dir if need be and, when the server runs as another user, gives dir to that
// user and checks that the user can reach it.
func prepareDir(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create cluster dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create cluster dir: %w", err)
	}
	if cred == nil {
		return nil
	}
	// Checked first because initdb's own complaint does not say which directory is at fault.
	if err := reachable(dir, cred); err != nil {
		return err
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("give cluster dir to postgres: %w", err)
	}
	return nil
}

// UnreachableError is the error of Reachable, and of Start, when the user the server runs as
// cannot enter a parent of the cluster dir.
type UnreachableError struct {
	Dir    string      // the cluster dir
	Parent string      // the first parent of Dir, from the root down, that the user cannot enter
	Mode   fs.FileMode // Parent's mode
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cluster dir %s: PostgreSQL runs as the postgres user (it refuses to run as root), which cannot enter %s (%v): "+
		"keep the cluster in a directory that user can reach (in tests, one from os.MkdirTemp(\"\", ...), not t.TempDir), or let it through: chmod o+x %s",
		e.Dir, e.Parent, e.Mode, e.Parent)
}

// Reachable returns nil if the user Start runs the server as can reach dir, a cluster dir that
// need not exist yet: that is, if that user can enter every parent of dir that exists (Start
// creates the missing ones, mode 0755). Otherwise it returns an *UnreachableError. When the
// caller is not root, the server runs as the caller, and Reachable checks nothing.
func Reachable(dir string) error {
	cred, err := runAs()
	if err != nil || cred == nil {
		return err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	return reachable(dir, cred)
}

// reachable checks the parents of dir, an absolute path, from the root down.
func reachable(dir string, cred *syscall.Credential) error {
	var parents []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		parents = append(parents, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for _, p := range slices.Backward(parents) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check cluster dir: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		if ok && perm&0o001 == 0 && !(st.Uid == cred.Uid && perm&0o100 != 0) && !(st.Gid == cred.Gid && perm&0o010 != 0) {
			return &UnreachableError{Dir: dir, Parent: p, Mode: fi.Mode()}
		}
	}
	return nil
}

// running returns the pid of a postmaster still serving dir, as recorded in its postmaster.pid,
// or 0. A postmaster works in its data directory, which tells a live one from a stale pid file
// whose pid now belongs to another process; postgres itself removes stale pid files.
func running(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return 0
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil || cwd != real {
		return 0
	}
	return pid
}

// freePort returns a loopback TCP port that nothing listens on at the moment.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail passes a child's output on to w and keeps its end for error messages.
type logTail struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

const tailSize = 4 << 10

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 4*tailSize {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-tailSize:]...)
	}
	if l.w != nil {
		l.w.Write(p) // a failing log must not stop the server
	}
	return len(p), nil
}

// String returns about the last tailSize bytes, from the start of a line.
func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > tailSize {
		b = b[len(b)-tailSize:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
