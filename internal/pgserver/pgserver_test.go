package pgserver_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldhq/herald/internal/pgserver"
)

// tempDir returns a fresh dir for a cluster. Not t.TempDir: when the tests run as root, the
// server runs as postgres, which cannot enter t.TempDir's root-only parent.
func tempDir(t *testing.T) string {
	t.Helper()
	if err := pgserver.Available(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "herald-pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func start(t *testing.T, cfg pgserver.Config) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, err := pgserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started on port %d in %v", s.Port(), time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { s.Stop() })
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, url, table string) int {
	t.Helper()
	conn := connect(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStopStartKeepsData(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	s := start(t, pgserver.Config{Dir: dir})
	conn := connect(t, s.URL("postgres"))
	exec(t, conn, "CREATE TABLE notes (body text)")
	exec(t, conn, "INSERT INTO notes VALUES ('kept'), ('also kept')")
	conn.Close(t.Context())
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	s = start(t, pgserver.Config{Dir: dir})
	if n := count(t, s.URL("postgres"), "notes"); n != 2 {
		t.Errorf("after restart: %d rows, want 2", n)
	}
}

func TestKillStartRecovers(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	// Fsync on: with it off, commits of the last few hundred milliseconds may be lost to Kill.
	s := start(t, pgserver.Config{Dir: dir, Fsync: true})
	conn := connect(t, s.URL("postgres"))
	exec(t, conn, "CREATE TABLE notes (body text)")
	exec(t, conn, "INSERT INTO notes VALUES ('committed')")
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after Kill: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Error("a session survived Kill")
	}

	s = start(t, pgserver.Config{Dir: dir, Port: s.Port(), Fsync: true})
	if n := count(t, s.URL("postgres"), "notes"); n != 1 {
		t.Errorf("after crash recovery: %d rows, want 1", n)
	}
}

func TestCreateDatabase(t *testing.T) {
	t.Parallel()
	s := start(t, pgserver.Config{Dir: tempDir(t)})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for range 2 { // the second time finds it exists
		if err := s.CreateDatabase(ctx, "Odd name"); err != nil {
			t.Fatal(err)
		}
	}
	conn := connect(t, s.URL("Odd name"))
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if db != "Odd name" {
		t.Errorf("connected to %q", db)
	}
}

func TestStartRefusesDirInUse(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	s := start(t, pgserver.Config{Dir: dir})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := pgserver.Start(ctx, pgserver.Config{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Start on %s: %v", dir, err)
	}
	t.Log(err)
	if err := ping(ctx, s.URL("postgres")); err != nil {
		t.Errorf("first server after the refused Start: %v", err)
	}
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	_, err = pgserver.Start(ctx, pgserver.Config{Dir: tempDir(t), Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil || !strings.Contains(err.Error(), "could not bind") {
		t.Fatalf("Start on a taken port: %v", err)
	}
	t.Log(err)
}

func TestStartRootOnlyParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := pgserver.Start(ctx, pgserver.Config{Dir: filepath.Join(t.TempDir(), "pg")})
	if err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Fatalf("Start under t.TempDir: %v", err)
	}
	t.Log(err)
}

func TestReachable(t *testing.T) {
	open := tempDir(t) // mode 0700, owned by the caller
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(open, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(open, "pg"), filepath.Join(open, "not", "yet", "pg")} {
		if err := pgserver.Reachable(dir); err != nil {
			t.Errorf("Reachable(%s): %v", dir, err)
		}
	}
	err := pgserver.Reachable(filepath.Join(closed, "checkout", "pg"))
	if os.Geteuid() != 0 {
		if err != nil {
			t.Errorf("Reachable, not as root: %v; the server runs as the caller", err)
		}
		return
	}
	var unreachable *pgserver.UnreachableError
	if !errors.As(err, &unreachable) || unreachable.Parent != closed || unreachable.Mode != os.ModeDir|0o700 {
		t.Fatalf("Reachable under a 0700 dir of root's: %v; want an UnreachableError naming %s", err, closed)
	}
	t.Log(err)
}

func TestURL(t *testing.T) {
	s := start(t, pgserver.Config{Dir: tempDir(t)})
	cfg, err := pgconn.ParseConfig(s.URL("a/b c"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database != "a/b c" || cfg.User != pgserver.User || cfg.Host != "127.0.0.1" || int(cfg.Port) != s.Port() || cfg.TLSConfig != nil {
		t.Errorf("URL parses to %+v", cfg)
	}
}

func ping(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func TestStartDirTooLong(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := pgserver.Start(ctx, pgserver.Config{Dir: filepath.Join(os.TempDir(), strings.Repeat("d", 100))})
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("Start in a long dir: %v", err)
	}
}
