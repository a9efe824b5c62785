package contacts

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/heraldhq/herald/internal/appkey"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// recorder is a ContactsService that knows every user it is asked about, in which nothing
// changes and nothing is suppressed, and that records the authorization each call came with.
type recorder struct {
	heraldv1.UnimplementedContactsServiceServer
	mu    sync.Mutex
	auths []string
}

func (r *recorder) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.auths = append(r.auths, md.Get("authorization")...)
	r.mu.Unlock()
}

func (r *recorder) ListChanges(ctx context.Context, _ *heraldv1.ListChangesRequest) (*heraldv1.ListChangesResponse, error) {
	r.record(ctx)
	return &heraldv1.ListChangesResponse{NextHorizon: 1}, nil
}

func (r *recorder) ListSuppressedAddresses(ctx context.Context, _ *heraldv1.ListSuppressedAddressesRequest) (*heraldv1.ListSuppressedAddressesResponse, error) {
	r.record(ctx)
	return &heraldv1.ListSuppressedAddressesResponse{}, nil
}

func (r *recorder) ResolveRecipients(ctx context.Context, req *heraldv1.ResolveRecipientsRequest) (*heraldv1.ResolveRecipientsResponse, error) {
	r.record(ctx)
	out := &heraldv1.ResolveRecipientsResponse{}
	for _, id := range req.GetUserIds() {
		out.Users = append(out.Users, &heraldv1.ResolvedUser{User: &heraldv1.User{UserId: id, Email: id + "@example.com"}})
	}
	return out, nil
}

// TestResolveUsesTheNotifiersKey: every call reaches the contacts service with the key the
// connection carries - the notifier's own - never with the key of the app that is sending, even
// when several apps' lookups share one call.
func TestResolveUsesTheNotifiersKey(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rec := &recorder{}
	heraldv1.RegisterContactsServiceServer(srv, rec)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	notifierKey := appkey.New().String()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		appkey.Credentials(notifierKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	dir := New(conn, nil)
	t.Cleanup(dir.Close)

	apps := []string{appkey.New().String(), appkey.New().String(), appkey.New().String()}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			// What a Send's context holds: the calling app's key, as the notifier received it.
			ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+apps[i%len(apps)]))
			id := "u" + string(rune('a'+i%26))
			r, err := dir.Resolve(ctx, []string{id}, nil)
			if err != nil {
				t.Errorf("Resolve: %v", err)
				return
			}
			if u, ok := r.Users[id]; !ok || len(r.Users) != 1 || u.Email != id+"@example.com" {
				t.Errorf("Resolve(%s) = %+v", id, r.Users)
			}
		})
	}
	wg.Wait()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.auths) == 0 {
		t.Fatal("no call reached the contacts service")
	}
	for _, a := range rec.auths {
		if a != "Bearer "+notifierKey {
			t.Errorf("a call came with authorization %q, want the notifier's key", a)
		}
	}
	t.Logf("60 lookups from 3 apps in %d calls", len(rec.auths))
}
