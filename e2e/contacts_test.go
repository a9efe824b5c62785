package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

const iosToken = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

// reachableUser creates a user with an email, a phone and an iOS device.
func reachableUser(t *testing.T, s *stack, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{
		UserId: id, Email: id + "@example.com", Phone: "+14155550100", Timezone: "Europe/Lisbon", Locale: "pt-BR",
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.people.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{
		UserId: id, Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken,
	}}); err != nil {
		t.Fatal(err)
	}
}

func userSend(id, category string) *heraldv1.SendRequest {
	return &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: id}},
		Category:  category,
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Title: "Hello", Subject: "Hello", Body: "A message for you.",
		}},
	}
}

// states maps each channel of a Send's answer to its state and reason.
func states(res *heraldv1.SendResponse) map[heraldv1.Channel]string {
	out := map[heraldv1.Channel]string{}
	for _, d := range res.Deliveries {
		st := strings.TrimPrefix(d.State.String(), "DELIVERY_STATE_")
		if d.Reason != "" {
			st += " " + d.Reason
		}
		out[d.Channel] = st
	}
	return out
}

func updateSettings(t *testing.T, s *stack, id string, st *heraldv1.Settings) {
	t.Helper()
	if _, err := s.people.UpdateSettings(context.Background(), &heraldv1.UpdateSettingsRequest{UserId: id, Settings: st}); err != nil {
		t.Fatal(err)
	}
}

// TestSettingsAreHonoured is the contacts issue's end-to-end check: per-category-and-channel
// opt-outs skip exactly that channel, other categories still arrive, and a critical category
// ignores even the global opt-out.
func TestSettingsAreHonoured(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	reachableUser(t, s, "ana")
	updateSettings(t, s, "ana", &heraldv1.Settings{Categories: []*heraldv1.CategorySetting{{
		Category: "marketing", OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL},
	}}})

	res, err := s.notify.Send(ctx, userSend("ana", "marketing"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[heraldv1.Channel]string{
		heraldv1.Channel_CHANNEL_EMAIL: "SKIPPED opted_out",
		heraldv1.Channel_CHANNEL_IOS:   "QUEUED",
		heraldv1.Channel_CHANNEL_SMS:   "QUEUED",
	}
	if got := states(res); !equalMaps(got, want) {
		t.Fatalf("marketing Send: %v, want %v", got, want)
	}

	res, err = s.notify.Send(ctx, userSend("ana", "account"))
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	for _, d := range n.Deliveries {
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
			t.Errorf("account Send: %s delivery %s (%s), want SENT", d.Channel, d.State, d.Reason)
		}
		if d.Channel == heraldv1.Channel_CHANNEL_EMAIL && s.fake.Count(d.DeliveryId) != 1 {
			t.Errorf("the account email reached the provider %d times", s.fake.Count(d.DeliveryId))
		}
	}

	updateSettings(t, s, "ana", &heraldv1.Settings{GlobalOptOut: true})
	res, err = s.notify.Send(ctx, userSend("ana", "account"))
	if err != nil {
		t.Fatal(err)
	}
	for ch, st := range states(res) {
		if st != "SKIPPED opted_out" {
			t.Errorf("account Send after the global opt-out: %s %s", ch, st)
		}
	}
	res, err = s.notify.Send(ctx, userSend("ana", "security"))
	if err != nil {
		t.Fatal(err)
	}
	for ch, st := range states(res) {
		if st != "QUEUED" {
			t.Errorf("security Send after the global opt-out: %s %s, want QUEUED", ch, st)
		}
	}
	waitFinal(t, s, res.NotificationId)

	_, err = s.people.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "ana", Settings: &heraldv1.Settings{
		Categories: []*heraldv1.CategorySetting{{Category: "security", OptedOut: proto.Bool(true)}},
	}})
	wantField(t, err, codes.InvalidArgument, "settings.categories[security]")
}

func equalMaps[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestOptOutStopsQueuedDeliveries: an opt-out made after a notification was accepted, but before
// a worker picked it up, stops it at send time.
func TestOptOutStopsQueuedDeliveries(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	reachableUser(t, s, "bo")
	req := userSend("bo", "product")
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	updateSettings(t, s, "bo", &heraldv1.Settings{Categories: []*heraldv1.CategorySetting{{
		Category: "product", OptedOut: proto.Bool(true),
	}}})
	s.startWorkers(t)
	n := waitFinal(t, s, res.NotificationId)
	for _, d := range n.Deliveries {
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED || d.Reason != "opted_out" {
			t.Errorf("%s delivery: %s %q, want SKIPPED opted_out", d.Channel, d.State, d.Reason)
		}
	}
	if n := len(s.fake.Messages()); n != 0 {
		t.Errorf("the provider received %d emails after the opt-out", n)
	}
	if n := len(s.sim.Messages("", "")); n != 0 {
		t.Errorf("the simulator received %d messages after the opt-out", n)
	}
}

// TestOneClickUnsubscribe follows the List-Unsubscribe link of a real email: the POST opts the
// user out of that category's email, and the next Send skips it.
func TestOneClickUnsubscribe(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	reachableUser(t, s, "cy")
	req := userSend("cy", "marketing")
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, res.NotificationId)
	msgs := s.fake.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	h := msgs[0].Headers
	if h["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" || !strings.HasPrefix(h["List-Unsubscribe"], "<http://contacts.test/unsubscribe?token=") {
		t.Fatalf("headers %v lack one-click unsubscribe", h)
	}
	link, err := url.Parse(strings.Trim(h["List-Unsubscribe"], "<>"))
	if err != nil {
		t.Fatal(err)
	}
	// What a mail client does: POST the link, no cookies, no redirects followed.
	link.Scheme, link.Host = "http", s.contacts.HTTPAddr()
	post, err := http.Post(link.String(), "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusOK {
		t.Fatalf("one-click POST: %s", post.Status)
	}
	res, err = s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := states(res)[heraldv1.Channel_CHANNEL_EMAIL]; got != "SKIPPED opted_out" {
		t.Fatalf("after unsubscribing: %s", got)
	}
	// The security email of the same user is not affected: critical mail has no such link.
	res, err = s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: req.Recipient, Category: "account", Message: req.Message, Channels: req.Channels,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := states(res)[heraldv1.Channel_CHANNEL_EMAIL]; got != "QUEUED" {
		t.Fatalf("another category after unsubscribing: %s", got)
	}
}

// TestDeleteUserErasesDeliveryHistory: after DeleteUser, the user's deliveries keep only the
// user id.
func TestDeleteUserErasesDeliveryHistory(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	reachableUser(t, s, "di")
	res, err := s.notify.Send(ctx, userSend("di", "account"))
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, res.NotificationId)
	if _, err := s.people.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "di"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deliveries' addresses to be erased", 30*time.Second, func() (bool, error) {
		var left int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries
			WHERE user_id = 'di' AND (address <> '' OR content <> '{}'::jsonb)`).Scan(&left)
		return left == 0, err
	})
	if _, err := s.people.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "di"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetUser after delete: %v", err)
	}
	if _, err := s.notify.Send(ctx, userSend("di", "account")); status.Code(err) != codes.NotFound {
		t.Fatalf("Send to a deleted user: %v, want NotFound", err)
	}
}

// TestContactsRPCs covers each ContactsService call with good and bad input.
func TestContactsRPCs(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	c := s.people

	t.Run("UpsertUser", func(t *testing.T) {
		res, err := c.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{
			UserId: "eve", Email: "Eve@Example.COM", Phone: "+44 20 7946 0958", Locale: "en-gb", Timezone: "Europe/London",
		}})
		if err != nil {
			t.Fatal(err)
		}
		u := res.User
		if u.Email != "Eve@example.com" || u.Phone != "+442079460958" || u.Locale != "en-GB" || u.CreateTime == nil {
			t.Fatalf("stored %v", u)
		}
		for _, tc := range []struct {
			field string
			user  *heraldv1.User
		}{
			{"user", nil},
			{"user.user_id", &heraldv1.User{}},
			{"user.user_id", &heraldv1.User{UserId: strings.Repeat("x", 200)}},
			{"user.email", &heraldv1.User{UserId: "x", Email: "not an email"}},
			{"user.phone", &heraldv1.User{UserId: "x", Phone: "555-0100"}},
			{"user.timezone", &heraldv1.User{UserId: "x", Timezone: "Mars/Olympus"}},
			{"user.locale", &heraldv1.User{UserId: "x", Locale: "not a locale!"}},
		} {
			_, err := c.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: tc.user})
			wantField(t, err, codes.InvalidArgument, tc.field)
		}
	})
	t.Run("GetUser and BatchGetUsers", func(t *testing.T) {
		if res, err := c.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "eve"}); err != nil || res.User.UserId != "eve" {
			t.Fatalf("GetUser = %v, %v", res, err)
		}
		if _, err := c.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "nobody"}); status.Code(err) != codes.NotFound {
			t.Fatalf("unknown user: %v", err)
		}
		_, err := c.GetUser(ctx, &heraldv1.GetUserRequest{})
		wantField(t, err, codes.InvalidArgument, "user_id")
		res, err := c.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: []string{"eve", "nobody"}})
		if err != nil || len(res.Users) != 1 {
			t.Fatalf("BatchGetUsers = %v, %v", res, err)
		}
		_, err = c.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: make([]string, 1001)})
		wantField(t, err, codes.InvalidArgument, "user_ids")
	})
	t.Run("devices", func(t *testing.T) {
		dev := &heraldv1.Device{UserId: "eve", Platform: heraldv1.Platform_PLATFORM_IOS, Token: strings.ToUpper(iosToken), App: "com.example.app"}
		res, err := c.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: dev})
		if err != nil || res.Device.Token != iosToken || !res.Device.Active {
			t.Fatalf("RegisterDevice = %v, %v", res, err)
		}
		if _, err := c.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "fay"}}); err != nil {
			t.Fatal(err)
		}
		// Registering the same token for another user moves it.
		dev.UserId = "fay"
		if _, err := c.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: dev}); err != nil {
			t.Fatal(err)
		}
		list, err := c.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "eve"})
		if err != nil || len(list.Devices) != 0 {
			t.Fatalf("eve's devices after the move: %v, %v", list, err)
		}
		list, err = c.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "fay"})
		if err != nil || len(list.Devices) != 1 {
			t.Fatalf("fay's devices: %v, %v", list, err)
		}
		for _, tc := range []struct {
			field string
			dev   *heraldv1.Device
		}{
			{"device", nil},
			{"device.token", &heraldv1.Device{UserId: "fay", Platform: heraldv1.Platform_PLATFORM_IOS, Token: "xyz"}},
			{"device.token", &heraldv1.Device{UserId: "fay", Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: "has space"}},
			{"device.platform", &heraldv1.Device{UserId: "fay", Token: iosToken}},
			{"device.user_id", &heraldv1.Device{Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken}},
		} {
			_, err := c.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: tc.dev})
			wantField(t, err, codes.InvalidArgument, tc.field)
		}
		_, err = c.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{
			UserId: "nobody", Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: "fcm-token"}})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("device of an unknown user: %v", err)
		}
		if _, err := c.UnregisterDevice(ctx, &heraldv1.UnregisterDeviceRequest{Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken}); err != nil {
			t.Fatal(err)
		}
		if list, _ := c.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "fay"}); len(list.Devices) != 0 {
			t.Fatalf("devices after unregistering: %v", list.Devices)
		}
		if _, err := c.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "nobody"}); status.Code(err) != codes.NotFound {
			t.Fatalf("ListDevices of an unknown user: %v", err)
		}
	})
	t.Run("settings", func(t *testing.T) {
		res, err := c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "eve"})
		if err != nil || len(res.Categories) < 4 || res.Settings.GlobalOptOut {
			t.Fatalf("GetSettings = %v, %v", res, err)
		}
		st := &heraldv1.Settings{
			OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS},
			Categories: []*heraldv1.CategorySetting{
				{Category: "marketing", OptedOut: proto.Bool(true)},
				{Category: "product", OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS}},
			},
			QuietHours: &heraldv1.QuietHours{Start: "22:00", End: "07:30"},
		}
		if _, err := c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "eve", Settings: st}); err != nil {
			t.Fatal(err)
		}
		res, err = c.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: "eve"})
		if err != nil || !proto.Equal(res.Settings, st) {
			t.Fatalf("settings round trip: got %v, want %v (%v)", res.Settings, st, err)
		}
		for _, tc := range []struct {
			field string
			st    *heraldv1.Settings
		}{
			{"settings.categories[nope]", &heraldv1.Settings{Categories: []*heraldv1.CategorySetting{{Category: "nope"}}}},
			{"settings.categories[security]", &heraldv1.Settings{Categories: []*heraldv1.CategorySetting{{
				Category: "security", OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}}}}},
			{"settings.quiet_hours", &heraldv1.Settings{QuietHours: &heraldv1.QuietHours{Start: "25:00", End: "07:00"}}},
			{"settings.opted_out_channels[0]", &heraldv1.Settings{OptedOutChannels: []heraldv1.Channel{99}}},
		} {
			_, err := c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "eve", Settings: tc.st})
			wantField(t, err, codes.InvalidArgument, tc.field)
		}
		if _, err := c.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "nobody", Settings: &heraldv1.Settings{}}); status.Code(err) != codes.NotFound {
			t.Fatalf("settings of an unknown user: %v", err)
		}
	})
	t.Run("ResolveRecipients", func(t *testing.T) {
		res, err := c.ResolveRecipients(ctx, &heraldv1.ResolveRecipientsRequest{
			UserIds: []string{"eve", "nobody"},
			Targets: []*heraldv1.Target{{Channel: heraldv1.Channel_CHANNEL_EMAIL, Address: "x@example.com"}},
		})
		if err != nil || len(res.Users) != 1 || res.Users[0].Settings == nil || len(res.Suppressions) != 0 {
			t.Fatalf("ResolveRecipients = %v, %v", res, err)
		}
		_, err = c.ResolveRecipients(ctx, &heraldv1.ResolveRecipientsRequest{Targets: []*heraldv1.Target{{Address: "x"}}})
		wantField(t, err, codes.InvalidArgument, "targets[0].channel")
	})
	t.Run("CreatePreferenceLink", func(t *testing.T) {
		res, err := c.CreatePreferenceLink(ctx, &heraldv1.CreatePreferenceLinkRequest{UserId: "eve", Ttl: durationpb.New(time.Hour)})
		if err != nil || !strings.HasPrefix(res.Url, "http://contacts.test/preferences?token=") {
			t.Fatalf("CreatePreferenceLink = %v, %v", res, err)
		}
		if d := time.Until(res.ExpireTime.AsTime()); d < 59*time.Minute || d > time.Hour {
			t.Errorf("the link expires in %s, want 1h", d)
		}
		_, err = c.CreatePreferenceLink(ctx, &heraldv1.CreatePreferenceLinkRequest{UserId: "eve", Ttl: durationpb.New(90 * 24 * time.Hour)})
		wantField(t, err, codes.InvalidArgument, "ttl")
		if _, err := c.CreatePreferenceLink(ctx, &heraldv1.CreatePreferenceLinkRequest{UserId: "nobody"}); status.Code(err) != codes.NotFound {
			t.Fatalf("link for an unknown user: %v", err)
		}
	})
	t.Run("DeleteUser", func(t *testing.T) {
		if _, err := c.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "eve"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: "eve"}); err != nil {
			t.Fatalf("deleting twice: %v", err)
		}
		_, err := c.DeleteUser(ctx, &heraldv1.DeleteUserRequest{})
		wantField(t, err, codes.InvalidArgument, "user_id")
	})
}
