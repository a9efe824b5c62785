package rpc

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
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

// sized returns n bytes of text that is valid in most fields: lower-case letters.
func sized(n int) string { return strings.Repeat("a", n) }

func content() *heraldv1.SendRequest_Content {
	return &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: "T", Body: "B", Subject: "S"}}
}

func toAddress(a *heraldv1.Address) *heraldv1.Recipient {
	return &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: a}}
}

func toEmail() *heraldv1.Recipient { return toAddress(&heraldv1.Address{Email: "a@example.com"}) }

// dataOf returns template data that encodes to exactly n bytes (n >= 16).
func dataOf(n int) *structpb.Struct {
	l := n - 16
	for range 64 {
		s, _ := structpb.NewStruct(map[string]any{"k": sized(l)})
		switch size := proto.Size(s); {
		case size == n:
			return s
		case size > n:
			l--
		default:
			l++
		}
	}
	panic(fmt.Sprintf("no data encodes to %d bytes", n))
}

func durationOf(secs int64) *durationpb.Duration { return &durationpb.Duration{Seconds: secs} }

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = uuid.NewSHA1(uuid.Nil, fmt.Append(nil, i)).String()
	}
	return out
}

var allChannels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID,
	heraldv1.Channel_CHANNEL_SMS, heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_INBOX}

// channels returns n channels: every channel once, then repeats.
func channels(n int) []heraldv1.Channel {
	out := make([]heraldv1.Channel, n)
	for i := range out {
		out[i] = allChannels[i%len(allChannels)]
	}
	return out
}

// TestLimits sends each size-limited field of the notifier's API at its limit, which it must
// accept (or refuse for another reason), and just over it, which it must refuse with
// INVALID_ARGUMENT naming the field and the limit.
func TestLimits(t *testing.T) {
	tests := []struct {
		name  string
		field string
		limit int
		want  string // the violation's description just over the limit
		call  func(ctx context.Context, s *Server, n int) error
	}{
		{"send idempotency key", "idempotency_key", 256, "at most 256 bytes, got 257",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{IdempotencyKey: sized(n), Recipient: toEmail(), Category: "news", Message: content()})
				return err
			}},
		{"send user id", "recipient.user_id", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: sized(n)}},
					Category: "news", Message: content()})
				return err
			}},
		{"send ios tokens", "recipient.address.ios_tokens", 100, "at most 100, got 101",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toAddress(&heraldv1.Address{IosTokens: repeat(knownUser.IOSTokens[0], n)}),
					Category: "news", Message: content()})
				return err
			}},
		{"send android tokens", "recipient.address.android_tokens", 100, "at most 100, got 101",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toAddress(&heraldv1.Address{AndroidTokens: repeat("fcm:t", n)}),
					Category: "news", Message: content()})
				return err
			}},
		{"send channels", "channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news", Channels: channels(n), Message: content()})
				return err
			}},
		{"send template name", "template.name", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: sized(n)}}})
				return err
			}},
		{"send template locale", "template.locale", 35, "at most 35 bytes, got 36",
			func(ctx context.Context, s *Server, n int) error {
				loc := "en-" + sized(n-3)
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "welcome", Locale: &loc}}})
				return err
			}},
		{"send content title", "content.title", 1024, "at most 1024 bytes, got 1025",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: sized(n), Body: "b"}}})
				return err
			}},
		{"send content subject", "content.subject", 1024, "at most 1024 bytes, got 1025",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: sized(n), Body: "b"}}})
				return err
			}},
		{"send content body", "content.body", 64 << 10, "at most 65536 bytes, got 65537",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "s", Body: sized(n)}}})
				return err
			}},
		{"send content html", "content.html", 256 << 10, "at most 262144 bytes, got 262145",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "s", Html: sized(n)}}})
				return err
			}},
		{"send data", "data", maxData, "at most 65536 bytes encoded, got 65537",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Send(ctx, &heraldv1.SendRequest{Recipient: toEmail(), Category: "news", Message: content(), Data: dataOf(n)})
				return err
			}},
		{"explain data", "data", maxData, "at most 65536 bytes encoded, got 65537",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.Explain(ctx, &heraldv1.ExplainRequest{Request: &heraldv1.SendRequest{Recipient: toEmail(), Category: "news",
					Message: content(), Data: dataOf(n)}})
				return err
			}},
		{"batch recipients", "recipients", notifier.MaxBatch, "at most 1000, got 1001",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.SendBatch(ctx, &heraldv1.SendBatchRequest{Category: "news",
					Message:    &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Body: "b"}},
					Recipients: repeat(&heraldv1.BatchRecipient{Recipient: toEmail()}, n)})
				return err
			}},
		{"batch shared data", "data", maxData, "at most 65536 bytes encoded, got 65537",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.SendBatch(ctx, &heraldv1.SendBatchRequest{Category: "news", Data: dataOf(n),
					Message:    &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Body: "b"}},
					Recipients: []*heraldv1.BatchRecipient{{Recipient: toEmail()}}})
				return err
			}},
		{"batch channels", "channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.SendBatch(ctx, &heraldv1.SendBatchRequest{Category: "news", Channels: channels(n),
					Message:    &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Body: "b"}},
					Recipients: []*heraldv1.BatchRecipient{{Recipient: toEmail()}}})
				return err
			}},
		{"create template name", "template.name", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{Name: sized(n),
					Parts: &heraldv1.TemplateParts{SmsBody: "hi"}}})
				return err
			}},
		{"create template description", "template.description", 1024, "at most 1024 bytes, got 1025",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{Name: "t", Description: sized(n),
					Parts: &heraldv1.TemplateParts{SmsBody: "hi"}}})
				return err
			}},
		{"create template locales", "template.locales", notifier.MaxTranslations, "at most 64, got 65",
			func(ctx context.Context, s *Server, n int) error {
				var locs []*heraldv1.LocalizedParts
				for i := range n {
					locs = append(locs, &heraldv1.LocalizedParts{Locale: fmt.Sprintf("en-%03d", i), Parts: &heraldv1.TemplateParts{SmsBody: "hi"}})
				}
				_, err := s.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{Name: "t",
					Parts: &heraldv1.TemplateParts{SmsBody: "hi"}, Locales: locs}})
				return err
			}},
		{"get template name", "name", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.GetTemplate(ctx, &heraldv1.GetTemplateRequest{Name: sized(n)})
				return err
			}},
		{"render template name", "name", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RenderTemplate(ctx, &heraldv1.RenderTemplateRequest{Name: sized(n)})
				return err
			}},
		{"render template locale", "locale", 35, "at most 35 bytes, got 36",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RenderTemplate(ctx, &heraldv1.RenderTemplateRequest{Name: "welcome", Locale: "en-" + sized(n-3)})
				return err
			}},
		{"render template data", "data", maxData, "at most 65536 bytes encoded, got 65537",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RenderTemplate(ctx, &heraldv1.RenderTemplateRequest{Name: "welcome", Data: dataOf(n)})
				return err
			}},
		{"create app name", "name", 64, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: sized(n)})
				return err
			}},
		{"create app categories", "allowed_categories", preference.MaxCategories, "at most 256, got 257",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "x", AllowedCategories: repeat("news", n)})
				return err
			}},
		{"create app channels", "allowed_channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "x", AllowedChannels: channels(n)})
				return err
			}},
		{"update app categories", "allowed_categories", preference.MaxCategories, "at most 256, got 257",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: knownApp.String(), AllowedCategories: repeat("news", n)}})
				return err
			}},
		{"update app channels", "allowed_channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: knownApp.String(), AllowedChannels: channels(n)}})
				return err
			}},
		{"revoke key id", "key_id", 64, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: sized(n)})
				return err
			}},
		{"category name", "category.name", preference.MaxCategoryName, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: sized(n)}})
				return err
			}},
		{"category description", "category.description", 1024, "at most 1024 bytes, got 1025",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: "c", Description: sized(n)}})
				return err
			}},
		{"category channels", "category.allowed_channels", 5, "at most 5, got 6",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: "c", AllowedChannels: channels(n)}})
				return err
			}},
		{"category caps", "category.caps", preference.MaxCaps, "at most 8, got 9",
			func(ctx context.Context, s *Server, n int) error {
				caps := repeat(&heraldv1.FrequencyCap{Limit: 1, Window: durationOf(60)}, n)
				_, err := s.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: "c", Caps: caps}})
				return err
			}},
		{"list dead letters reason", "reason", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{Reason: sized(n)})
				return err
			}},
		{"list dead letters page token", "page_token", 64, "at most 64 bytes, got 65",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{PageToken: sized(n)})
				return err
			}},
		{"redrive reason", "reason", 128, "at most 128 bytes, got 129",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{Reason: sized(n)})
				return err
			}},
		{"redrive ids", "delivery_ids", notifier.MaxRedrive, "at most 10000, got 10001",
			func(ctx context.Context, s *Server, n int) error {
				_, err := s.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{DeliveryIds: ids(n)})
				return err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := appkey.WithCaller(context.Background(), adminCaller)
			store := newStrictStore()
			err := tt.call(ctx, newServer(store), tt.limit)
			// At the limit a field may still be wrong in another way (the data may be too large
			// for a push payload), but not for its size.
			if d := violation(err, tt.field); strings.HasPrefix(d, "at most") {
				t.Errorf("at the limit (%d): %s: %s", tt.limit, tt.field, d)
			}
			err = tt.call(ctx, newServer(store), tt.limit+1)
			st := errs.Status(err)
			if st.Code() != codes.InvalidArgument || violation(err, tt.field) != tt.want ||
				!strings.Contains(st.Message(), tt.field+": "+tt.want) {
				t.Errorf("over the limit (%d): %s %q; want INVALID_ARGUMENT with %s: %s", tt.limit+1, st.Code(), st.Message(), tt.field, tt.want)
			}
			noProblems(t, store)
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
		{"category description", "category.description", func(ctx context.Context, s *Server) error {
			_, err := s.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: "c", Description: "a\x00b"}})
			return err
		}},
		{"list dead letters reason", "reason", func(ctx context.Context, s *Server) error {
			_, err := s.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{Reason: "x\x00"})
			return err
		}},
		{"redrive reason", "reason", func(ctx context.Context, s *Server) error {
			_, err := s.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{Reason: "x\x00"})
			return err
		}},
		{"revoke key id", "key_id", func(ctx context.Context, s *Server) error {
			_, err := s.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: "abc\x00"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStrictStore()
			err := tt.call(appkey.WithCaller(context.Background(), adminCaller), newServer(store))
			if st := errs.Status(err); st.Code() != codes.InvalidArgument || violation(err, tt.field) == "" {
				t.Errorf("%s %q; want INVALID_ARGUMENT naming %s", st.Code(), st.Message(), tt.field)
			}
			noProblems(t, store)
		})
	}
}

// TestSendBatchEmptySharedData is a batch with data: {} and a recipient with data of its own,
// which once panicked merging them (a nil map) and answered INTERNAL.
func TestSendBatchEmptySharedData(t *testing.T) {
	own, _ := structpb.NewStruct(map[string]any{"name": "Ann"})
	store := newStrictStore()
	res, err := newServer(store).SendBatch(appkey.WithCaller(context.Background(), billingCaller), &heraldv1.SendBatchRequest{
		Category: "news", Data: &structpb.Struct{},
		Message:    &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Body: "b"}},
		Recipients: []*heraldv1.BatchRecipient{{Recipient: toEmail(), Data: own}},
	})
	if err != nil || len(res.Results) != 1 || res.Results[0].Response == nil {
		t.Fatalf("SendBatch = %v, %v", res, err)
	}
	noProblems(t, store)
}
