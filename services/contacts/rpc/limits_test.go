package rpc

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/contacts/contactstest"
)

// violation returns the description of err's field violation of field, or "" when there is none.
func violation(err error, field string) string {
	for _, d := range errs.Status(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return v.GetDescription()
				}
			}
		}
	}
	return ""
}

func sized(n int) string { return strings.Repeat("a", n) }

// email returns a valid address of n bytes (n >= 70).
func email(n int) string {
	local := sized(64)
	domain := sized(n - 64 - 1 - 4) // "@" and ".com"
	var labels []string
	for len(domain) > 63 {
		labels, domain = append(labels, domain[:62]), domain[63:] // a dot replaces one byte
	}
	return local + "@" + strings.Join(append(labels, domain), ".") + ".com"
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

var allChannels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID,
	heraldv1.Channel_CHANNEL_SMS, heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_INBOX}

func channels(n int) []heraldv1.Channel {
	out := make([]heraldv1.Channel, n)
	for i := range out {
		out[i] = allChannels[i%len(allChannels)]
	}
	return out
}

func user(u *heraldv1.User) *heraldv1.UpsertUserRequest {
	if u.UserId == "" {
		u.UserId = "u2"
	}
	return &heraldv1.UpsertUserRequest{User: u}
}

// TestLimits sends each size-limited field of ContactsService at its limit, which it must accept
// (or refuse for another reason), and just over it, which it must refuse with INVALID_ARGUMENT
// naming the field and the limit.
func TestLimits(t *testing.T) {
	u1 := contactstest.User.ID
	tests := []struct {
		name  string
		field string
		limit int
		want  string // the violation's description just over the limit
		call  func(ctx context.Context, s *Server, n int) error
	}{
		{"upsert user id", "user.user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpsertUser(ctx, user(&heraldv1.User{UserId: sized(n)}))
				return err
			}},
		{"upsert email", "user.email", 254, "is longer than 254 characters",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpsertUser(ctx, user(&heraldv1.User{Email: email(n)}))
				return err
			}},
		{"upsert phone", "user.phone", 32, "is longer than 32 characters",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpsertUser(ctx, user(&heraldv1.User{Phone: "+1 415 555 0123" + strings.Repeat(" ", n-16) + "4"}))
				return err
			}},
		{"upsert locale", "user.locale", 35, "at most 35 bytes, got 36",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpsertUser(ctx, user(&heraldv1.User{Locale: "en-" + strings.Repeat("x-abcdefg", 4)[:n-3]}))
				return err
			}},
		{"upsert timezone", "user.timezone", 64, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpsertUser(ctx, user(&heraldv1.User{Timezone: "Europe/" + sized(n-7)}))
				return err
			}},
		{"get user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.GetUser(ctx, &heraldv1.GetUserRequest{UserId: sized(n)})
				return err
			}},
		{"delete user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: sized(n)})
				return err
			}},
		{"batch get user ids", "user_ids", 1000, "at most 1000, got 1001",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: repeat(u1, n)})
				return err
			}},
		{"batch get user id", "user_ids[0]", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: []string{sized(n)}})
				return err
			}},
		{"register device user id", "device.user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: sized(n),
					Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken}})
				return err
			}},
		{"register device app", "device.app", 256, "at most 256 bytes, got 257",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: u1,
					Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken, App: sized(n)}})
				return err
			}},
		{"register device android token", "device.token", 4096, "is longer than 4096 bytes",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: u1,
					Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: sized(n)}})
				return err
			}},
		{"unregister device token", "token", 4096, "is longer than 4096 bytes",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UnregisterDevice(ctx, &heraldv1.UnregisterDeviceRequest{Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: sized(n)})
				return err
			}},
		{"list devices user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: sized(n)})
				return err
			}},
		{"get settings user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.GetSettings(ctx, &heraldv1.GetSettingsRequest{UserId: sized(n)})
				return err
			}},
		{"update settings user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: sized(n), Settings: &heraldv1.Settings{}})
				return err
			}},
		{"settings channels", "settings.opted_out_channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1,
					Settings: &heraldv1.Settings{OptedOutChannels: channels(n)}})
				return err
			}},
		{"settings categories", "settings.categories", preference.MaxCategories, "at most 256, got 257",
			func(ctx context.Context, s *Server, n int) error {
				var cs []*heraldv1.CategorySetting
				for i := range n {
					cs = append(cs, &heraldv1.CategorySetting{Category: fmt.Sprintf("c%d", i)})
				}
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{Categories: cs}})
				return err
			}},
		{"settings category name", "settings.categories[0].category", preference.MaxCategoryName, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{
					Categories: []*heraldv1.CategorySetting{{Category: sized(n)}}}})
				return err
			}},
		{"settings category channels", "settings.categories[0].opted_out_channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{
					Categories: []*heraldv1.CategorySetting{{Category: "marketing", OptedOutChannels: channels(n)}}}})
				return err
			}},
		{"settings quiet hours start", "settings.quiet_hours.start", 5, "at most 5 bytes, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{
					QuietHours: &heraldv1.QuietHours{Start: "22:00" + sized(n-5), End: "07:00"}}})
				return err
			}},
		{"settings quiet hours end", "settings.quiet_hours.end", 5, "at most 5 bytes, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: u1, Settings: &heraldv1.Settings{
					QuietHours: &heraldv1.QuietHours{Start: "22:00", End: "07:00" + sized(n-5)}}})
				return err
			}},
		{"resolve users and targets", "targets", 1000, "at most 1000 together with user_ids, got 1001",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.ResolveRecipients(ctx, &heraldv1.ResolveRecipientsRequest{UserIds: []string{u1},
					Targets: repeat(&heraldv1.Target{Channel: heraldv1.Channel_CHANNEL_EMAIL, Address: "a@example.com"}, n-1)})
				return err
			}},
		{"resolve target address", "targets[0].address", 4096, "at most 4096 bytes, got 4097",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.ResolveRecipients(ctx, &heraldv1.ResolveRecipientsRequest{
					Targets: []*heraldv1.Target{{Channel: heraldv1.Channel_CHANNEL_ANDROID, Address: sized(n)}}})
				return err
			}},
		{"preference link user id", "user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreatePreferenceLink(ctx, &heraldv1.CreatePreferenceLinkRequest{UserId: sized(n)})
				return err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := contactstest.New()
			err := tt.call(asWriter(), newServer(store), tt.limit)
			if d := violation(err, tt.field); d == tt.want || strings.HasPrefix(d, "at most") {
				t.Errorf("at the limit (%d): %s: %s", tt.limit, tt.field, d)
			}
			err = tt.call(asWriter(), newServer(store), tt.limit+1)
			st := errs.Status(err)
			if st.Code() != codes.InvalidArgument || violation(err, tt.field) != tt.want ||
				!strings.Contains(st.Message(), tt.field+": "+tt.want) {
				t.Errorf("over the limit (%d): %s %q; want INVALID_ARGUMENT with %s: %s", tt.limit+1, st.Code(), st.Message(), tt.field, tt.want)
			}
			if p := store.Problems(); len(p) > 0 {
				t.Errorf("reached the store: %q", p)
			}
		})
	}
}

// TestRefusesTextPostgresCannotStore sends a NUL in each free-text field that once reached
// PostgreSQL, which refused it: the caller got INTERNAL for a mistake of its own.
func TestRefusesTextPostgresCannotStore(t *testing.T) {
	tests := []struct {
		name  string
		field string
		call  func(ctx context.Context, s *Server) error
	}{
		{"upsert user id", "user.user_id", func(ctx context.Context, s *Server) error {
			_, err := s.UpsertUser(ctx, user(&heraldv1.User{UserId: "u\x00"}))
			return err
		}},
		{"get user id", "user_id", func(ctx context.Context, s *Server) error {
			_, err := s.GetUser(ctx, &heraldv1.GetUserRequest{UserId: "\x00"})
			return err
		}},
		{"batch get user id", "user_ids[1]", func(ctx context.Context, s *Server) error {
			_, err := s.BatchGetUsers(ctx, &heraldv1.BatchGetUsersRequest{UserIds: []string{"u1", "u\x00"}})
			return err
		}},
		{"device app", "device.app", func(ctx context.Context, s *Server) error {
			_, err := s.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{UserId: "u1",
				Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken, App: "com.example\x00"}})
			return err
		}},
		{"target address", "targets[0].address", func(ctx context.Context, s *Server) error {
			_, err := s.ResolveRecipients(ctx, &heraldv1.ResolveRecipientsRequest{
				Targets: []*heraldv1.Target{{Channel: heraldv1.Channel_CHANNEL_EMAIL, Address: "a\x00@example.com"}}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := contactstest.New()
			err := tt.call(asWriter(), newServer(store))
			if st := errs.Status(err); st.Code() != codes.InvalidArgument || violation(err, tt.field) == "" {
				t.Errorf("%s %q; want INVALID_ARGUMENT naming %s", st.Code(), st.Message(), tt.field)
			}
			if p := store.Problems(); len(p) > 0 {
				t.Errorf("reached the store: %q", p)
			}
		})
	}
}
