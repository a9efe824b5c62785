package rpc

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/protofuzz"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/contactstest"
)

// links is an rpc.Links that signs nothing.
type links struct{}

func (links) PreferenceLink(userID string, ttl time.Duration) (string, time.Time, error) {
	return "https://notify.example.com/preferences?token=" + url.QueryEscape(userID), time.Now().Add(ttl), nil
}

func newServer(store *contactstest.Store) *Server {
	return &Server{Service: contacts.New(store, store), Links: links{}}
}

// input is what the fuzzer gives FuzzContacts: a request's wire bytes, and text to plant in one
// of its string fields (see protofuzz.Request).
type input struct {
	raw   []byte
	field uint8
	text  string
}

func (in input) decode(m proto.Message) bool {
	return protofuzz.Request(m, in.raw, int(in.field), in.text)
}

var iosToken = strings.Repeat("ab", 32)

// contactsOps are the ContactsService calls FuzzContacts makes, by the fuzzer's op byte. Each
// decodes its request, calls the handler and checks the answer; what a call accepts, reading it
// back returns, and writing it again leaves as it is.
var contactsOps = []func(ctx context.Context, t *testing.T, srv *Server, in input){
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.UpsertUserRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.UpsertUser(ctx, &req)
		if protofuzz.Answer(t, "UpsertUser", err) != codes.OK {
			return
		}
		got, err := srv.GetUser(ctx, &heraldv1.GetUserRequest{UserId: res.User.UserId})
		if err != nil || !proto.Equal(got.User, res.User) {
			t.Fatalf("GetUser = %v, %v; want %v", got, err, res.User)
		}
		again, err := srv.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: res.User})
		if err != nil || !proto.Equal(again.User, res.User) {
			t.Fatalf("UpsertUser(%v) again = %v, %v", res.User, again, err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.GetUserRequest
		if in.decode(&req) {
			_, err := srv.GetUser(ctx, &req)
			protofuzz.Answer(t, "GetUser", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.DeleteUserRequest
		if in.decode(&req) {
			_, err := srv.DeleteUser(ctx, &req)
			protofuzz.Answer(t, "DeleteUser", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.BatchGetUsersRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.BatchGetUsers(ctx, &req)
		if protofuzz.Answer(t, "BatchGetUsers", err) == codes.OK && len(res.Users) > len(req.UserIds) {
			t.Fatalf("%d users for %d ids", len(res.Users), len(req.UserIds))
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.RegisterDeviceRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.RegisterDevice(ctx, &req)
		if protofuzz.Answer(t, "RegisterDevice", err) != codes.OK {
			return
		}
		list, err := srv.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: res.Device.UserId})
		found := false
		for _, d := range list.GetDevices() {
			found = found || d.Token == res.Device.Token && d.Platform == res.Device.Platform
		}
		if err != nil || !found {
			t.Fatalf("ListDevices = %v, %v; want %v in it", list, err, res.Device)
		}
		if _, err := srv.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: res.Device}); err != nil {
			t.Fatalf("RegisterDevice(%v) again: %v", res.Device, err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.UnregisterDeviceRequest
		if in.decode(&req) {
			_, err := srv.UnregisterDevice(ctx, &req)
			protofuzz.Answer(t, "UnregisterDevice", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ListDevicesRequest
		if in.decode(&req) {
			_, err := srv.ListDevices(ctx, &req)
			protofuzz.Answer(t, "ListDevices", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.GetSettingsRequest
		if in.decode(&req) {
			_, err := srv.GetSettings(ctx, &req)
			protofuzz.Answer(t, "GetSettings", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.UpdateSettingsRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.UpdateSettings(ctx, &req)
		if protofuzz.Answer(t, "UpdateSettings", err) != codes.OK {
			return
		}
		got, err := srv.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: req.UserId})
		if err != nil || !proto.Equal(got.Settings, res.Settings) || got.Etag != res.Etag {
			t.Fatalf("GetSettings = %v, %v; want %v", got, err, res)
		}
		again, err := srv.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: req.UserId, Settings: res.Settings, Etag: res.Etag})
		if err != nil || !proto.Equal(again.Settings, res.Settings) || again.Etag == res.Etag {
			t.Fatalf("UpdateSettings(%v, etag %s) again = %v, %v", res.Settings, res.Etag, again, err)
		}
		// The etag of the first update is stale now.
		_, err = srv.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: req.UserId, Settings: res.Settings, Etag: res.Etag})
		if protofuzz.Answer(t, "UpdateSettings", err) != codes.Aborted {
			t.Fatalf("UpdateSettings with the stale etag %s: %v, want ABORTED", res.Etag, err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ResolveRecipientsRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.ResolveRecipients(ctx, &req)
		if protofuzz.Answer(t, "ResolveRecipients", err) == codes.OK && len(res.Users) > len(req.UserIds) {
			t.Fatalf("%d users for %d ids", len(res.Users), len(req.UserIds))
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.CreatePreferenceLinkRequest
		if in.decode(&req) {
			_, err := srv.CreatePreferenceLink(ctx, &req)
			protofuzz.Answer(t, "CreatePreferenceLink", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ListChangesRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.ListChanges(ctx, &req)
		if protofuzz.Answer(t, "ListChanges", err) == codes.OK && res.NextHorizon == 0 {
			t.Fatalf("ListChanges(%v) answered horizon 0, where a reader would start over", &req)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ListSuppressedAddressesRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.ListSuppressedAddresses(ctx, &req)
		if protofuzz.Answer(t, "ListSuppressedAddresses", err) == codes.OK && req.PageSize > 0 && len(res.Addresses) > int(req.PageSize) {
			t.Fatalf("%d addresses for a page of %d", len(res.Addresses), req.PageSize)
		}
	},
}

func FuzzContacts(f *testing.F) {
	yes, no := true, false
	u1 := contactstest.User.ID
	for op, r := range []proto.Message{
		&heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "u2", Email: "Bo@Example.COM", Phone: "+1 (415) 555-0124",
			Locale: "pt-br", Timezone: "America/Sao_Paulo"}},
		&heraldv1.GetUserRequest{UserId: u1},
		&heraldv1.DeleteUserRequest{UserId: u1},
		&heraldv1.BatchGetUsersRequest{UserIds: []string{u1, "u2", u1}},
		&heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: u1, Platform: heraldv1.Platform_PLATFORM_IOS,
			Token: strings.ToUpper(iosToken) + " ", App: "com.example.app"}},
		&heraldv1.UnregisterDeviceRequest{Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: "fcm:token"},
		&heraldv1.ListDevicesRequest{UserId: u1, IncludeInactive: true},
		&heraldv1.GetSettingsRequest{UserId: u1},
		&heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{
			OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS, heraldv1.Channel_CHANNEL_SMS},
			Categories: []*heraldv1.CategorySetting{{Category: "marketing", OptedOut: &no,
				OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}}, {Category: "account", OptedOut: &yes}},
			QuietHours: &heraldv1.QuietHours{Start: "22:00", End: "07:00"}}},
		&heraldv1.ResolveRecipientsRequest{UserIds: []string{u1, "nobody"}, Targets: []*heraldv1.Target{
			{Channel: heraldv1.Channel_CHANNEL_EMAIL, Address: "ada@example.com"}, {Channel: heraldv1.Channel_CHANNEL_IOS, Address: iosToken}}},
		&heraldv1.CreatePreferenceLinkRequest{UserId: u1, Ttl: durationpb.New(3600e9)},
		&heraldv1.ListChangesRequest{Horizon: 7, PageToken: changesToken(&contacts.ChangesCursor{Next: 9,
			After: contacts.FeedPosition{XID: 8, ID: 3}})},
		&heraldv1.ListSuppressedAddressesRequest{PageSize: 2, PageToken: addressToken(&contacts.Target{
			Channel: "email", Address: "ada@example.com"})},
	} {
		raw, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(op), raw, uint8(255), "")
	}
	// UpdateSettings (op 8) with the etag of the fixture user's first state, a stale one, and
	// one never given.
	for _, etag := range []string{"0", "3", "x"} {
		raw, err := proto.Marshal(&heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{GlobalOptOut: true}, Etag: etag})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(8), raw, uint8(255), "")
	}
	f.Fuzz(func(t *testing.T, op uint8, raw []byte, field uint8, text string) {
		store := contactstest.New()
		contactsOps[int(op)%len(contactsOps)](asWriter(), t, newServer(store), input{raw, field, text})
		if p := store.Problems(); len(p) > 0 {
			t.Fatalf("reached the store: %q", p)
		}
	})
}

// FuzzPageTokens: a page token is outside input. Parsing one never fails in any way but a
// refusal, and what a token parses to is what the same token is made of again.
func FuzzPageTokens(f *testing.F) {
	f.Add(changesToken(&contacts.ChangesCursor{Next: 12, After: contacts.FeedPosition{XID: 11, ID: 40}}))
	f.Add(addressToken(&contacts.Target{Channel: "sms", Address: "+14155550123"}))
	f.Add(addressToken(&contacts.Target{Channel: "email", Address: "a:b@example.com"}))
	f.Add("")
	f.Add("YzoxOjI6LTM")
	f.Fuzz(func(t *testing.T, token string) {
		if c, ok := parseChangesToken(token); ok && c != nil {
			if again, _ := parseChangesToken(changesToken(c)); *again != *c {
				t.Fatalf("changes token %q: %+v, then %+v", token, c, again)
			}
		}
		if a, ok := parseAddressToken(token); ok && a != nil {
			if again, _ := parseAddressToken(addressToken(a)); *again != *a {
				t.Fatalf("address token %q: %+v, then %+v", token, a, again)
			}
		}
	})
}
