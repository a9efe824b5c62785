// Package pgtest gives tests a private PostgreSQL: one server per test binary, started on first
// use in a temp dir, and a fresh database per test, cloned from a template database that is set
// up (migrated) once. A package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Tests fail, rather than skip, when the PostgreSQL binaries are missing: a skipped test would
// hide breakage in CI, which installs them.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgserver"
)

// How long starting the server and creating or dropping a database may take.
const (
	startTimeout = 2 * time.Minute
	adminTimeout = time.Minute
)

var (
	inMain atomic.Bool // Main is running the tests

	shared struct {
		once sync.Once
		dir  string
		srv  *pgserver.Server
		err  error
	}

	templatesMu sync.Mutex
	templates   = map[string]*template{}

	dbSeq atomic.Int64
)

// template is a template database, set up once per process.
type template struct {
	once sync.Once
	err  error
}

// Main runs the tests, then stops the server if a test started it and removes its dir. It returns
// the exit code for os.Exit, which is non-zero also when the server did not stop cleanly.
func Main(m *testing.M) int {
	inMain.Store(true)
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// shutdown stops the server, if one was started, and removes its dir.
func shutdown() error {
	shared.once.Do(func() { shared.err = errors.New("pgtest: shut down") }) // no start after this
	var errs []error
	if shared.srv != nil {
		// The data is thrown away: an immediate shutdown skips the checkpoint.
		if err := shared.srv.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if shared.dir != "" {
		if err := os.RemoveAll(shared.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove server dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server returns the test binary's server, starting it on first use. Tests must not stop or
// kill it: tests that do that to a server start their own with pgserver.Start in TempDir(t).
// Server fails the test if the binaries are missing or the server does not start.
func Server(t testing.TB) *pgserver.Server {
	t.Helper()
	if !inMain.Load() {
		t.Fatal("pgtest: run the tests through pgtest.Main, which stops the server: func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	}
	shared.once.Do(func() { shared.srv, shared.err = start() })
	if shared.err != nil {
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.srv
}

// start starts the shared server in a new temp dir.
func start() (*pgserver.Server, error) {
	if err := pgserver.Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "herald-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("server dir: %w", err)
	}
	shared.dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	return pgserver.Start(ctx, pgserver.Config{Dir: dir})
}

// DB returns the URL of a new database, dropped when the test ends, that is a copy of the
// template database tmpl_<template>. The first call with that template name in the process
// creates the template and passes its URL to setup (nil: the template stays empty); later calls
// reuse it, whatever their setup. Template names are lower-case letters, digits and underscores.
// DB fails the test if the server cannot start, setup failed (in this or an earlier test), or
// the database cannot be created.
func DB(t testing.TB, template string, setup func(ctx context.Context, url string) error) string {
	t.Helper()
	s := Server(t)
	tmpl, err := prepare(t.Context(), s, template, setup)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	name := "t_" + strconv.FormatInt(dbSeq.Add(1), 10)
	ctx, cancel := context.WithTimeout(t.Context(), adminTimeout)
	defer cancel()
	if err := admin(ctx, s, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(tmpl)); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		if err := admin(ctx, s, "DROP DATABASE "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.URL(name)
}

// TempDir returns a new directory, removed when the test ends, that can hold a cluster of the
// test's own (pgserver.Config.Dir). Unlike t.TempDir, it is reachable by the postgres user
// that the server runs as when the tests run as root.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dir
}

// prepare returns the name of the template database for name, creating it and running setup
// on it if this is the first call for name.
func prepare(ctx context.Context, s *pgserver.Server, name string, setup func(context.Context, string) error) (string, error) {
	if !validName(name) {
		return "", fmt.Errorf("template name %q: want 1 to 58 lower-case letters, digits and underscores", name)
	}
	db := "tmpl_" + name
	templatesMu.Lock()
	tm := templates[name]
	if tm == nil {
		tm = &template{}
		templates[name] = tm
	}
	templatesMu.Unlock()
	tm.once.Do(func() {
		returned := false
		defer func() {
			if !returned { // setup panicked or ended its test's goroutine
				tm.err = fmt.Errorf("template %s: setup did not return", db)
			}
		}()
		tm.err = build(ctx, s, db, setup)
		returned = true
	})
	return db, tm.err
}

// build creates the template database db and runs setup on it.
func build(ctx context.Context, s *pgserver.Server, db string, setup func(context.Context, string) error) error {
	if err := s.CreateDatabase(ctx, db); err != nil {
		return err
	}
	if setup != nil {
		if err := setup(ctx, s.URL(db)); err != nil {
			return fmt.Errorf("template %s: setup: %w", db, err)
		}
	}
	// A database is copied only while nobody is connected to it: lock the template and end any
	// session that setup left open, or every copy would wait and then fail.
	if err := admin(ctx, s, "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("template %s: %w", db, err)
	}
	if err := admin(ctx, s, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db); err != nil {
		return fmt.Errorf("template %s: %w", db, err)
	}
	return nil
}

// admin runs one statement in the postgres database.
func admin(ctx context.Context, s *pgserver.Server, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// validName reports whether tmpl_<name> is a plain identifier that PostgreSQL does not truncate.
func validName(name string) bool {
	if name == "" || len("tmpl_"+name) > 63 {
		return false
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
