package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var setups atomic.Int32

// setupNotes stands in for a migration: it must run once, whatever the number of tests.
func setupNotes(ctx context.Context, url string) error {
	setups.Add(1)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('from setup')")
	return err
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

func notes(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT body FROM notes ORDER BY body")
	if err != nil {
		t.Fatal(err)
	}
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return bodies
}

func TestDBsFromOneTemplateAreIsolated(t *testing.T) {
	a := connect(t, pgtest.DB(t, "notes", setupNotes))
	b := connect(t, pgtest.DB(t, "notes", setupNotes))
	if _, err := a.Exec(t.Context(), "INSERT INTO notes VALUES ('only in a')"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(t.Context(), "DELETE FROM notes"); err != nil {
		t.Fatal(err)
	}
	if got := notes(t, a); fmt.Sprint(got) != "[from setup only in a]" {
		t.Errorf("a holds %q", got)
	}
	if got := notes(t, b); len(got) != 0 {
		t.Errorf("b holds %q", got)
	}
	if n := setups.Load(); n != 1 {
		t.Errorf("setup ran %d times", n)
	}
}

func TestDBParallel(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.DB(t, "notes", setupNotes))
			if got := notes(t, conn); fmt.Sprint(got) != "[from setup]" {
				t.Errorf("holds %q", got)
			}
		})
	}
	t.Cleanup(func() {
		if n := setups.Load(); n != 1 {
			t.Errorf("setup ran %d times", n)
		}
	})
}

func TestDBWithoutSetupIsEmpty(t *testing.T) {
	conn := connect(t, pgtest.DB(t, "empty", nil))
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d tables", n)
	}
}

func TestDBDroppedWhenTestEnds(t *testing.T) {
	var name string
	t.Run("user", func(t *testing.T) {
		conn := connect(t, pgtest.DB(t, "empty", nil))
		if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		// Left open: the drop ends the session.
	})
	admin := connect(t, pgtest.Server(t).URL("postgres"))
	var exists bool
	if err := admin.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if name == "" || exists {
		t.Errorf("database %q still exists", name)
	}
}

func TestTemplateClosedToConnections(t *testing.T) {
	pgtest.DB(t, "notes", setupNotes)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.Server(t).URL("tmpl_notes"))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connected to the template")
	}
}
