package main

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgserver"
)

// mkdirTemp returns a fresh dir of the given mode, removed at the end of the test. Not t.TempDir,
// whose parent the postgres user cannot enter.
func mkdirTemp(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkout makes <parent>/herald/.herald, as herald-dev does for a checkout in parent.
func checkout(t *testing.T, parent string) string {
	t.Helper()
	dir := filepath.Join(parent, "herald", ".herald")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tempDir points os.TempDir at a fresh dir for the test, so that its fallback dirs go there
// (and so do later mkdirTemps).
func tempDir(t *testing.T) string {
	t.Helper()
	tmp := mkdirTemp(t, 0o755)
	t.Setenv("TMPDIR", tmp)
	return tmp
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("only root runs PostgreSQL as another user, who may not reach the checkout")
	}
}

func TestPGDirInCheckoutWhenReachable(t *testing.T) {
	dir := checkout(t, mkdirTemp(t, 0o755))
	tempDir(t)
	pg, fallback, err := pgDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pg != filepath.Join(dir, "pg") || fallback != "" {
		t.Errorf("pgDir(%s) = %s, %q; want the checkout's own", dir, pg, fallback)
	}
}

func TestPGDirFallsBackToTempDir(t *testing.T) {
	requireRoot(t)
	dir := checkout(t, mkdirTemp(t, 0o700)) // as root's home on Debian
	other := checkout(t, mkdirTemp(t, 0o700))
	tmp := tempDir(t)
	pg, fallback, err := pgDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(fallback) != tmp || !strings.HasPrefix(filepath.Base(fallback), "herald-dev-") || pg != filepath.Join(fallback, "pg") {
		t.Fatalf("pgDir(%s) = %s, %s; want herald-dev-<hash>/pg in %s", dir, pg, fallback, tmp)
	}
	fi, err := os.Lstat(fallback)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || st.Uid != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, uid %d; want a directory of root's, mode 0755", fallback, fi.Mode(), st.Uid)
	}
	if b, err := os.ReadFile(filepath.Join(fallback, "checkout")); err != nil || string(b) != dir+"\n" {
		t.Errorf("%s/checkout: %q, %v; want %s", fallback, b, err, dir)
	}
	if err := pgserver.Reachable(pg); err != nil {
		t.Error(err)
	}

	// The same checkout finds the same dir again; another one gets its own.
	if again, _, err := pgDir(dir); err != nil || again != pg {
		t.Errorf("pgDir again = %s, %v; want %s", again, err, pg)
	}
	if pg2, _, err := pgDir(other); err != nil || pg2 == pg {
		t.Errorf("pgDir(%s) = %s, %v; want a dir of its own", other, pg2, err)
	}
}

func TestPGDirNeitherReachable(t *testing.T) {
	requireRoot(t)
	dir := checkout(t, mkdirTemp(t, 0o700))
	t.Setenv("TMPDIR", mkdirTemp(t, 0o700))
	_, _, err := pgDir(dir)
	if err == nil || !strings.Contains(err.Error(), "can reach neither") || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("pgDir with an unreachable TMPDIR: %v", err)
	}
	t.Log(err)
}

// A fallback dir that someone else made, or that is a link, is refused: it is about to hold a
// directory given to the postgres user.
func TestFallbackDirRefusesWhatIsNotOurs(t *testing.T) {
	dir := checkout(t, mkdirTemp(t, 0o755))
	tempDir(t)
	fallback, err := fallbackDir(dir)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("link", func(t *testing.T) {
		target := mkdirTemp(t, 0o755)
		if err := os.RemoveAll(fallback); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, fallback); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(fallback)
		if _, err := fallbackDir(dir); err == nil || !strings.Contains(err.Error(), "not a directory of yours") {
			t.Errorf("fallbackDir through a link: %v", err)
		}
		if _, err := os.Stat(filepath.Join(target, "checkout")); err == nil {
			t.Error("wrote through the link")
		}
	})
	t.Run("someone else's", func(t *testing.T) {
		requireRoot(t)
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Skip(err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		if err := os.Mkdir(fallback, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(fallback)
		if err := os.Chown(fallback, uid, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := fallbackDir(dir); err == nil || !strings.Contains(err.Error(), "not a directory of yours") {
			t.Errorf("fallbackDir owned by nobody: %v", err)
		}
	})
	t.Run("another checkout's", func(t *testing.T) {
		if err := os.MkdirAll(fallback, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(fallback)
		if err := os.WriteFile(filepath.Join(fallback, "checkout"), []byte("/elsewhere/.herald\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := fallbackDir(dir); err == nil || !strings.Contains(err.Error(), "/elsewhere/.herald") {
			t.Errorf("fallbackDir of another checkout: %v", err)
		}
	})
}

// The dev stack started as root in a checkout the postgres user cannot enter keeps its
// PostgreSQL in the fallback dir, says so, and finds its data there on the next start.
func TestStartPostgresInFallbackAndAgain(t *testing.T) {
	requireRoot(t)
	if err := pgserver.Available(); err != nil {
		t.Fatal(err)
	}
	dir := checkout(t, mkdirTemp(t, 0o700))
	tmp := tempDir(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	first := &stack{cfg: config{dir: dir}}
	if err := first.startPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	defer first.pg.Stop()
	if first.pgFallback == "" || filepath.Dir(first.pgFallback) != tmp || first.pgDir != filepath.Join(first.pgFallback, "pg") {
		t.Fatalf("cluster in %s (fallback %q); want it under %s", first.pgDir, first.pgFallback, tmp)
	}
	if _, err := os.Stat(filepath.Join(first.pgDir, "PG_VERSION")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg")); !os.IsNotExist(err) {
		t.Errorf("%s/pg: %v; want nothing there", dir, err)
	}
	summary := first.dataSummary()
	if !strings.Contains(summary, first.pgFallback) || !strings.Contains(summary, "rm -rf "+dir+" "+first.pgFallback) {
		t.Errorf("summary does not say where the data is and how to remove it:\n%s", summary)
	}
	t.Logf("summary:\n%s", summary)
	exec(t, first.dbURL, "CREATE TABLE kept (note text)", "INSERT INTO kept VALUES ('from the first start')")
	if err := first.pg.Stop(); err != nil {
		t.Fatal(err)
	}

	second := &stack{cfg: config{dir: dir}}
	if err := second.startPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	defer second.pg.Stop()
	if second.pgDir != first.pgDir {
		t.Errorf("second start in %s; the first was in %s", second.pgDir, first.pgDir)
	}
	conn, err := pgx.Connect(ctx, second.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var note string
	if err := conn.QueryRow(ctx, "SELECT note FROM kept").Scan(&note); err != nil || note != "from the first start" {
		t.Errorf("after the second start: %q, %v", note, err)
	}
}

func exec(t *testing.T, url string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
