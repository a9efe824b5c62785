package rpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/contactstest"
)

// asWriter returns a context whose caller may read and change contact data, for the tests of
// what the handlers do once a call is allowed.
func asWriter() context.Context {
	return appkey.WithCaller(context.Background(), appkey.Caller{AppName: "crm", Contacts: appkey.ContactsWrite})
}

// keyStore is an appkey.Store holding fixed keys.
type keyStore map[string]appkey.Record

var _ appkey.Store = keyStore(nil)

func (s keyStore) Key(_ context.Context, id string) (appkey.Record, error) {
	if r, ok := s[id]; ok {
		return r, nil
	}
	return appkey.Record{}, appkey.ErrNoKey
}

func (keyStore) Changes(context.Context, uint64) ([]string, uint64, error) { return nil, 0, nil }

// methodAccess is what each ContactsService method needs, as the API documents it. A method
// missing here fails TestEveryMethodChecksContactsAccess.
var methodAccess = map[string]appkey.ContactsAccess{
	"GetUser":                 appkey.ContactsRead,
	"BatchGetUsers":           appkey.ContactsRead,
	"ListDevices":             appkey.ContactsRead,
	"GetSettings":             appkey.ContactsRead,
	"ResolveRecipients":       appkey.ContactsRead,
	"ListChanges":             appkey.ContactsRead,
	"ListSuppressedAddresses": appkey.ContactsRead,
	"ListSubscribers":         appkey.ContactsRead,
	"ListUserTopics":          appkey.ContactsRead,
	"BatchUpsertUsers":        appkey.ContactsWrite,
	"Subscribe":               appkey.ContactsWrite,
	"Unsubscribe":             appkey.ContactsWrite,
	"UpsertUser":              appkey.ContactsWrite,
	"DeleteUser":              appkey.ContactsWrite,
	"RegisterDevice":          appkey.ContactsWrite,
	"UnregisterDevice":        appkey.ContactsWrite,
	"UpdateSettings":          appkey.ContactsWrite,
	"CreatePreferenceLink":    appkey.ContactsWrite,
}

// The user each request names when it names one that exists (contactstest's), one that does
// not, and a device token registered for the first.
var (
	existingUser = contactstest.User.ID
	missingUser  = "nobody"
	knownToken   = iosToken
	unknownToken = "cd" + iosToken[2:]
)

// accessRequest returns a valid request for method about the existing user (or its device),
// or about one that does not exist.
func accessRequest(method string, existing bool) proto.Message {
	user, token := missingUser, unknownToken
	if existing {
		user, token = existingUser, knownToken
	}
	switch method {
	case "GetUser":
		return &heraldv1.GetUserRequest{UserId: user}
	case "BatchGetUsers":
		return &heraldv1.BatchGetUsersRequest{UserIds: []string{user}}
	case "ListDevices":
		return &heraldv1.ListDevicesRequest{UserId: user}
	case "GetSettings":
		return &heraldv1.GetSettingsRequest{UserId: user}
	case "ResolveRecipients":
		return &heraldv1.ResolveRecipientsRequest{UserIds: []string{user},
			Targets: []*heraldv1.Target{{Channel: heraldv1.Channel_CHANNEL_IOS, Address: token}}}
	case "ListChanges":
		return &heraldv1.ListChangesRequest{Horizon: 1}
	case "ListSuppressedAddresses":
		return &heraldv1.ListSuppressedAddressesRequest{PageSize: 10}
	case "UpsertUser":
		return &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: user, Email: "new@example.com"}}
	case "DeleteUser":
		return &heraldv1.DeleteUserRequest{UserId: user}
	case "RegisterDevice":
		return &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: user, Platform: heraldv1.Platform_PLATFORM_IOS,
			Token: "ef" + iosToken[2:]}}
	case "UnregisterDevice":
		return &heraldv1.UnregisterDeviceRequest{Platform: heraldv1.Platform_PLATFORM_IOS, Token: token}
	case "UpdateSettings":
		return &heraldv1.UpdateSettingsRequest{UserId: user, Settings: &heraldv1.Settings{GlobalOptOut: true}}
	case "CreatePreferenceLink":
		return &heraldv1.CreatePreferenceLinkRequest{UserId: user}
	case "ListSubscribers":
		return &heraldv1.ListSubscribersRequest{Topic: "news"}
	case "ListUserTopics":
		return &heraldv1.ListUserTopicsRequest{UserId: user}
	case "BatchUpsertUsers":
		return &heraldv1.BatchUpsertUsersRequest{Users: []*heraldv1.User{{UserId: user, Email: "new@example.com"}}}
	case "Subscribe":
		return &heraldv1.SubscribeRequest{Topic: "news", UserIds: []string{user}}
	case "Unsubscribe":
		return &heraldv1.UnsubscribeRequest{Topic: "news", UserIds: []string{user}}
	}
	return nil
}

// TestEveryMethodChecksContactsAccess calls every ContactsService method (read from the proto,
// so a method added later is covered) through a gRPC server with the real authentication, with
// the key of an app of each contacts access level, about a user that exists, one that does not,
// and with a request that is not even valid. Exactly the calls the app's level allows go
// through; every other is refused with PERMISSION_DENIED, answered the same whatever it names
// and whether or not it is valid, and changes nothing.
func TestEveryMethodChecksContactsAccess(t *testing.T) {
	keys := map[string]appkey.Key{}
	records := keyStore{}
	callers := map[string]appkey.Caller{
		"none":  {AppName: "mailer"},
		"read":  {AppName: "support", Contacts: appkey.ContactsRead},
		"write": {AppName: "crm", Contacts: appkey.ContactsWrite},
		"admin": {AppName: "ops", Admin: true},
	}
	for name, c := range callers {
		k := appkey.New()
		c.AppID, c.KeyID = uuid.New(), k.ID
		keys[name] = k
		records[k.ID] = appkey.Record{Caller: c, SecretHash: k.Hash()}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	api := &Server{Links: links{}}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errs.UnaryServerInterceptor(log),
		appkey.UnaryServerInterceptor(appkey.NewAuthenticator(records), "/herald.v1.")))
	heraldv1.RegisterContactsServiceServer(srv, api)
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

	// fresh gives every call a store of its own, holding the existing user and their device.
	fresh := func(t *testing.T) *contactstest.Store {
		t.Helper()
		store := contactstest.New()
		api.Service = contacts.New(store, store)
		if _, err := api.Service.RegisterDevice(context.Background(), &contacts.Device{UserID: existingUser,
			Platform: delivery.IOS, Token: knownToken}); err != nil {
			t.Fatal(err)
		}
		return store
	}
	// snapshot describes what the store holds about both users and the device.
	snapshot := func() string {
		ctx := context.Background()
		u, err := api.Service.GetUser(ctx, existingUser)
		_, missing := api.Service.GetUser(ctx, missingUser)
		devs, derr := api.Service.ListDevices(ctx, existingUser, true)
		st, _, _, serr := api.Service.GetSettings(ctx, existingUser)
		return fmt.Sprintf("user %+v %v; missing user %v; devices %+v %v; settings %+v %v", u, err, missing, devs, derr, st, serr)
	}
	call := func(m protoreflect.MethodDescriptor, key appkey.Key, req proto.Message) error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key.String())
		return conn.Invoke(ctx, "/"+string(m.Parent().FullName())+"/"+string(m.Name()), req, dynamicpb.NewMessage(m.Output()))
	}
	answer := func(err error) string { return prototext.Format(status.Convert(err).Proto()) }

	svc := heraldv1.File_herald_v1_contacts_proto.Services().ByName("ContactsService")
	if svc == nil || svc.Methods().Len() < len(methodAccess) {
		t.Fatalf("ContactsService has %d methods in the proto, fewer than the %d known here", svc.Methods().Len(), len(methodAccess))
	}
	refusals := map[appkey.ContactsAccess]string{} // the one answer per level needed
	for i := range svc.Methods().Len() {
		m := svc.Methods().Get(i)
		name := string(m.Name())
		need, ok := methodAccess[name]
		if !ok {
			t.Errorf("ContactsService.%s is not in methodAccess: add it with the access it needs, and a request to accessRequest", name)
			continue
		}
		for level, c := range callers {
			allowed := c.Admin || c.Contacts >= need
			t.Run(name+"/"+level, func(t *testing.T) {
				fresh(t)
				before := snapshot()
				if !allowed {
					existing := call(m, keys[level], accessRequest(name, true))
					if status.Code(existing) != codes.PermissionDenied {
						t.Fatalf("about an existing user: %v, want PERMISSION_DENIED", existing)
					}
					if ref, seen := refusals[need]; !seen {
						refusals[need] = answer(existing)
					} else if answer(existing) != ref {
						t.Errorf("answered\n%s\nbut other calls needing %s are answered\n%s", answer(existing), need, ref)
					}
					for what, req := range map[string]proto.Message{
						"about a user that does not exist": accessRequest(name, false),
						"with an invalid request":          dynamicpb.NewMessage(m.Input()),
					} {
						if err := call(m, keys[level], req); answer(err) != answer(existing) {
							t.Errorf("%s: answered\n%s\nbut about an existing user\n%s", what, answer(err), answer(existing))
						}
					}
					if after := snapshot(); after != before {
						t.Errorf("the refusals changed the store:\n%s\n->\n%s", before, after)
					}
					return
				}
				if err := call(m, keys[level], accessRequest(name, true)); err != nil {
					t.Errorf("about an existing user: %v", err)
				}
				fresh(t)
				if err := call(m, keys[level], accessRequest(name, false)); status.Code(err) == codes.PermissionDenied {
					t.Errorf("about a user that does not exist: %v", err)
				}
			})
		}
	}
	if len(refusals) != 2 || refusals[appkey.ContactsRead] == refusals[appkey.ContactsWrite] {
		t.Errorf("want one refusal for reads and another for writes, got %q", refusals)
	}
}

// TestNoCallerNoAccess: a handler reached without an authenticated caller (a server wired
// without the appkey interceptor) refuses everything.
func TestNoCallerNoAccess(t *testing.T) {
	srv := newServer(contactstest.New())
	if _, err := srv.GetUser(context.Background(), &heraldv1.GetUserRequest{UserId: existingUser}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("GetUser without a caller: %v, want PermissionDenied", err)
	}
	if _, err := srv.DeleteUser(context.Background(), &heraldv1.DeleteUserRequest{UserId: existingUser}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("DeleteUser without a caller: %v, want PermissionDenied", err)
	}
}
