package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/heraldhq/herald/internal/appkey"
	deliverypg "github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/inbox"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/postgres"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

func migrateInbox(ctx context.Context, url string) error {
	if err := migrateNotifier(ctx, url); err != nil {
		return err
	}
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return inboxpg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
}

// TestInbox runs heraldctl inbox against the notifier's InboxService on real stores, with
// messages stored as the workers store them.
func TestInbox(t *testing.T) {
	pool, err := pgdb.Open(t.Context(), pgtest.DB(t, "heraldctl_inbox", migrateInbox), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	deliveries := deliverypg.New(pool)
	t.Cleanup(deliveries.Close)
	store := inboxpg.New(pool)
	signer, err := linktoken.New(linktoken.Key{ID: "k", Secret: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	tokens := &notifier.UserTokens{Signer: signer}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errs.UnaryServerInterceptor(slog.New(slog.DiscardHandler)),
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(appkey.WithCaller(ctx, operator), req)
		}))
	heraldv1.RegisterInboxServiceServer(srv, &rpc.InboxServer{Tokens: tokens,
		Inbox: &notifier.Inbox{Store: store, Opens: postgres.New(pool, deliveries)}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	server := []string{"--addr", lis.Addr().String(), "--key", "test", "--env-file", filepath.Join(t.TempDir(), "none.env")}

	var ids []string
	for i, title := range []string{"Welcome", "Your order shipped", "Invoice"} {
		m := &inbox.Message{ID: uuid.Must(uuid.NewV7()), UserID: "ada", NotificationID: uuid.Must(uuid.NewV7()),
			Category: []string{"account", "orders", "billing"}[i], Title: title, CreatedAt: time.Now()}
		if _, err := store.Deliver(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID.String())
	}

	for _, tc := range []struct {
		args []string
		want string // a line of the output, or its start
	}{
		{[]string{"inbox", "unread", "ada"}, "3"},
		{[]string{"inbox", "read", "ada", ids[0]}, "marked 1 read; 2 unread"},
		{[]string{"inbox", "read", "ada", "--category", "billing"}, "marked 1 read; 1 unread"},
		{[]string{"inbox", "unread", "ada"}, "1"},
		{[]string{"inbox", "read", "ada"}, "marked 1 read; 0 unread"},
	} {
		out, err := heraldctl(t, server, tc.args...)
		if err != nil || strings.TrimSpace(out) != tc.want {
			t.Fatalf("%q = %q, %v; want %q", tc.args, out, err, tc.want)
		}
	}

	out, err := heraldctl(t, server, "inbox", "list", "ada", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	rows := table(t, out, "MESSAGE")
	if len(rows) != 2 || rows[0]["MESSAGE"] != ids[2] || rows[1]["MESSAGE"] != ids[1] || rows[0]["READ"] == "-" {
		t.Fatalf("list --limit 2:\n%s", out)
	}

	out, err = heraldctl(t, server, "inbox", "token", "ada", "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	user, exp, err := tokens.Verify(strings.TrimSpace(out))
	if err != nil || user != "ada" || time.Until(exp) > 10*time.Minute || time.Until(exp) < 9*time.Minute {
		t.Fatalf("token %q: %q, %s, %v", out, user, exp, err)
	}
	if _, err := heraldctl(t, server, "inbox", "token", "ada", "--ttl", "48h"); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Fatalf("token --ttl 48h = %v", err)
	}
	if _, err := heraldctl(t, server, "inbox", "what", "ada"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("inbox what = %v", err)
	}
}
