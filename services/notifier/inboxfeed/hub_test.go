package inboxfeed

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func noSetup(context.Context, string) error { return nil }

// woken waits for a wake-up; the bound only ends a broken run.
func woken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake-up: %s", what)
	}
}

func quiet(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("woken: %s", what)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestHub: a NOTIFY wakes the streams of its user only; when the listening connection is cut
// (a database restart, a failover), every stream is woken, since any may have missed one, and
// the hub listens again.
func TestHub(t *testing.T) {
	url := pgtest.DB(t, "inboxfeed", noSetup)
	pool, err := pgdb.Open(t.Context(), url, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHub(func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg) }, "herald_inbox_test",
		slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-h.Ready()

	ada, n, stopAda := h.Subscribe("ada")
	defer stopAda()
	bo, _, stopBo := h.Subscribe("bo")
	defer stopBo()
	if n != 1 {
		t.Fatalf("ada's streams = %d", n)
	}
	_, n2, stop2 := h.Subscribe("ada")
	if n2 != 2 {
		t.Fatalf("ada's second stream counts %d", n2)
	}
	stop2()
	for len(ada) > 0 { // the wake-up of the first LISTEN
		<-ada
	}
	for len(bo) > 0 {
		<-bo
	}

	notify := func(user string) {
		if _, err := pool.Exec(t.Context(), `SELECT pg_notify('herald_inbox_test', $1)`, user); err != nil {
			t.Fatal(err)
		}
	}
	notify("ada")
	woken(t, ada, "ada's NOTIFY")
	quiet(t, bo, "bo by ada's NOTIFY")

	if _, err := pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	woken(t, ada, "ada after the connection was cut")
	woken(t, bo, "bo after the connection was cut")
	// Listening again: a later NOTIFY arrives (after the reconnect's own wake-up).
	deadline := time.Now().Add(10 * time.Second)
	for {
		for len(bo) > 0 {
			<-bo
		}
		notify("bo")
		select {
		case <-bo:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub did not listen again")
		}
	}
}
