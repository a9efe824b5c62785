package rpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The contacts service reads the notifier's categories.
	if err := pgdb.Migrate(ctx, pool, "notifier", os.DirFS("../../notifier/postgres/migrations"), log); err != nil {
		return err
	}
	return postgres.Migrate(ctx, pool, log)
}

// pgClient returns a ContactsService client of a server on a fresh PostgreSQL database, whose
// every call is made by an app with contacts write access.
func pgClient(t *testing.T) heraldv1.ContactsServiceClient {
	t.Helper()
	pool, err := pgdb.Open(t.Context(), pgtest.DB(t, "contacts_rpc", migrate), 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	asWriter := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(appkey.WithCaller(ctx, appkey.Caller{AppName: "crm", Contacts: appkey.ContactsWrite}), req)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errs.UnaryServerInterceptor(slog.New(slog.DiscardHandler)), asWriter))
	heraldv1.RegisterContactsServiceServer(srv, &Server{Service: contacts.New(postgres.New(pool), nil), Links: links{}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return heraldv1.NewContactsServiceClient(conn)
}

// TestUpdateSettingsCompareAndSwap: writers that read the same etag and update with it at the
// same time, through the RPC on PostgreSQL: exactly one wins, every other gets ABORTED and
// changes nothing, and a loser that reads again and reapplies its change keeps the winner's.
func TestUpdateSettingsCompareAndSwap(t *testing.T) {
	t.Parallel()
	c := pgClient(t)
	ctx := t.Context()
	if _, err := c.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "ann", Email: "ann@example.com"}}); err != nil {
		t.Fatal(err)
	}
	// Each writer opts out of one channel of its own, on top of what it read.
	writers := []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS,
		heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID}
	optOut := func(st *heraldv1.Settings, ch heraldv1.Channel) *heraldv1.Settings {
		next := proto.CloneOf(st)
		if next == nil {
			next = &heraldv1.Settings{}
		}
		next.OptedOutChannels = append(next.OptedOutChannels, ch)
		return next
	}
	for round := range 10 {
		if _, err := c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "ann", Settings: &heraldv1.Settings{}}); err != nil {
			t.Fatal(err)
		}
		read, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ann"})
		if err != nil || read.Etag == "" {
			t.Fatalf("GetSettings = %v, %v; want an etag", read, err)
		}
		answers := make([]*heraldv1.UpdateSettingsResponse, len(writers))
		fails := make([]error, len(writers))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, ch := range writers {
			wg.Go(func() {
				<-start
				answers[i], fails[i] = c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "ann",
					Settings: optOut(read.Settings, ch), Etag: read.Etag})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range fails {
			switch st := status.Convert(err); {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("round %d: writers %d and %d both updated with etag %s", round, winner, i, read.Etag)
			case st.Code() != codes.Aborted || !strings.Contains(st.Message(), "were changed since they were read"):
				t.Fatalf("round %d: writer %d: %s %q, want ABORTED", round, i, st.Code(), st.Message())
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won: %v", round, fails)
		}
		won := answers[winner]
		now, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ann"})
		if err != nil || now.Etag != won.Etag || now.Etag == read.Etag ||
			!proto.Equal(now.Settings, optOut(read.Settings, writers[winner])) {
			t.Fatalf("round %d: stored %v (etag %s), want the winner's %v (etag %s)", round, now.GetSettings(), now.GetEtag(), won.Settings, won.Etag)
		}

		// Each loser reads again and reapplies its change: nobody's change is lost.
		for i, ch := range writers {
			if i == winner {
				continue
			}
			cur, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ann"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "ann",
				Settings: optOut(cur.Settings, ch), Etag: cur.Etag}); err != nil {
				t.Fatalf("round %d: writer %d retrying: %v", round, i, err)
			}
		}
		if final, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ann"}); err != nil || len(final.Settings.OptedOutChannels) != len(writers) {
			t.Fatalf("round %d: settings %v, %v; want every writer's opt-out", round, final.GetSettings(), err)
		}
	}
}

// TestUpdateSettingsEtag: what UpdateSettings does with an etag, and without one.
func TestUpdateSettingsEtag(t *testing.T) {
	t.Parallel()
	c := pgClient(t)
	ctx := t.Context()
	upsert := func() {
		t.Helper()
		if _, err := c.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "bo"}}); err != nil {
			t.Fatal(err)
		}
	}
	update := func(etag string, st *heraldv1.Settings) (*heraldv1.UpdateSettingsResponse, error) {
		return c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "bo", Settings: st, Etag: etag})
	}
	etag := func() string {
		t.Helper()
		res, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "bo"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Etag
	}
	upsert()
	first := etag()

	// Without an etag, an update replaces whatever is stored, as it always did.
	res, err := update("", &heraldv1.Settings{GlobalOptOut: true})
	if err != nil || res.Etag == "" || res.Etag == first || res.Etag != etag() {
		t.Fatalf("update without an etag = %v, %v (etag before %s, after %s)", res, err, first, etag())
	}
	// With the etag it answered, an update applies; with the one before, it does not.
	second := res.Etag
	if res, err = update(second, &heraldv1.Settings{}); err != nil || res.Etag == second {
		t.Fatalf("update with the current etag = %v, %v", res, err)
	}
	third := res.Etag
	if _, err := update(first, &heraldv1.Settings{GlobalOptOut: true}); status.Code(err) != codes.Aborted {
		t.Fatalf("update with a stale etag: %v, want ABORTED", err)
	}
	// An update that changes nothing still takes a new etag: the etag names a write, and a
	// reader cannot tell which writes changed nothing.
	if res, err = update(third, &heraldv1.Settings{}); err != nil || res.Etag == third {
		t.Fatalf("update to the same settings = %v, %v", res, err)
	}

	// A user deleted and created again does not bring an etag back.
	latest := res.Etag
	if _, err := c.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "bo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := update(latest, &heraldv1.Settings{}); status.Code(err) != codes.NotFound {
		t.Fatalf("update of a deleted user: %v, want NOT_FOUND", err)
	}
	upsert()
	for range 3 {
		if _, err := update("", &heraldv1.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, old := range []string{first, second, third, latest} {
		if _, err := update(old, &heraldv1.Settings{GlobalOptOut: true}); status.Code(err) != codes.Aborted {
			t.Errorf("update of the new user with etag %s of the old one: %v, want ABORTED", old, err)
		}
	}

	// An etag the service never gave is refused as such.
	for _, bad := range []string{"x", "-1", "+5", "007", " 5", "99999999999999999999"} {
		_, err := update(bad, &heraldv1.Settings{})
		if status.Code(err) != codes.InvalidArgument || violation(err, "etag") != "is not an etag that GetSettings gave" {
			t.Errorf("etag %q: %v, want INVALID_ARGUMENT naming etag", bad, err)
		}
	}
}
