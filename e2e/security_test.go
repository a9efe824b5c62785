package e2e

// The security issue's end-to-end checks: only authorised callers get in, a refusal never tells
// whether what was asked for exists, provider webhooks and end-user links cannot be forged or
// replayed into a second effect, no caller-supplied URL is ever fetched or redirected to, and
// no secret reaches the database, the logs, the metrics or an answer.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	"github.com/heraldhq/herald/internal/fakes/smtpfake"
	"github.com/heraldhq/herald/internal/fakes/twiliofake"
	"github.com/heraldhq/herald/internal/linktoken"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	contactsd "github.com/heraldhq/herald/services/contacts/daemon"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
)

// notifyPublicURL is where the providers reach the webhook notifier; contactsPublicURL and
// contactsTwilioToken are how startStack configures the contacts service.
const (
	notifyPublicURL     = "https://notify.test"
	contactsPublicURL   = "http://contacts.test"
	contactsTwilioToken = "twilio-token"
)

// stackLinkKey is the key startStack's services sign links with.
var stackLinkKey = linktoken.Key{ID: "test", Secret: bytes.Repeat([]byte{7}, 32)}

// apiServices are every gRPC service Herald serves, from the protos themselves, so that a method
// added later is covered without touching these tests.
var apiServices = []protoreflect.FileDescriptor{
	heraldv1.File_herald_v1_notification_proto, heraldv1.File_herald_v1_template_proto,
	heraldv1.File_herald_v1_admin_proto, heraldv1.File_herald_v1_contacts_proto,
}

func everyMethod() []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	for _, f := range apiServices {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				out = append(out, svc.Methods().Get(j))
			}
		}
	}
	return out
}

func methodPath(m protoreflect.MethodDescriptor) string {
	return "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
}

// plainConn dials addr without credentials: each call brings its own authorization header.
func plainConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// callWith calls m with an empty request and the authorization header (none when "").
func callWith(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, authorization string) error {
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	return conn.Invoke(ctx, methodPath(m), dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output()))
}

// answer is what a client sees of a refusal: the whole status, details included.
func answer(err error) string {
	return prototext.Format(status.Convert(err).Proto())
}

// sameRefusal fails the test unless err has the code and is answered exactly like ref.
func sameRefusal(t *testing.T, what string, err, ref error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
		return
	}
	if a, b := answer(err), answer(ref); a != b {
		t.Errorf("%s: answered\n%s\nbut the reference is answered\n%s", what, a, b)
	}
}

func count(t *testing.T, s *stack, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSecurityEveryRPCRefusesBadKeys: every method of every service (read from the protos) is
// refused without a valid key - no key, not a bearer token, a malformed key, another key's id
// with a wrong secret, an unknown key id, a revoked key - before any handler runs, and every
// key that does not authenticate gets the same answer, so a caller cannot tell which key ids
// exist or were revoked.
func TestSecurityEveryRPCRefusesBadKeys(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	admin := heraldv1.NewAdminServiceClient(s.conn)
	app, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := admin.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: app.App.AppId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: revoked.KeyId}); err != nil {
		t.Fatal(err)
	}
	adminKey, err := appkey.Parse(s.key)
	if err != nil {
		t.Fatal(err)
	}
	other := appkey.New()
	credentials := []struct {
		name, header string
		keyed        bool // it carries a would-be key, so it gets the one answer for bad keys
	}{
		{"no authorization", "", false},
		{"basic auth", "Basic " + base64.StdEncoding.EncodeToString([]byte("billing:"+app.Key)), false},
		{"empty bearer", "Bearer ", false},
		{"malformed key", "Bearer not-a-key", true},
		{"truncated key", "Bearer " + app.Key[:len(app.Key)-1], true},
		{"key without its prefix", "Bearer " + strings.TrimPrefix(app.Key, "hk_"), true},
		{"existing key id, wrong secret", "Bearer " + appkey.Key{ID: adminKey.ID, Secret: other.Secret}.String(), true},
		{"unknown key id", "Bearer " + other.String(), true},
		{"revoked key", "Bearer " + revoked.Key, true},
		{"revoked key id, wrong secret", "Bearer " + appkey.Key{ID: revoked.KeyId, Secret: other.Secret}.String(), true},
	}
	conns := map[string]*grpc.ClientConn{
		"notifier": plainConn(t, s.notifier.GRPCAddr()),
		"contacts": plainConn(t, s.contacts.GRPCAddr()),
	}
	categories := count(t, s, `SELECT count(*) FROM notifier.categories`)
	var keyedRef, unkeyedRef error
	methods := everyMethod()
	if len(methods) < 30 {
		t.Fatalf("only %d methods found in the protos", len(methods))
	}
	for _, m := range methods {
		conn := conns["notifier"]
		if m.Parent().Name() == "ContactsService" {
			conn = conns["contacts"]
		}
		for _, c := range credentials {
			err := callWith(ctx, conn, m, c.header)
			what := fmt.Sprintf("%s with %s", methodPath(m), c.name)
			ref := &unkeyedRef
			if c.keyed {
				ref = &keyedRef
			}
			if *ref == nil {
				*ref = err
			}
			sameRefusal(t, what, err, *ref, codes.Unauthenticated)
			msg := answer(err)
			for _, secret := range []string{adminKey.ID, adminKey.Secret, other.ID, other.Secret, revoked.KeyId, app.KeyId} {
				if strings.Contains(msg, secret) {
					t.Errorf("%s: the answer quotes the key: %s", what, msg)
				}
			}
		}
	}
	t.Logf("%d methods refused %d bad credentials each; bad keys all answered %q", len(methods), len(credentials),
		status.Convert(keyedRef).Message())
	// Nothing reached a handler. The apps are the bootstrap admin app, billing and the
	// notifier's own (herald-notifier, for its calls to the contacts service).
	for table, want := range map[string]int{
		"notifier.notifications": 0, "notifier.templates": 0, "contacts.users": 0, "notifier.apps": 3,
		"notifier.categories": categories, "notifier.provider_events": 0,
	} {
		if n := count(t, s, `SELECT count(*) FROM `+table); n != want {
			t.Errorf("%s holds %d rows, want %d", table, n, want)
		}
	}
}

// TestSecurityErrorsKeepInternalsInside: when a dependency fails, the caller is told so in words
// written for it - not the dependency's own error, which names internal addresses - and the
// cause goes to the logs.
func TestSecurityErrorsKeepInternalsInside(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	contactsAddr := s.contacts.GRPCAddr()
	s.contacts.Close() // Close is idempotent: the stack's cleanup closes it again
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.notify.Send(ctx, userSend("ada", "account"))
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("Send with the contacts service down: %v, want Unavailable", err)
	}
	_, port, _ := strings.Cut(contactsAddr, ":")
	for _, internal := range []string{contactsAddr, port, "dial", "rpc error", "connection refused", "transport"} {
		if strings.Contains(answer(err), internal) {
			t.Errorf("the answer holds %q: %s", internal, answer(err))
		}
	}
	if !strings.Contains(strings.Join(s.logs.lines(), "\n"), contactsAddr) {
		t.Errorf("the cause (the contacts service at %s) is not in the logs", contactsAddr)
	}
}

// TestSecurityRevocationIsImmediate: a key revoked through one notifier is refused by the very
// next call on every notifier replica and on the contacts service, each with its own warm
// cache, exactly as a key that never existed is refused; and a revoked bootstrap key stays
// revoked when a notifier that has it configured restarts.
func TestSecurityRevocationIsImmediate(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	second := s.startNotifier(t)
	admin := heraldv1.NewAdminServiceClient(s.conn)
	app, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "billing",
		ContactsAccess: heraldv1.ContactsAccess_CONTACTS_ACCESS_READ}) // for BatchGetUsers below
	if err != nil {
		t.Fatal(err)
	}
	type endpoint struct {
		name string
		call func(key string) error
	}
	notifierCall := func(addr string) func(string) error {
		return func(key string) error {
			_, err := heraldv1.NewAdminServiceClient(dial(t, addr, key)).ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
			return err
		}
	}
	endpoints := []endpoint{
		{"notifier", notifierCall(s.notifier.GRPCAddr())},
		{"second notifier", notifierCall(second.GRPCAddr())},
		{"contacts", func(key string) error {
			_, err := heraldv1.NewContactsServiceClient(dial(t, s.contacts.GRPCAddr(), key)).
				BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: []string{"nobody"}})
			return err
		}},
	}
	for _, e := range endpoints { // warm every cache with the key
		for range 3 {
			if err := e.call(app.Key); err != nil {
				t.Fatalf("%s before the revocation: %v", e.name, err)
			}
		}
	}
	if _, err := admin.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: app.KeyId}); err != nil {
		t.Fatal(err)
	}
	for _, e := range endpoints { // no waiting: the next call
		sameRefusal(t, e.name+" after the revocation", e.call(app.Key), e.call(appkey.New().String()), codes.Unauthenticated)
	}

	// A bootstrap key is installed at every notifier start; once revoked, a restart (or a new
	// replica) that still has it configured does not bring it back.
	bootstrap := appkey.New()
	start := func() *notifierd.Daemon {
		d, err := notifierd.Start(ctx, notifierd.Config{
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL,
			ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.contactsKey, BootstrapKey: bootstrap.String(), BootstrapApp: "ops",
			RepublishAfter: time.Minute, ReconcileInterval: time.Second, Log: s.log.With("service", "notifier-bootstrap"),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := start()
	var closeFirst sync.Once
	t.Cleanup(func() { closeFirst.Do(first.Close) })
	if err := notifierCall(first.GRPCAddr())(bootstrap.String()); err != nil {
		t.Fatalf("the bootstrap key: %v", err)
	}
	if _, err := admin.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: bootstrap.ID}); err != nil {
		t.Fatal(err)
	}
	closeFirst.Do(first.Close)
	restarted := start()
	t.Cleanup(restarted.Close)
	for name, addr := range map[string]string{"the restarted notifier": restarted.GRPCAddr(), "another notifier": s.notifier.GRPCAddr()} {
		call := notifierCall(addr)
		sameRefusal(t, "the revoked bootstrap key on "+name, call(bootstrap.String()), call(appkey.New().String()), codes.Unauthenticated)
	}
}

// adminCall is one AdminService call by a non-admin app, made about something that exists and
// about something that does not.
type adminCall struct {
	method string
	call   func(c heraldv1.AdminServiceClient, existing bool) error
}

// TestSecurityAppsSeeOnlyTheirOwn: an app without admin rights - here one whose key may only send
// account email - is refused every AdminService method (but ListCategories, which any app may
// call) with PERMISSION_DENIED, the same answer whether or not the app, key or category it names
// exists, and changes nothing. Another app's notification looks exactly like one that does not
// exist, to read, cancel or track; idempotency keys are per app; a template belongs to the app
// that created it; and an app without contacts access sends to a user id but cannot read, change
// or explain the user's contact data.
func TestSecurityAppsSeeOnlyTheirOwn(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	admin := heraldv1.NewAdminServiceClient(s.conn)
	shop, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	mailer, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "mailer", AllowedCategories: []string{"account"},
		AllowedChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}})
	if err != nil {
		t.Fatal(err)
	}
	shopNotify := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), shop.Key))
	mailerConn := dial(t, s.notifier.GRPCAddr(), mailer.Key)
	mailerNotify := heraldv1.NewNotificationServiceClient(mailerConn)
	mailerAdmin := heraldv1.NewAdminServiceClient(mailerConn)

	t.Run("admin methods", func(t *testing.T) {
		before, err := admin.ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		pick := func(existing bool, yes, no string) string {
			if existing {
				return yes
			}
			return no
		}
		missingApp := uuid.Must(uuid.NewV7()).String()
		calls := []adminCall{
			{"CreateApp", func(c heraldv1.AdminServiceClient, existing bool) error {
				_, err := c.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: pick(existing, "shop", "mallory"), Admin: true})
				return err
			}},
			{"UpdateApp", func(c heraldv1.AdminServiceClient, existing bool) error {
				_, err := c.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: pick(existing, mailer.App.AppId, missingApp)}})
				return err
			}},
			{"ListApps", func(c heraldv1.AdminServiceClient, _ bool) error {
				_, err := c.ListApps(ctx, &heraldv1.ListAppsRequest{})
				return err
			}},
			{"IssueKey", func(c heraldv1.AdminServiceClient, existing bool) error {
				_, err := c.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: pick(existing, shop.App.AppId, missingApp)})
				return err
			}},
			{"RevokeKey", func(c heraldv1.AdminServiceClient, existing bool) error {
				_, err := c.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: pick(existing, shop.KeyId, appkey.New().ID)})
				return err
			}},
			{"ListKeys", func(c heraldv1.AdminServiceClient, existing bool) error {
				_, err := c.ListKeys(ctx, &heraldv1.ListKeysRequest{AppId: pick(existing, shop.App.AppId, missingApp)})
				return err
			}},
			{"PutCategory", func(c heraldv1.AdminServiceClient, existing bool) error {
				// Making the critical category optional would let users opt out of it.
				_, err := c.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
					Name: pick(existing, "security", "giveaways"), DefaultOptIn: true}})
				return err
			}},
			{"ListDeadLetters", func(c heraldv1.AdminServiceClient, _ bool) error {
				_, err := c.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{})
				return err
			}},
			{"RedriveDeadLetters", func(c heraldv1.AdminServiceClient, _ bool) error {
				_, err := c.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{All: true})
				return err
			}},
			{"GetQueueStats", func(c heraldv1.AdminServiceClient, _ bool) error {
				_, err := c.GetQueueStats(ctx, &heraldv1.GetQueueStatsRequest{})
				return err
			}},
			{"GetDeliveryStats", func(c heraldv1.AdminServiceClient, _ bool) error {
				_, err := c.GetDeliveryStats(ctx, &heraldv1.GetDeliveryStatsRequest{})
				return err
			}},
		}
		covered := map[string]bool{"ListCategories": true}
		for _, c := range calls {
			covered[c.method] = true
			missing := c.call(mailerAdmin, false)
			sameRefusal(t, c.method+" about something that exists", c.call(mailerAdmin, true), missing, codes.PermissionDenied)
			sameRefusal(t, c.method+" about something that does not exist", missing, missing, codes.PermissionDenied)
		}
		svc := heraldv1.File_herald_v1_admin_proto.Services().ByName("AdminService")
		for i := range svc.Methods().Len() {
			if name := string(svc.Methods().Get(i).Name()); !covered[name] {
				t.Errorf("AdminService.%s is not checked here: add it to the calls", name)
			}
		}
		if _, err := mailerAdmin.ListCategories(ctx, &heraldv1.ListCategoriesRequest{}); err != nil {
			t.Errorf("ListCategories, which any app may call: %v", err)
		}
		// Nothing changed: the key still works, no app was made, the categories are as they were.
		if _, err := shopNotify.Send(ctx, emailRequest("ada@example.com")); err != nil {
			t.Errorf("the shop's key after the attempts: %v", err)
		}
		apps, err := admin.ListApps(ctx, &heraldv1.ListAppsRequest{})
		if err != nil || len(apps.Apps) != 4 { // the admin app, shop, mailer and the notifier's own
			t.Errorf("ListApps = %v, %v; want the 4 apps", apps, err)
		}
		after, err := admin.ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
		if err != nil || !proto.Equal(before, after) {
			t.Errorf("categories changed:\n%v\n->\n%v (%v)", before, after, err)
		}
		// And the send-only key is held to its scope.
		req := emailRequest("ada@example.com")
		req.Category = "marketing"
		if _, err := mailerNotify.Send(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("the send-only key outside its category: %v", err)
		}
	})

	t.Run("another app's notifications", func(t *testing.T) {
		req := emailRequest("ada@example.com")
		req.IdempotencyKey = "order-1"
		sent, err := shopNotify.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		unknown := uuid.Must(uuid.NewV7()).String()
		_, theirs := mailerNotify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: sent.NotificationId})
		_, none := mailerNotify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: unknown})
		sameRefusal(t, "GetNotification of another app's notification", theirs, none, codes.NotFound)
		_, theirs = mailerNotify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: sent.NotificationId})
		_, none = mailerNotify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: unknown})
		sameRefusal(t, "CancelNotification of another app's notification", theirs, none, codes.NotFound)
		delivery := sent.Deliveries[0].DeliveryId
		_, theirs = mailerNotify.TrackEvent(ctx, &heraldv1.TrackEventRequest{DeliveryId: delivery, Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_CLICKED})
		_, none = mailerNotify.TrackEvent(ctx, &heraldv1.TrackEventRequest{DeliveryId: unknown, Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_CLICKED})
		sameRefusal(t, "TrackEvent of another app's delivery", theirs, none, codes.NotFound)

		mine, err := shopNotify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: sent.NotificationId})
		if err != nil {
			t.Fatal(err)
		}
		if st := mine.Notification.Deliveries[0].State; st != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
			t.Errorf("the shop's delivery is %s after the mailer tried to cancel it, want QUEUED", st)
		}
		if n := count(t, s, `SELECT count(*) FROM notifier.provider_events`); n != 0 {
			t.Errorf("%d engagement events recorded", n)
		}
		// The same idempotency key from another app is another notification.
		again, err := mailerNotify.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if again.Duplicate || again.NotificationId == sent.NotificationId {
			t.Errorf("the mailer's Send with the shop's idempotency key answered the shop's notification: %v", again)
		}
	})

	t.Run("templates", func(t *testing.T) {
		tmpl := func(key string) heraldv1.TemplateServiceClient {
			return heraldv1.NewTemplateServiceClient(dial(t, s.notifier.GRPCAddr(), key))
		}
		create := func(c heraldv1.TemplateServiceClient, name, body string) error {
			_, err := c.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
				Name: name, Parts: &heraldv1.TemplateParts{EmailSubject: "Security alert", EmailText: body}}})
			return err
		}
		if err := create(s.tmpl, "security-alert", "Someone signed in to your account."); err != nil {
			t.Fatal(err)
		}
		// The security template is sent past every opt-out: another app must not rewrite it.
		if err := create(tmpl(mailer.Key), "security-alert", "Your account is locked: log in at https://evil.test"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("the mailer adds a version to the admin's template: %v, want PermissionDenied", err)
		}
		got, err := s.tmpl.GetTemplate(ctx, &heraldv1.GetTemplateRequest{Name: "security-alert"})
		if err != nil || got.Template.Version != 1 || strings.Contains(got.Template.Parts.EmailText, "evil") {
			t.Fatalf("latest security-alert = %v, %v; want version 1 unchanged", got, err)
		}
		if err := create(tmpl(shop.Key), "shop-news", "News."); err != nil {
			t.Fatal(err)
		}
		if err := create(tmpl(mailer.Key), "shop-news", "Other news."); status.Code(err) != codes.PermissionDenied {
			t.Errorf("the mailer adds a version to the shop's template: %v", err)
		}
		for _, key := range []string{shop.Key, s.key} { // the owner, then an admin
			if err := create(tmpl(key), "shop-news", "More news."); err != nil {
				t.Errorf("adding a version: %v", err)
			}
		}
	})

	t.Run("contact data", func(t *testing.T) {
		reachableUser(t, s, "ada")
		if _, err := s.people.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "ada", Settings: &heraldv1.Settings{
			OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS}}}); err != nil {
			t.Fatal(err)
		}
		snapshot := func() string { // what the contacts service holds about ada, read by an admin
			u, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "ada"})
			d, derr := s.people.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "ada", IncludeInactive: true})
			st, serr := s.people.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "ada"})
			_, missing := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "nobody"})
			return fmt.Sprint(prototext.Format(u), err, prototext.Format(d), derr, prototext.Format(st.GetSettings()), serr,
				status.Code(missing))
		}
		before := snapshot()

		// The send-only mailer sends to the user: the notifier looks ada up with its own key.
		res, err := mailerNotify.Send(ctx, userSend("ada", "account"))
		if err != nil || len(res.Deliveries) != 1 || res.Deliveries[0].Channel != heraldv1.Channel_CHANNEL_EMAIL ||
			res.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
			t.Fatalf("the send-only key to a user id: %v, %v; want one queued email", res, err)
		}

		// But every ContactsService method (from the proto) refuses it, the same whether the user
		// exists, does not, or the request is not even valid.
		contactsConn := plainConn(t, s.contacts.GRPCAddr())
		svc := heraldv1.File_herald_v1_contacts_proto.Services().ByName("ContactsService")
		for i := range svc.Methods().Len() {
			m := svc.Methods().Get(i)
			call := func(req proto.Message) error {
				return contactsConn.Invoke(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+mailer.Key),
					methodPath(m), req, dynamicpb.NewMessage(m.Output()))
			}
			existing := call(naming(m.Input(), "ada"))
			sameRefusal(t, string(m.Name())+" about a user that does not exist", call(naming(m.Input(), "nobody")), existing, codes.PermissionDenied)
			sameRefusal(t, string(m.Name())+" with an empty request", call(dynamicpb.NewMessage(m.Input())), existing, codes.PermissionDenied)
			if msg := answer(existing); strings.Contains(msg, "ada") || strings.Contains(msg, "@example.com") {
				t.Errorf("%s: the refusal tells of the user: %s", m.Name(), msg)
			}
		}
		// Nor may it explain a notification to the user, which would show their settings.
		_, theirs := mailerNotify.Explain(ctx, &heraldv1.ExplainRequest{Request: userSend("ada", "account")})
		_, none := mailerNotify.Explain(ctx, &heraldv1.ExplainRequest{Request: userSend("nobody", "account")})
		sameRefusal(t, "Explain of a user by the send-only key", theirs, none, codes.PermissionDenied)

		// An app granted read reads, and explains, but changes nothing; one granted write changes.
		support, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "support",
			ContactsAccess: heraldv1.ContactsAccess_CONTACTS_ACCESS_READ})
		if err != nil {
			t.Fatal(err)
		}
		supportConn := dial(t, s.contacts.GRPCAddr(), support.Key)
		reader := heraldv1.NewContactsServiceClient(supportConn)
		if u, err := reader.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "ada"}); err != nil || u.User.Email != "ada@example.com" {
			t.Errorf("GetUser with contacts read: %v, %v", u, err)
		}
		ex, err := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), support.Key)).Explain(ctx,
			&heraldv1.ExplainRequest{Request: userSend("ada", "account")})
		if err != nil || len(ex.Deliveries) == 0 {
			t.Errorf("Explain of a user with contacts read: %v, %v", ex, err)
		}
		_, err = reader.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "ada"})
		sameRefusal(t, "DeleteUser with contacts read", err, callContacts(t, contactsConn, "UpsertUser", support.Key), codes.PermissionDenied)
		if after := snapshot(); after != before {
			t.Errorf("the refused calls changed ada:\n%s\n->\n%s", before, after)
		}
		if _, err := admin.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: support.App.AppId,
			ContactsAccess: heraldv1.ContactsAccess_CONTACTS_ACCESS_WRITE}}); err != nil {
			t.Fatal(err)
		}
		if _, err := reader.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "grace", Email: "grace@example.com"}}); err != nil {
			t.Errorf("UpsertUser once granted write, from the next call: %v", err)
		}
	})
}

// naming returns a request of type md that names user wherever a request can name one: the
// user_id and user_ids fields, at the top or in a user or device, and a token for requests
// that name a device by it.
func naming(md protoreflect.MessageDescriptor, user string) proto.Message {
	m := dynamicpb.NewMessage(md)
	var fill func(m protoreflect.Message)
	fill = func(m protoreflect.Message) {
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			switch {
			case f.Name() == "user_id" && f.Kind() == protoreflect.StringKind:
				m.Set(f, protoreflect.ValueOfString(user))
			case f.Name() == "user_ids" && f.IsList():
				m.Mutable(f).List().Append(protoreflect.ValueOfString(user))
			case f.Name() == "token" && f.Kind() == protoreflect.StringKind:
				m.Set(f, protoreflect.ValueOfString(iosToken))
			case (f.Name() == "user" || f.Name() == "device") && f.Kind() == protoreflect.MessageKind && !f.IsList():
				fill(m.Mutable(f).Message())
			}
		}
	}
	fill(m)
	return m
}

// callContacts invokes the ContactsService method by name with an empty request and key.
func callContacts(t *testing.T, conn *grpc.ClientConn, method, key string) error {
	t.Helper()
	m := heraldv1.File_herald_v1_contacts_proto.Services().ByName("ContactsService").Methods().ByName(protoreflect.Name(method))
	if m == nil {
		t.Fatalf("no ContactsService.%s", method)
	}
	return callWith(context.Background(), conn, m, "Bearer "+key)
}

// sgEvent is one SendGrid event about a delivery.
func sgEvent(kind, id, deliveryID, email string) map[string]any {
	return map[string]any{"event": kind, "sg_event_id": id, "delivery_id": deliveryID, "email": email,
		"timestamp": time.Now().Unix(), "sg_message_id": "msg." + id}
}

// sendGridHeaders signs body as SendGrid does at time at: ECDSA P-256 over SHA-256 of the
// timestamp followed by the body.
func sendGridHeaders(t *testing.T, key *ecdsa.PrivateKey, body []byte, at time.Time) http.Header {
	t.Helper()
	ts := strconv.FormatInt(at.Unix(), 10)
	h := sha256.New()
	h.Write([]byte(ts))
	h.Write(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{
		"X-Twilio-Email-Event-Webhook-Signature": {base64.StdEncoding.EncodeToString(sig)},
		"X-Twilio-Email-Event-Webhook-Timestamp": {ts},
	}
}

// twilioSignature signs a webhook as Twilio does: HMAC-SHA1, keyed with the auth token, of the
// URL followed by each form parameter's name and value in name order, in base64.
func twilioSignature(token, u string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := u
	for _, k := range keys {
		s += k + form.Get(k)
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// webhookNotifier starts a notifier replica that serves the provider webhooks, reached by the
// providers at notifyPublicURL. A nil key or an empty token leaves that webhook off.
func (s *stack) webhookNotifier(t *testing.T, sendGrid *ecdsa.PublicKey, twilioToken string) *notifierd.Daemon {
	t.Helper()
	var sgKey string
	if sendGrid != nil {
		der, err := x509.MarshalPKIXPublicKey(sendGrid)
		if err != nil {
			t.Fatal(err)
		}
		sgKey = base64.StdEncoding.EncodeToString(der)
	}
	d, err := notifierd.Start(context.Background(), notifierd.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.contactsKey, RepublishAfter: 2 * time.Second,
		ReconcileInterval: 200 * time.Millisecond, OpsInterval: 500 * time.Millisecond, PublicURL: notifyPublicURL, SendGridWebhookKey: sgKey,
		TwilioAuthToken: twilioToken, Log: s.log.With("service", "notifier-webhooks"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// httpAnswer is what a client sees of an HTTP answer.
type httpAnswer struct {
	Status   int
	Body     string
	Type     string
	Location string
	Header   http.Header
}

var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t *testing.T, method, u, contentType string, body []byte, h http.Header) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpAnswer{Status: res.StatusCode, Body: string(b), Type: res.Header.Get("Content-Type"),
		Location: res.Header.Get("Location"), Header: res.Header}
}

// sameHTTPRefusal fails the test unless a is answered exactly like ref, which has the status.
func sameHTTPRefusal(t *testing.T, what string, a, ref httpAnswer, code int) {
	t.Helper()
	if a.Status != code {
		t.Errorf("%s: status %d, want %d (body %q)", what, a.Status, code, a.Body)
		return
	}
	if a.Body != ref.Body || a.Type != ref.Type || a.Location != "" {
		t.Errorf("%s: answered %d %q %q (Location %q), the reference %d %q %q", what, a.Status, a.Type, a.Body, a.Location,
			ref.Status, ref.Type, ref.Body)
	}
}

// eventsSeq is the last sequence of the events stream: it moves only when a fact is published.
func eventsSeq(t *testing.T, s *stack) uint64 {
	t.Helper()
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// suppressed returns the suppressions the contacts service holds on an address.
func suppressed(t *testing.T, s *stack, ch heraldv1.Channel, address string) []*heraldv1.Suppression {
	t.Helper()
	res, err := s.people.ResolveRecipients(context.Background(), &heraldv1.ResolveRecipientsRequest{
		Targets: []*heraldv1.Target{{Channel: ch, Address: address}}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Suppressions
}

func notification(t *testing.T, s *stack, id string) *heraldv1.Notification {
	t.Helper()
	res, err := s.notify.GetNotification(context.Background(), &heraldv1.GetNotificationRequest{NotificationId: id})
	if err != nil {
		t.Fatal(err)
	}
	return res.Notification
}

// TestSecuritySendGridWebhook: SendGrid's event webhook refuses a forged signature, a missing
// one, a body or timestamp changed after signing, and a signature older (or newer) than the
// tolerance, all with the same answer and without storing anything. Within the tolerance a
// signed request can be replayed; events are stored by SendGrid's event id and applied once, so
// the replay is accepted and changes nothing: no delivery moves again, no fact is published
// again, no event is stored again.
func TestSecuritySendGridWebhook(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hooks := s.webhookNotifier(t, &key.PublicKey, "")
	endpoint := "http://" + hooks.HTTPAddr() + "/webhooks/sendgrid/events"
	reachableUser(t, s, "wendy")
	req := userSend("wendy", "marketing")
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	d := waitFinal(t, s, res.NotificationId).Deliveries[0]
	if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("delivery %s, want SENT", d.State)
	}
	body, err := json.Marshal([]map[string]any{
		sgEvent("delivered", "sec-delivered", d.DeliveryId, "wendy@example.com"),
		sgEvent("unsubscribe", "sec-unsubscribe", d.DeliveryId, "wendy@example.com"),
	})
	if err != nil {
		t.Fatal(err)
	}
	forger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tampered := bytes.Replace(body, []byte(`"delivered"`), []byte(`"bounce"`), 1)
	without := func(h http.Header, name string) http.Header { h.Del(name); return h }
	seq := eventsSeq(t, s)

	var ref httpAnswer
	for _, c := range []struct {
		name   string
		body   []byte
		header http.Header
	}{
		{"no signature", body, nil},
		{"no timestamp", body, without(sendGridHeaders(t, key, body, now), "X-Twilio-Email-Event-Webhook-Timestamp")},
		{"timestamp only", body, without(sendGridHeaders(t, key, body, now), "X-Twilio-Email-Event-Webhook-Signature")},
		{"forged signature", body, sendGridHeaders(t, forger, body, now)},
		{"signature not base64", body, http.Header{"X-Twilio-Email-Event-Webhook-Signature": {"%%%"},
			"X-Twilio-Email-Event-Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)}}},
		{"body changed after signing", tampered, sendGridHeaders(t, key, body, now)},
		{"timestamp changed after signing", body, func() http.Header {
			h := sendGridHeaders(t, key, body, now.Add(-time.Hour))
			h.Set("X-Twilio-Email-Event-Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
			return h
		}()},
		{"signed 11 minutes ago", body, sendGridHeaders(t, key, body, now.Add(-11*time.Minute))},
		{"signed 11 minutes ahead", body, sendGridHeaders(t, key, body, now.Add(11*time.Minute))},
	} {
		a := do(t, http.MethodPost, endpoint, "application/json", c.body, c.header)
		if ref.Status == 0 {
			ref = a
		}
		sameHTTPRefusal(t, c.name, a, ref, http.StatusForbidden)
	}
	if n := count(t, s, `SELECT count(*) FROM notifier.provider_events`); n != 0 {
		t.Errorf("%d events stored from refused requests", n)
	}
	if got := notification(t, s, res.NotificationId).Deliveries[0]; got.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Errorf("delivery %s after refused requests, want SENT", got.State)
	}
	if got := eventsSeq(t, s); got != seq {
		t.Errorf("refused requests published %d facts", got-seq)
	}

	signed := sendGridHeaders(t, key, body, time.Now())
	if a := do(t, http.MethodPost, endpoint, "application/json", body, signed); a.Status != http.StatusOK {
		t.Fatalf("signed request: %d %s", a.Status, a.Body)
	}
	after := notification(t, s, res.NotificationId).Deliveries[0]
	if after.State != heraldv1.DeliveryState_DELIVERY_STATE_DELIVERED {
		t.Fatalf("delivery %s, want DELIVERED", after.State)
	}
	waitFor(t, "the unsubscribe to reach the contacts service", 30*time.Second, func() (bool, error) {
		return len(suppressed(t, s, heraldv1.Channel_CHANNEL_EMAIL, "wendy@example.com")) == 1, nil
	})
	seq = eventsSeq(t, s)
	var announced time.Time
	if err := s.pool.QueryRow(ctx, `SELECT max(announced_at) FROM notifier.provider_events`).Scan(&announced); err != nil {
		t.Fatal(err)
	}

	// The same request again, as one who recorded it would replay it within the tolerance.
	if a := do(t, http.MethodPost, endpoint, "application/json", body, signed); a.Status != http.StatusOK {
		t.Fatalf("replay: %d %s, want 200 (a repeat is SendGrid's own retry too)", a.Status, a.Body)
	}
	if n := count(t, s, `SELECT count(*) FROM notifier.provider_events`); n != 2 {
		t.Errorf("%d events stored after the replay, want the 2", n)
	}
	if n := count(t, s, `SELECT count(*) FROM notifier.provider_events WHERE announced_at > $1`, announced); n != 0 {
		t.Errorf("the replay announced %d facts again", n)
	}
	if got := eventsSeq(t, s); got != seq {
		t.Errorf("the replay published %d facts", got-seq)
	}
	if again := notification(t, s, res.NotificationId).Deliveries[0]; !proto.Equal(again, after) {
		t.Errorf("the replay changed the delivery:\n%v\n->\n%v", after, again)
	}
	if n := len(suppressed(t, s, heraldv1.Channel_CHANNEL_EMAIL, "wendy@example.com")); n != 1 {
		t.Errorf("%d suppressions after the replay, want 1", n)
	}
}

// TestSecurityTwilioWebhooks: Twilio's status callback (notifier) and inbound SMS webhook
// (contacts) refuse a missing signature, another account's, one for another URL (another host,
// the service's internal address, the other webhook's path) and one for other parameters, each
// with the same answer and no effect. Signed properly they work; a replayed status callback is
// applied once, and a replayed STOP does not undo the START sent after it.
func TestSecurityTwilioWebhooks(t *testing.T) {
	twilioFake := twiliofake.New(twilioSID, twilioAuth)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	statusURL := notifyPublicURL + "/webhooks/twilio/status"
	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.SMSProvider = "twilio"
		c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
		c.Twilio.StatusCallback = statusURL
	}})
	ctx := context.Background()
	hooks := s.webhookNotifier(t, nil, twilioAuth)

	t.Run("status callback", func(t *testing.T) {
		endpoint := "http://" + hooks.HTTPAddr() + "/webhooks/twilio/status"
		reachableUser(t, s, "tess")
		req := userSend("tess", "marketing")
		req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS}
		res, err := s.notify.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		d := waitFinal(t, s, res.NotificationId).Deliveries[0]
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || d.ProviderMessageId == "" {
			t.Fatalf("delivery %v, want SENT through Twilio", d)
		}
		form := url.Values{"MessageSid": {d.ProviderMessageId}, "MessageStatus": {"failed"}, "ErrorCode": {"21610"},
			"AccountSid": {twilioSID}, "To": {"+14155550100"}, "From": {"+14155550199"}, "ApiVersion": {"2010-04-01"}}
		tampered := url.Values{}
		for k, v := range form {
			tampered[k] = v
		}
		tampered.Set("ErrorCode", "30003")
		post := func(path string, f url.Values, sig string) httpAnswer {
			h := http.Header{}
			if sig != "" {
				h.Set("X-Twilio-Signature", sig)
			}
			return do(t, http.MethodPost, "http://"+hooks.HTTPAddr()+path, "application/x-www-form-urlencoded", []byte(f.Encode()), h)
		}
		seq := eventsSeq(t, s)
		var ref httpAnswer
		for _, c := range []struct {
			name, path string
			form       url.Values
			sig        string
		}{
			{"no signature", "/webhooks/twilio/status", form, ""},
			{"another account's token", "/webhooks/twilio/status", form, twilioSignature("fedcba9876543210fedcba9876543210", statusURL, form)},
			{"signed for another host", "/webhooks/twilio/status", form, twilioSignature(twilioAuth, "https://evil.test/webhooks/twilio/status", form)},
			{"signed for the internal address", "/webhooks/twilio/status", form, twilioSignature(twilioAuth, endpoint, form)},
			{"signed for the inbound webhook", "/webhooks/twilio/status", form, twilioSignature(twilioAuth, notifyPublicURL+"/webhooks/twilio/inbound", form)},
			{"parameter changed after signing", "/webhooks/twilio/status", tampered, twilioSignature(twilioAuth, statusURL, form)},
			{"query added after signing", "/webhooks/twilio/status?delivery_id=" + uuid.NewString(), form, twilioSignature(twilioAuth, statusURL, form)},
			{"garbage signature", "/webhooks/twilio/status", form, "not base64 at all"},
		} {
			a := post(c.path, c.form, c.sig)
			if ref.Status == 0 {
				ref = a
			}
			sameHTTPRefusal(t, c.name, a, ref, http.StatusForbidden)
		}
		if n := count(t, s, `SELECT count(*) FROM notifier.provider_events`); n != 0 {
			t.Errorf("%d events stored from refused callbacks", n)
		}
		if got := notification(t, s, res.NotificationId).Deliveries[0]; got.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
			t.Errorf("delivery %s after refused callbacks, want SENT", got.State)
		}
		if got := eventsSeq(t, s); got != seq {
			t.Errorf("refused callbacks published %d facts", got-seq)
		}
		if sups := suppressed(t, s, heraldv1.Channel_CHANNEL_SMS, "+14155550100"); len(sups) != 0 {
			t.Errorf("refused callbacks suppressed the number: %v", sups)
		}

		sig := twilioSignature(twilioAuth, statusURL, form)
		if a := post("/webhooks/twilio/status", form, sig); a.Status != http.StatusOK {
			t.Fatalf("signed callback: %d %s", a.Status, a.Body)
		}
		after := notification(t, s, res.NotificationId).Deliveries[0]
		if after.State != heraldv1.DeliveryState_DELIVERY_STATE_BOUNCED {
			t.Fatalf("delivery %s after a signed failed callback, want BOUNCED", after.State)
		}
		waitFor(t, "the opt-out to reach the contacts service", 30*time.Second, func() (bool, error) {
			return len(suppressed(t, s, heraldv1.Channel_CHANNEL_SMS, "+14155550100")) == 1, nil
		})
		seq = eventsSeq(t, s)
		if a := post("/webhooks/twilio/status", form, sig); a.Status != http.StatusOK {
			t.Fatalf("replayed callback: %d %s", a.Status, a.Body)
		}
		if n := count(t, s, `SELECT count(*) FROM notifier.provider_events`); n != 1 {
			t.Errorf("%d events stored after the replay, want 1", n)
		}
		if got := eventsSeq(t, s); got != seq {
			t.Errorf("the replay published %d facts", got-seq)
		}
		if again := notification(t, s, res.NotificationId).Deliveries[0]; !proto.Equal(again, after) {
			t.Errorf("the replay changed the delivery:\n%v\n->\n%v", after, again)
		}
	})

	t.Run("inbound STOP", func(t *testing.T) {
		const number = "+14155550123"
		inboundURL := contactsPublicURL + "/webhooks/twilio/inbound"
		internal := "http://" + s.contacts.HTTPAddr() + "/webhooks/twilio/inbound"
		text := func(body string) url.Values {
			return url.Values{"From": {number}, "To": {"+14155550199"}, "Body": {body}, "NumMedia": {"0"},
				"MessageSid": {"SM" + strings.ReplaceAll(uuid.NewString(), "-", "")}, "AccountSid": {twilioSID}}
		}
		post := func(f url.Values, sig string) httpAnswer {
			h := http.Header{}
			if sig != "" {
				h.Set("X-Twilio-Signature", sig)
			}
			return do(t, http.MethodPost, internal, "application/x-www-form-urlencoded", []byte(f.Encode()), h)
		}
		stop := text("STOP")
		otherNumber := text("STOP")
		otherNumber.Set("From", "+14155550124")
		var ref httpAnswer
		for _, c := range []struct {
			name string
			form url.Values
			sig  string
		}{
			{"no signature", stop, ""},
			{"another account's token", stop, twilioSignature("fedcba9876543210fedcba9876543210", inboundURL, stop)},
			{"signed for another host", stop, twilioSignature(contactsTwilioToken, "https://evil.test/webhooks/twilio/inbound", stop)},
			{"signed for the internal address", stop, twilioSignature(contactsTwilioToken, internal, stop)},
			{"signed for the status callback", stop, twilioSignature(contactsTwilioToken, contactsPublicURL+"/webhooks/twilio/status", stop)},
			{"number changed after signing", stop, twilioSignature(contactsTwilioToken, inboundURL, otherNumber)},
			{"garbage signature", stop, "not base64 at all"},
		} {
			a := post(c.form, c.sig)
			if ref.Status == 0 {
				ref = a
			}
			sameHTTPRefusal(t, c.name, a, ref, http.StatusForbidden)
		}
		if sups := suppressed(t, s, heraldv1.Channel_CHANNEL_SMS, number); len(sups) != 0 {
			t.Fatalf("refused texts suppressed the number: %v", sups)
		}
		stopSig := twilioSignature(contactsTwilioToken, inboundURL, stop)
		if a := post(stop, stopSig); a.Status != http.StatusOK {
			t.Fatalf("signed STOP: %d %s", a.Status, a.Body)
		}
		if sups := suppressed(t, s, heraldv1.Channel_CHANNEL_SMS, number); len(sups) != 1 {
			t.Fatalf("after a signed STOP: suppressions %v", sups)
		}
		start := text("START")
		if a := post(start, twilioSignature(contactsTwilioToken, inboundURL, start)); a.Status != http.StatusOK {
			t.Fatalf("signed START: %d %s", a.Status, a.Body)
		}
		// The STOP, replayed after the person's START, must not opt them out again.
		if a := post(stop, stopSig); a.Status != http.StatusOK {
			t.Fatalf("replayed STOP: %d %s", a.Status, a.Body)
		}
		if sups := suppressed(t, s, heraldv1.Channel_CHANNEL_SMS, number); len(sups) != 0 {
			t.Errorf("a replayed STOP undid the later START: suppressions %v", sups)
		}
	})
}

// TestSecurityLinkTokensRefusedAlike: the preference page and the one-click unsubscribe refuse
// a forged link, one signed by an unknown key, an expired one, one made for the other page, one
// whose payload was changed (to another user) or whose signature was cut or altered, each with
// exactly the answer a valid link for a user who does not exist gets, and change nothing.
func TestSecurityLinkTokensRefusedAlike(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	for _, id := range []string{"lina", "mo"} {
		if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: id, Email: id + "@example.com"}}); err != nil {
			t.Fatal(err)
		}
	}
	mustSigner := func(k linktoken.Key) *linktoken.Signer {
		sg, err := linktoken.New(k)
		if err != nil {
			t.Fatal(err)
		}
		return sg
	}
	signer := mustSigner(stackLinkKey)
	forger := mustSigner(linktoken.Key{ID: stackLinkKey.ID, Secret: bytes.Repeat([]byte{8}, 32)})
	stranger := mustSigner(linktoken.Key{ID: "old", Secret: stackLinkKey.Secret})
	hour := time.Now().Add(time.Hour).Unix()
	claims := func(purpose, user string) linktoken.Claims {
		c := linktoken.Claims{Purpose: purpose, UserID: user}
		if purpose == linktoken.Preferences {
			c.Expires = hour
		}
		return c
	}
	base := "http://" + s.contacts.HTTPAddr()
	type page struct {
		name    string
		purpose string
		visit   func(token string) httpAnswer
	}
	form := func(v url.Values) []byte { return []byte(v.Encode()) }
	pages := []page{
		{"GET /preferences", linktoken.Preferences, func(tok string) httpAnswer {
			return do(t, http.MethodGet, base+"/preferences?token="+url.QueryEscape(tok), "", nil, nil)
		}},
		{"POST /preferences", linktoken.Preferences, func(tok string) httpAnswer {
			return do(t, http.MethodPost, base+"/preferences", "application/x-www-form-urlencoded",
				form(url.Values{"token": {tok}, "pause": {"on"}}), nil)
		}},
		{"GET /unsubscribe", linktoken.Unsubscribe, func(tok string) httpAnswer {
			return do(t, http.MethodGet, base+"/unsubscribe?token="+url.QueryEscape(tok), "", nil, nil)
		}},
		{"POST /unsubscribe", linktoken.Unsubscribe, func(tok string) httpAnswer {
			return do(t, http.MethodPost, base+"/unsubscribe?token="+url.QueryEscape(tok), "application/x-www-form-urlencoded",
				form(url.Values{"List-Unsubscribe": {"One-Click"}}), nil)
		}},
	}
	// swapPayload keeps tok's key id and signature and puts in the payload of other.
	swapPayload := func(tok, other string) string {
		a, b := strings.Split(tok, "."), strings.Split(other, ".")
		return a[0] + "." + b[1] + "." + a[2]
	}
	var ref httpAnswer
	for _, p := range pages {
		otherPurpose := linktoken.Unsubscribe
		if p.purpose == linktoken.Unsubscribe {
			otherPurpose = linktoken.Preferences
		}
		good := signer.Sign(claims(p.purpose, "lina"))
		if a := p.visit(good); a.Status != http.StatusOK && a.Status != http.StatusSeeOther {
			t.Fatalf("%s with a good link: %d %s", p.name, a.Status, a.Body)
		}
		unknown := p.visit(signer.Sign(claims(p.purpose, "ghost")))
		if ref.Status == 0 {
			ref = unknown
		}
		sameHTTPRefusal(t, p.name+" for a user who does not exist", unknown, ref, http.StatusForbidden)
		expired := claims(p.purpose, "lina")
		expired.Expires = time.Now().Add(-time.Minute).Unix()
		noDot := strings.LastIndexByte(good, '.')
		for _, c := range []struct{ name, token string }{
			{"forged signature", forger.Sign(claims(p.purpose, "lina"))},
			{"unknown key id", stranger.Sign(claims(p.purpose, "lina"))},
			{"expired", signer.Sign(expired)},
			{"made for the other page", signer.Sign(claims(otherPurpose, "lina"))},
			{"payload changed to another user", swapPayload(good, signer.Sign(claims(p.purpose, "mo")))},
			{"payload changed to another purpose", swapPayload(good, signer.Sign(claims(otherPurpose, "lina")))},
			{"signature cut", good[:noDot]},
			{"signature emptied", good[:noDot+1]},
			{"signature altered", good[:noDot+1] + strings.Repeat("A", len(good)-noDot-1)},
			{"not a token", "not-a-token"},
		} {
			sameHTTPRefusal(t, p.name+" with a link "+c.name, p.visit(c.token), ref, http.StatusForbidden)
		}
	}
	// Only the good links changed anything: lina paused her notifications (the POST) and left
	// email; mo is untouched.
	for id, pause := range map[string]bool{"lina": true, "mo": false} {
		st, err := s.people.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: id})
		if err != nil {
			t.Fatal(err)
		}
		if st.Settings.GetGlobalOptOut() != pause {
			t.Errorf("%s: settings %v", id, st.Settings)
		}
	}
}

// realProviders sends push and SMS through the providers' real SDKs to their fakes (email goes
// to SendGrid's fake already), so that what is checked is what the real senders do.
func realProviders(t *testing.T) func(*workersd.Config) {
	apnsFake := apnsfake.New(bundleID)
	apnsURL := apnsFake.Start()
	t.Cleanup(apnsFake.Close)
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	apnsFake.TrustKey("TEAM123456", "KEY1234567", &key.PublicKey)
	fcmFake := fcmfake.New("herald-test", "fcm-access-token")
	fcmFake.Start()
	t.Cleanup(fcmFake.Close)
	twilioFake := twiliofake.New(twilioSID, twilioAuth)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	return func(c *workersd.Config) {
		c.IOSProvider, c.AndroidProvider, c.SMSProvider = "apns", "fcm", "twilio"
		c.APNsHost = apnsURL
		c.APNs.Topic, c.APNs.KeyPEM, c.APNs.KeyID, c.APNs.TeamID = bundleID, p8, "KEY1234567", "TEAM123456"
		c.APNs.RootCAs = apnsFake.RootCAs()
		c.FCM.ProjectID, c.FCM.CredentialsJSON, c.FCM.Endpoint = "herald-test", fcmFake.ServiceAccountJSON(), fcmFake.Endpoint()
		c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
	}
}

// TestSecurityNoCallerSuppliedURLIsFetched: no RPC takes a URL to call back (every request field
// is checked), and URLs that callers put wherever text goes - content, HTML, push data, template
// data - are delivered as text through the real provider SDKs and never fetched by any service.
// The end-user pages redirect
// only to themselves: redirect parameters are ignored and a path that looks like another host
// stays on this one. A user's timezone cannot name a file.
func TestSecurityNoCallerSuppliedURLIsFetched(t *testing.T) {
	var hits atomic.Int64
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		t.Errorf("a service fetched a caller-supplied URL: %s %s", r.Method, r.URL)
	}))
	t.Cleanup(trap.Close)
	trapHost := strings.TrimPrefix(trap.URL, "http://")

	t.Run("no request field takes a URL", func(t *testing.T) {
		suspicious := []string{"url", "uri", "href", "link", "redirect", "callback", "webhook", "endpoint", "host", "next", "return"}
		seen := map[protoreflect.FullName]bool{}
		var walk func(m protoreflect.MessageDescriptor, path string)
		walk = func(m protoreflect.MessageDescriptor, path string) {
			if seen[m.FullName()] || strings.HasPrefix(string(m.FullName()), "google.protobuf.") {
				return
			}
			seen[m.FullName()] = true
			for i := range m.Fields().Len() {
				f := m.Fields().Get(i)
				name := strings.ToLower(string(f.Name()))
				for _, word := range suspicious {
					if strings.Contains(name, word) {
						t.Errorf("request field %s.%s may take a URL: check that nothing fetches it", path, f.Name())
					}
				}
				if f.Message() != nil {
					walk(f.Message(), path+"."+string(f.Name()))
				}
			}
		}
		for _, m := range everyMethod() {
			walk(m.Input(), methodPath(m))
		}
	})

	s := startStack(t, stackOptions{providers: realProviders(t)})
	ctx := context.Background()
	u := trap.URL + "/fetch-me"
	data, err := structpb.NewStruct(map[string]any{
		"image": u + "/image.png", "url": u, "link": u, "webhook": u, "callback_url": u, "redirect": u,
		"fcm_options": map[string]any{"image": u}, "attachment-url": u, "media": []any{u},
	})
	if err != nil {
		t.Fatal(err)
	}
	html := `<p><img src="` + u + `/pixel.gif"><a href="` + u + `">open</a></p>` +
		`<link rel="stylesheet" href="` + u + `/style.css"><iframe src="` + u + `"></iframe>`
	address := &heraldv1.Address{Email: "ada@example.com", Phone: "+14155550100", IosTokens: []string{iosToken},
		AndroidTokens: []string{fcmToken}}
	var sent []string
	res, err := s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: address}},
		Category:  "account", Data: data,
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Title: "See " + u, Subject: "See " + u, Body: "Open " + u, Html: html}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sent = append(sent, res.NotificationId)
	if _, err := s.tmpl.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "linky", Parts: &heraldv1.TemplateParts{PushTitle: "{{.url}}", PushBody: "{{.image}}", SmsBody: "{{.url}}",
			EmailSubject: "Hi", EmailHtml: `<img src="{{.image}}"><a href="{{.url}}">x</a>`, EmailText: "{{.url}}"}}}); err != nil {
		t.Fatal(err)
	}
	res, err = s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: address}},
		Category:  "account", Data: data,
		Message: &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "linky"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sent = append(sent, res.NotificationId)
	for _, id := range sent {
		n := waitFinal(t, s, id)
		for _, d := range n.Deliveries {
			if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
				t.Errorf("%s: %s (%s %s), want SENT", d.Channel, d.State, d.Reason, d.LastError)
			}
		}
	}

	t.Run("timezone cannot name a file", func(t *testing.T) {
		for _, tz := range []string{"../../../../etc/passwd", "/etc/passwd", "Local", "Europe/../../../etc/hostname"} {
			_, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "tz", Email: "tz@example.com", Timezone: tz}})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("timezone %q: %v, want InvalidArgument", tz, err)
			}
		}
	})

	t.Run("pages redirect only to themselves", func(t *testing.T) {
		if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "rex", Email: "rex@example.com"}}); err != nil {
			t.Fatal(err)
		}
		signer, err := linktoken.New(stackLinkKey)
		if err != nil {
			t.Fatal(err)
		}
		prefs := signer.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: "rex", Expires: time.Now().Add(time.Hour).Unix()})
		unsub := signer.Sign(linktoken.Claims{Purpose: linktoken.Unsubscribe, UserID: "rex", Category: "marketing"})
		base := "http://" + s.contacts.HTTPAddr()
		redirects := url.Values{}
		for _, p := range []string{"next", "return", "return_to", "returnTo", "redirect", "redirect_uri", "redirect_url", "continue", "url", "goto", "dest"} {
			redirects.Set(p, trap.URL)
		}
		stays := func(what string, a httpAnswer, origin string) {
			t.Helper()
			if a.Location == "" && strings.Contains(a.Body, trapHost) {
				t.Errorf("%s: the page shows the redirect target", what)
			}
			if a.Location == "" {
				return
			}
			loc, err := url.Parse(origin)
			if err == nil {
				loc, err = loc.Parse(a.Location)
			}
			if err != nil || loc.Host != strings.TrimPrefix(origin, "http://") || strings.HasPrefix(a.Location, "//") {
				t.Errorf("%s: redirects to %q", what, a.Location)
			}
		}
		q := url.Values{"token": {prefs}}
		for k, v := range redirects {
			q[k] = v
		}
		a := do(t, http.MethodGet, base+"/preferences?"+q.Encode(), "", nil, nil)
		if a.Status != http.StatusOK || a.Location != "" {
			t.Errorf("GET /preferences with redirect parameters: %d, Location %q", a.Status, a.Location)
		}
		stays("GET /preferences", a, base)
		a = do(t, http.MethodPost, base+"/preferences?"+redirects.Encode(), "application/x-www-form-urlencoded", []byte(q.Encode()), nil)
		if want := "preferences?saved=1&token=" + url.QueryEscape(prefs); a.Status != http.StatusSeeOther || a.Location != want {
			t.Errorf("POST /preferences: %d, Location %q; want 303 to %q", a.Status, a.Location, want)
		}
		stays("POST /preferences", a, base)
		uq := url.Values{"token": {unsub}}
		for k, v := range redirects {
			uq[k] = v
		}
		a = do(t, http.MethodGet, base+"/unsubscribe?"+uq.Encode(), "", nil, nil)
		if a.Status != http.StatusOK || a.Location != "" {
			t.Errorf("GET /unsubscribe: %d, Location %q", a.Status, a.Location)
		}
		stays("GET /unsubscribe", a, base)
		a = do(t, http.MethodPost, base+"/unsubscribe?"+uq.Encode(), "application/x-www-form-urlencoded",
			[]byte(url.Values{"List-Unsubscribe": {"One-Click"}}.Encode()), nil)
		if a.Status != http.StatusOK || a.Location != "" {
			t.Errorf("POST /unsubscribe: %d, Location %q", a.Status, a.Location)
		}
		stays("POST /unsubscribe", a, base)
		// A path that looks like another host: whatever the mux does with it stays here.
		for _, origin := range []string{base, "http://" + s.notifier.HTTPAddr()} {
			for _, path := range []string{"//" + trapHost + "/preferences", "//" + trapHost + "/%2e%2e/status", "/./" + trapHost, "/%2F%2F" + trapHost} {
				stays("GET "+origin+path, do(t, http.MethodGet, origin+path, "", nil, nil), origin)
			}
		}
	})

	// Give the workers' stragglers, if any, time to show: the deliveries are final, so nothing
	// should still be running that could fetch.
	time.Sleep(500 * time.Millisecond)
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests reached the caller's URL", n)
	}
}

// canary is a secret the canary test configures, with the forms it could leak in.
type canary struct {
	name  string
	forms []string
}

func newCanary(name string, secret []byte) canary {
	c := canary{name: name}
	add := func(s string) {
		if len(s) >= 12 && !slices.Contains(c.forms, s) {
			c.forms = append(c.forms, s)
		}
	}
	add(string(secret))
	add(url.QueryEscape(string(secret)))
	add(hex.EncodeToString(secret))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		add(strings.TrimRight(enc.EncodeToString(secret), "="))
	}
	return c
}

// base64Secret is a canary for a secret written in base64: the text and the bytes it stands for.
func base64Secret(name, text string, enc *base64.Encoding) []canary {
	out := []canary{newCanary(name, []byte(text))}
	if b, err := enc.DecodeString(text); err == nil {
		out = append(out, newCanary(name+" (decoded)", b))
	}
	return out
}

// pemCanaries are canaries for a PEM private key: its base64 body, line by line (a leak holds
// at least one line), and the DER.
func pemCanaries(t *testing.T, name string, pemBytes []byte) []canary {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatalf("%s: not PEM", name)
	}
	out := []canary{newCanary(name+" (DER)", b.Bytes)}
	body := base64.StdEncoding.EncodeToString(b.Bytes)
	for i := 0; i+64 <= len(body); i += 64 {
		out = append(out, canary{name: name + " (a line of its PEM)", forms: []string{body[i : i+64]}})
	}
	return out
}

// pgDump dumps the database at dbURL with the machine's pg_dump.
func pgDump(t *testing.T, dbURL string) string {
	t.Helper()
	var bin string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		bin = filepath.Join(strings.TrimSpace(string(out)), "pg_dump")
	}
	if _, err := os.Stat(bin); err != nil {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
		if len(dirs) == 0 {
			t.Fatal("pg_dump not found: install postgresql-client")
		}
		bin = dirs[len(dirs)-1]
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--no-owner", "--dbname="+dbURL)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	return string(out)
}

// leaks returns the canaries found in text, by name.
func leaks(text string, canaries []canary) []string {
	var out []string
	for _, c := range canaries {
		for _, f := range c.forms {
			if strings.Contains(text, f) {
				out = append(out, fmt.Sprintf("%s (as %q)", c.name, f))
				break
			}
		}
	}
	return out
}

// TestSecuritySecretsNeverLeak is the canary test. Every service runs with distinctive secrets -
// app keys, the link signing key, both Twilio webhook tokens, and every provider credential:
// the APNs certificate and its PKCS #12 password, the FCM service account's private key and the
// access token it buys, the Twilio auth token, the SendGrid API key, the SMTP password - and
// traffic runs that fails in every way worth logging: bad keys, bad requests, forged webhooks
// and links, and providers answering 401, 403 and 5xx. Then no secret, in any encoding, appears
// in the logs of any service, in /metrics or the status page of any service, in any answer a
// client got (gRPC errors, notifications with their last errors, HTTP pages), or in a pg_dump of
// the database, which keeps app keys only as hashes.
func TestSecuritySecretsNeverLeak(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	var (
		answers []string // what clients were told
		mu      sync.Mutex
	)
	heard := func(parts ...string) {
		mu.Lock()
		defer mu.Unlock()
		answers = append(answers, parts...)
	}
	heardErr := func(err error) {
		if err != nil {
			heard(answer(err))
		}
	}

	// The secrets.
	const (
		twilioToken    = "CanaryTwilioAuthToken0000000007"
		sendGridKey    = "SG.CanarySendGridApiKey000000001.CanarySendGridSecret0000000000000000002"
		smtpPassword   = "canary-smtp-password-3b9f2c71"
		apnsPassword   = "canary-apns-p12-password-5d1e"
		fcmAccessToken = "ya29.canary-fcm-access-token-8c4a2e"
		notifierTwilio = "canary-notifier-twilio-token-71d3"
		contactsTwilio = "canary-contacts-twilio-token-2f68"
	)
	linkSecret := []byte("canary-link-signing-secret-0123456789abcdef")
	linkKeys := "canary:" + base64.StdEncoding.EncodeToString(linkSecret)
	admin := heraldv1.NewAdminServiceClient(s.conn)
	app, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "canary-app"})
	if err != nil {
		t.Fatal(err)
	}
	var canaries []canary
	for name, key := range map[string]string{"the bootstrap admin key": s.key, "an app key": app.Key,
		"the notifier's key for the contacts service": s.contactsKey} {
		k, err := appkey.Parse(key)
		if err != nil {
			t.Fatal(err)
		}
		canaries = append(canaries, newCanary(name, []byte(key)))
		canaries = append(canaries, base64Secret(name+"'s secret", k.Secret, base64.RawURLEncoding)...)
	}
	for name, secret := range map[string]string{
		"the Twilio auth token": twilioToken, "the SendGrid API key": sendGridKey, "the SMTP password": smtpPassword,
		"the APNs certificate password": apnsPassword, "the FCM access token": fcmAccessToken,
		"the notifier's Twilio webhook token": notifierTwilio, "the contacts service's Twilio webhook token": contactsTwilio,
	} {
		canaries = append(canaries, newCanary(name, []byte(secret)))
	}
	canaries = append(canaries, newCanary("the link signing key", linkSecret), newCanary("the link keys flag", []byte(linkKeys)))

	// The providers, each with its credentials.
	apnsFake := apnsfake.New(bundleID)
	apnsURL := apnsFake.Start()
	t.Cleanup(apnsFake.Close)
	cert, err := apnsFake.CA().Issue(bundleID, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	canaries = append(canaries, pemCanaries(t, "the APNs certificate key", cert.KeyPEM)...)
	fcmFake := fcmfake.New("herald-canary", fcmAccessToken)
	fcmFake.Start()
	t.Cleanup(fcmFake.Close)
	var account struct {
		PrivateKey   string `json:"private_key"`
		PrivateKeyID string `json:"private_key_id"`
	}
	saJSON := fcmFake.ServiceAccountJSON()
	if err := json.Unmarshal(saJSON, &account); err != nil {
		t.Fatal(err)
	}
	canaries = append(canaries, pemCanaries(t, "the FCM service account key", []byte(account.PrivateKey))...)
	canaries = append(canaries, newCanary("the FCM private key id", []byte(account.PrivateKeyID)))
	twilioFake := twiliofake.New(twilioSID, twilioToken)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	sendGridFake := sendgridfake.New(sendGridKey)
	sendGridURL := sendGridFake.Start()
	t.Cleanup(sendGridFake.Close)
	smtpFake := smtpfake.New(smtpfake.Config{Username: "herald", Password: smtpPassword, TLS: smtpfake.NoTLS})
	smtpFake.Start()
	t.Cleanup(smtpFake.Close)

	// A contacts replica and a notifier replica with the canary webhook tokens and link key.
	cont, err := contactsd.Start(ctx, contactsd.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		PublicURL: contactsPublicURL, LinkKeys: linkKeys, TwilioAuthToken: contactsTwilio,
		Log: s.log.With("service", "contacts-canary"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cont.Close)
	sgKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hooks := s.webhookNotifier(t, &sgKey.PublicKey, notifierTwilio)

	workersConfig := s.workersConfig()
	workersConfig.IOSProvider, workersConfig.AndroidProvider, workersConfig.SMSProvider = "apns", "fcm", "twilio"
	workersConfig.APNsHost = apnsURL
	workersConfig.APNs.Topic, workersConfig.APNs.RootCAs = bundleID, apnsFake.RootCAs()
	if openssl, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		certFile, keyFile, p12File := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "push.p12")
		if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		// The algorithms Keychain exports, and the only ones apns2's PKCS #12 reader takes.
		out, err := exec.Command(openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-out", p12File,
			"-passout", "pass:"+apnsPassword, "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v: %s", err, out)
		}
		workersConfig.APNs.P12File, workersConfig.APNs.Password = p12File, apnsPassword
	} else {
		t.Log("no openssl: APNs uses the PEM certificate, and its password is not exercised")
		workersConfig.APNs.CertPEM, workersConfig.APNs.KeyPEM = cert.CertPEM, cert.KeyPEM
	}
	workersConfig.FCM.ProjectID, workersConfig.FCM.CredentialsJSON, workersConfig.FCM.Endpoint = "herald-canary", saJSON, fcmFake.Endpoint()
	workersConfig.Twilio.AccountSID, workersConfig.Twilio.AuthToken, workersConfig.Twilio.From = twilioSID, twilioToken, "+14155550199"
	workersConfig.Twilio.BaseURL, workersConfig.Twilio.StatusCallback = twilioURL, notifyPublicURL+"/webhooks/twilio/status"
	workersConfig.SendGridAPIKey, workersConfig.SendGridBaseURL = sendGridKey, sendGridURL
	workersConfig.LinkKeys, workersConfig.ContactsAddr = linkKeys, cont.GRPCAddr()
	workersConfig.Log = s.log.With("service", "workers")

	var scraped []string // /metrics and status pages
	scrape := func(addr string) {
		for _, path := range []string{"/metrics", "/status", "/readyz"} {
			res, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			scraped = append(scraped, string(b))
		}
	}
	sendAll := func(tag string) {
		t.Helper()
		res, err := s.notify.Send(ctx, &heraldv1.SendRequest{
			Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{
				Email: "ada@example.com", Phone: "+14155550100", IosTokens: []string{iosToken}, AndroidTokens: []string{fcmToken}}}},
			Category: "marketing",
			Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
				Title: "Canary " + tag, Subject: "Canary " + tag, Body: "A message."}},
		})
		if err != nil {
			t.Fatal(err)
		}
		n := waitFinal(t, s, res.NotificationId)
		heard(prototext.Format(n))
	}

	// Phase one: push, SMS and SendGrid, failing with 401 and 403, then 5xx, then a permanent
	// answer for one number.
	w, err := workersd.Start(ctx, workersConfig)
	if err != nil {
		t.Fatal(err)
	}
	apnsFake.Fail(apnsfake.ErrorFor("BadCertificate"), 1)
	fcmFake.FailTokenRequests(http.StatusUnauthorized, 1)
	fcmFake.Fail(fcmfake.ThirdPartyAuthError, 1)
	twilioFake.Fail(http.StatusUnauthorized, 1)
	sendGridFake.Fail(http.StatusForbidden, 1)
	sendAll("auth failures")
	apnsFake.Fail(apnsfake.ErrorFor("InternalServerError"), 1)
	fcmFake.Fail(fcmfake.Internal, 1)
	twilioFake.Fail(http.StatusInternalServerError, 1)
	sendGridFake.Fail(http.StatusInternalServerError, 1)
	sendAll("server errors")
	twilioFake.FailNumber("+14155550100", 21211)
	sendAll("an invalid number")

	// Callers that get it wrong, webhooks and links that are forged.
	for _, key := range []string{"", "hk_nope", appkey.New().String(), app.Key[:len(app.Key)-2] + "AA"} {
		for _, addr := range []string{s.notifier.GRPCAddr(), cont.GRPCAddr(), hooks.GRPCAddr()} {
			_, err := heraldv1.NewNotificationServiceClient(plainConn(t, addr)).Send(
				metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), emailRequest("ada@example.com"))
			heardErr(err)
			_, err = heraldv1.NewContactsServiceClient(plainConn(t, addr)).GetUser(
				metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), &heraldv1.GetUserRequest{UserId: "x"})
			heardErr(err)
		}
	}
	bad := emailRequest("not an address")
	_, err = s.notify.Send(ctx, bad)
	heardErr(err)
	_, err = s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: uuid.NewString()})
	heardErr(err)
	_, err = admin.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: uuid.NewString()})
	heardErr(err)
	statusForm := url.Values{"MessageSid": {"SM" + strings.Repeat("0", 32)}, "MessageStatus": {"delivered"}, "AccountSid": {twilioSID}}
	inbound := url.Values{"From": {"+14155550123"}, "Body": {"STOP"}, "MessageSid": {"SM" + strings.Repeat("1", 32)}, "AccountSid": {twilioSID}}
	body := []byte(`[{"event":"delivered","sg_event_id":"canary-1"}]`)
	for _, a := range []httpAnswer{
		do(t, http.MethodPost, "http://"+hooks.HTTPAddr()+"/webhooks/twilio/status", "application/x-www-form-urlencoded",
			[]byte(statusForm.Encode()), http.Header{"X-Twilio-Signature": {twilioSignature("wrong-token", notifyPublicURL+"/webhooks/twilio/status", statusForm)}}),
		do(t, http.MethodPost, "http://"+hooks.HTTPAddr()+"/webhooks/twilio/status", "application/x-www-form-urlencoded",
			[]byte(statusForm.Encode()), http.Header{"X-Twilio-Signature": {twilioSignature(notifierTwilio, notifyPublicURL+"/webhooks/twilio/status", statusForm)}}),
		do(t, http.MethodPost, "http://"+hooks.HTTPAddr()+"/webhooks/sendgrid/events", "application/json", body,
			sendGridHeaders(t, sgKey, body, time.Now().Add(-time.Hour))),
		do(t, http.MethodPost, "http://"+hooks.HTTPAddr()+"/webhooks/sendgrid/events", "application/json", body,
			sendGridHeaders(t, sgKey, body, time.Now())),
		do(t, http.MethodPost, "http://"+cont.HTTPAddr()+"/webhooks/twilio/inbound", "application/x-www-form-urlencoded",
			[]byte(inbound.Encode()), http.Header{"X-Twilio-Signature": {twilioSignature("wrong-token", contactsPublicURL+"/webhooks/twilio/inbound", inbound)}}),
		do(t, http.MethodPost, "http://"+cont.HTTPAddr()+"/webhooks/twilio/inbound", "application/x-www-form-urlencoded",
			[]byte(inbound.Encode()), http.Header{"X-Twilio-Signature": {twilioSignature(contactsTwilio, contactsPublicURL+"/webhooks/twilio/inbound", inbound)}}),
		do(t, http.MethodGet, "http://"+cont.HTTPAddr()+"/preferences?token=canary.e30.AAAA", "", nil, nil),
		do(t, http.MethodGet, "http://"+cont.HTTPAddr()+"/unsubscribe?token=not-a-token", "", nil, nil),
	} {
		heard(fmt.Sprint(a.Status), a.Body, fmt.Sprint(a.Header))
	}
	link, err := heraldv1.NewContactsServiceClient(dial(t, cont.GRPCAddr(), s.key)).CreatePreferenceLink(ctx,
		&heraldv1.CreatePreferenceLinkRequest{UserId: "nobody"})
	heardErr(err)
	if err == nil {
		heard(prototext.Format(link))
	}

	for _, addr := range []string{s.notifier.HTTPAddr(), hooks.HTTPAddr(), s.contacts.HTTPAddr(), cont.HTTPAddr(), w.HTTPAddr()} {
		scrape(addr)
	}
	w.Close()

	// Phase two: email over SMTP, refused once at AUTH.
	smtpConfig := workersConfig
	smtpConfig.Channels, smtpConfig.EmailProvider, smtpConfig.SMTPTLS = "email", "smtp", "none"
	smtpConfig.SMTP.Host, smtpConfig.SMTP.Port = "127.0.0.1", smtpFake.Port()
	smtpConfig.SMTP.Username, smtpConfig.SMTP.Password = "herald", smtpPassword
	w, err = workersd.Start(ctx, smtpConfig)
	if err != nil {
		t.Fatal(err)
	}
	smtpFake.Fail(smtpfake.Auth, 535, 1)
	res, err := s.notify.Send(ctx, emailRequest("ada@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	heard(prototext.Format(waitFinal(t, s, res.NotificationId)))
	scrape(w.HTTPAddr())
	w.Close()

	// Traffic reached every provider, and failures were logged.
	if len(smtpFake.Messages()) == 0 || len(sendGridFake.Messages()) == 0 || len(twilioFake.Messages()) == 0 ||
		len(fcmFake.Messages()) == 0 {
		t.Errorf("a provider got no message: smtp %d, sendgrid %d, twilio %d, fcm %d", len(smtpFake.Messages()),
			len(sendGridFake.Messages()), len(twilioFake.Messages()), len(fcmFake.Messages()))
	}
	logs := strings.Join(s.logs.lines(), "\n")
	for _, want := range []string{`"level":"WARN"`, `"level":"ERROR"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s line: the failures were not logged, so the test proves little", want)
		}
	}

	dump := pgDump(t, s.dbURL)
	if !strings.Contains(dump, "app_keys") || !strings.Contains(dump, "canary-app") {
		t.Fatalf("the dump does not hold the apps and keys:\n%.2000s", dump)
	}
	for where, text := range map[string]string{
		"the logs":               logs,
		"/metrics and the pages": strings.Join(scraped, "\n"),
		"the answers to clients": strings.Join(answers, "\n"),
		"the database dump":      dump,
	} {
		for _, leak := range leaks(text, canaries) {
			t.Errorf("%s hold %s", where, leak)
		}
	}
	t.Logf("checked %d canaries in %d bytes of logs, %d of metrics and pages, %d of answers and %d of dump",
		len(canaries), len(logs), len(strings.Join(scraped, "")), len(strings.Join(answers, "")), len(dump))
}
