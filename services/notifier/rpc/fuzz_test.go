package rpc

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/protofuzz"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// The fuzz targets here feed the API arbitrary requests, decoded from bytes as gRPC decodes
// them, through the real handlers and the real notifier parts on a strictStore. Whatever the
// request, the handler must not panic, must answer nil or one of the codes the API documents for
// the caller's mistakes (never INTERNAL), must name the fields at fault in an INVALID_ARGUMENT,
// and must not let anything reach the store that PostgreSQL would refuse or a limit forbids
// (see protofuzz.Answer and strictStore).

var billingCaller = appkey.Caller{AppID: uuid.MustParse("0190b6f4-0000-7000-8000-0000000000b1"), AppName: "billing"}

// input is what the fuzzer gives a target: a request's wire bytes, and text to plant in one of
// its string fields (see protofuzz.Request).
type input struct {
	raw   []byte
	field uint8
	text  string
}

// decode makes m the request, and reports whether gRPC would pass it to a handler.
func (in input) decode(m proto.Message) bool {
	return protofuzz.Request(m, in.raw, int(in.field), in.text)
}

func noProblems(t *testing.T, store *strictStore) {
	t.Helper()
	if p := store.Problems(); len(p) > 0 {
		t.Fatalf("reached the store: %q", p)
	}
}

func marshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func sendSeeds() []*heraldv1.SendRequest {
	data, _ := structpb.NewStruct(map[string]any{"name": "Ann", "app": "Herald", "items": []any{"a", 1.5, true}})
	v1, pt := int32(1), "pt-br"
	return []*heraldv1.SendRequest{
		{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "Ann@Example.COM"}}},
			Category: "news", Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: "T", Body: "B", Subject: "S"}}},
		{IdempotencyKey: "k-1", Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "u1"}}, Category: "news",
			Message: &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "welcome", Version: &v1, Locale: &pt}},
			Data:    data, Priority: heraldv1.Priority_PRIORITY_HIGH, Ttl: durationpb.New(3600e9)},
		{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{
			Phone: "+1 (415) 555-0123", IosTokens: []string{strings.Repeat("AB", 32)}, AndroidTokens: []string{"fcm:tok"}}}},
			Category: "account.security", Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS, heraldv1.Channel_CHANNEL_IOS},
			Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Body: "code 1234"}},
			SendAt:  timestamppb.New(timestamppb.Now().AsTime().Add(3600e9))},
		{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "u1"}}, Category: "marketing",
			Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_EMAIL, 9},
			Message:  &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "nope\x00"}}},
		{Category: "News", Data: &structpb.Struct{}, Ttl: &durationpb.Duration{Seconds: -1}, SendAt: &timestamppb.Timestamp{Nanos: -1}},
		{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "d@example.com"}}},
			Category: "news", Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: "T", Body: "B"}},
			Digest: &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(600e9)}, Template: "digest"}},
		{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "u1"}}, Category: "news",
			Message:  &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Body: "B"}},
			Digest:   &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "24:61"}},
			Fallback: &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}}},
	}
}

func FuzzSend(f *testing.F) {
	for _, r := range sendSeeds() {
		f.Add(marshal(r), uint8(255), "")
	}
	f.Fuzz(func(t *testing.T, raw []byte, field uint8, text string) {
		in := input{raw, field, text}
		var req heraldv1.SendRequest
		if !in.decode(&req) {
			return
		}
		store := newStrictStore()
		srv := newServer(store)
		ctx := appkey.WithCaller(context.Background(), billingCaller)
		res, err := srv.Send(ctx, &req)
		code := protofuzz.Answer(t, "Send", err)
		noProblems(t, store)
		// Explain decides as Send does: it refuses what Send refuses as invalid, and accepts what
		// Send accepted, with the same deliveries. (Of a user, it needs contacts read access.)
		reader := billingCaller
		reader.Contacts = appkey.ContactsRead
		ex, err := srv.Explain(appkey.WithCaller(context.Background(), reader), &heraldv1.ExplainRequest{Request: &req})
		excode := protofuzz.Answer(t, "Explain", err)
		if (code == codes.InvalidArgument) != (excode == codes.InvalidArgument) {
			t.Fatalf("Send answered %s, Explain %s", code, excode)
		}
		if code != codes.OK {
			return
		}
		if excode != codes.OK || len(ex.Deliveries) != len(res.Deliveries) {
			t.Fatalf("Send made %d deliveries, Explain %d (%s)", len(res.Deliveries), len(ex.GetDeliveries()), excode)
		}
		for _, d := range res.Deliveries {
			if _, err := uuid.Parse(d.DeliveryId); err != nil || d.State == heraldv1.DeliveryState_DELIVERY_STATE_UNSPECIFIED {
				t.Fatalf("delivery %v", d)
			}
		}
	})
}

func FuzzSendBatch(f *testing.F) {
	for _, r := range sendSeeds() {
		b := &heraldv1.SendBatchRequest{Category: r.Category, Channels: r.Channels, Data: r.Data, Priority: r.Priority,
			SendAt: r.SendAt, Ttl: r.Ttl, Recipients: []*heraldv1.BatchRecipient{{Recipient: r.Recipient, IdempotencyKey: "k"}}}
		switch m := r.Message.(type) {
		case *heraldv1.SendRequest_Template:
			b.Message = &heraldv1.SendBatchRequest_Template{Template: m.Template}
		case *heraldv1.SendRequest_Content:
			b.Message = &heraldv1.SendBatchRequest_Content{Content: m.Content}
		}
		f.Add(marshal(b), uint8(255), "")
		own, _ := structpb.NewStruct(map[string]any{"name": "Bo"})
		b.Data = &structpb.Struct{} // data: {} with each recipient's own data merged over it
		b.Recipients = append(b.Recipients, &heraldv1.BatchRecipient{Recipient: sendSeeds()[1].Recipient, Data: own},
			&heraldv1.BatchRecipient{})
		f.Add(marshal(b), uint8(255), "")
	}
	f.Fuzz(func(t *testing.T, raw []byte, field uint8, text string) {
		in := input{raw, field, text}
		var req heraldv1.SendBatchRequest
		if !in.decode(&req) {
			return
		}
		store := newStrictStore()
		srv := newServer(store)
		ctx := appkey.WithCaller(context.Background(), billingCaller)
		res, err := srv.SendBatch(ctx, &req)
		code := protofuzz.Answer(t, "SendBatch", err)
		noProblems(t, store)
		if code != codes.OK {
			return
		}
		if len(res.Results) != len(req.Recipients) {
			t.Fatalf("%d results for %d recipients", len(res.Results), len(req.Recipients))
		}
		for i, r := range res.Results {
			if (r.Response == nil) == (r.Error == nil) {
				t.Fatalf("result %d: %v", i, r)
			}
			if e := r.Error; e != nil {
				switch e.Code {
				case "INVALID_ARGUMENT":
					if len(e.Violations) == 0 {
						t.Fatalf("result %d: INVALID_ARGUMENT without violations", i)
					}
				case "NOT_FOUND", "PERMISSION_DENIED", "ALREADY_EXISTS", "FAILED_PRECONDITION":
				default:
					t.Fatalf("result %d: %v", i, e)
				}
			}
		}
	})
}

// templateOps are the TemplateService calls FuzzTemplates makes, by the fuzzer's op byte.
var templateOps = []func(t *testing.T, srv *Server, in input){
	func(t *testing.T, srv *Server, in input) {
		var req heraldv1.CreateTemplateRequest
		if !in.decode(&req) {
			return
		}
		ctx := appkey.WithCaller(context.Background(), billingCaller)
		res, err := srv.CreateTemplate(ctx, &req)
		if protofuzz.Answer(t, "CreateTemplate", err) != codes.OK {
			return
		}
		// What was stored is found again, and is a fixed point: creating it again stores the
		// same parts and locales.
		v := res.Template.Version
		got, err := srv.GetTemplate(ctx, &heraldv1.GetTemplateRequest{Name: res.Template.Name, Version: &v})
		if err != nil || !proto.Equal(got.Template, res.Template) {
			t.Fatalf("GetTemplate = %v, %v; want %v", got, err, res.Template)
		}
		again, err := srv.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: res.Template})
		if err != nil {
			t.Fatalf("the stored template is refused: %v", err)
		}
		again.Template.Version, again.Template.CreateTime = res.Template.Version, res.Template.CreateTime
		if !proto.Equal(again.Template, res.Template) {
			t.Fatalf("created again as %v, first as %v", again.Template, res.Template)
		}
	},
	func(t *testing.T, srv *Server, in input) {
		var req heraldv1.GetTemplateRequest
		if in.decode(&req) {
			_, err := srv.GetTemplate(context.Background(), &req)
			protofuzz.Answer(t, "GetTemplate", err)
		}
	},
	func(t *testing.T, srv *Server, in input) {
		var req heraldv1.RenderTemplateRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.RenderTemplate(context.Background(), &req)
		if protofuzz.Answer(t, "RenderTemplate", err) != codes.OK {
			return
		}
		c := res.Content
		for _, s := range []string{c.PushTitle, c.PushBody, c.SmsBody, c.EmailSubject, c.EmailHtml, c.EmailText} {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("rendered a NUL: %q", s)
			}
		}
	},
}

func FuzzTemplates(f *testing.F) {
	data, _ := structpb.NewStruct(map[string]any{"name": "Ann", "app": "Herald"})
	v1 := int32(1)
	for op, r := range []proto.Message{
		&heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{Name: "order.shipped", Description: "Shipped",
			Parts: &heraldv1.TemplateParts{PushTitle: "Shipped", PushBody: "{{.item}} is on its way", EmailSubject: "Shipped: {{.item}}",
				EmailHtml: "<p>{{.item}}</p>"},
			Locales: []*heraldv1.LocalizedParts{{Locale: "pt-br", Parts: &heraldv1.TemplateParts{PushTitle: "Enviado",
				PushBody: "{{.item}} foi enviado", EmailSubject: "Enviado: {{.item}}", EmailHtml: "<p>{{.item}}</p>"}}}}},
		&heraldv1.GetTemplateRequest{Name: "welcome", Version: &v1},
		&heraldv1.RenderTemplateRequest{Name: "welcome", Locale: "pt-BR", Data: data},
	} {
		f.Add(uint8(op), marshal(r), uint8(255), "")
	}
	f.Add(uint8(0), marshal(&heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{Name: "welcome",
		Parts: &heraldv1.TemplateParts{SmsBody: "{{.x"}, Locales: []*heraldv1.LocalizedParts{{Locale: "x-private"}, {Locale: "PT_br"}}}}),
		uint8(1), "a\x00b")
	f.Add(uint8(2), marshal(&heraldv1.RenderTemplateRequest{Name: "welcome", Locale: "zz"}), uint8(1), "zz-\x00")
	f.Fuzz(func(t *testing.T, op uint8, raw []byte, field uint8, text string) {
		store := newStrictStore()
		templateOps[int(op)%len(templateOps)](t, newServer(store), input{raw, field, text})
		noProblems(t, store)
	})
}

// adminOps are the AdminService and NotificationService calls FuzzAdmin makes, by the fuzzer's
// op byte. Each decodes its request, calls the handler as an admin app and checks the answer.
var adminOps = []func(ctx context.Context, t *testing.T, srv *Server, in input){
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.CreateAppRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.CreateApp(ctx, &req)
		if protofuzz.Answer(t, "CreateApp", err) != codes.OK {
			return
		}
		// The app as stored is a valid update of itself.
		if _, err := srv.UpdateApp(ctx, &heraldv1.UpdateAppRequest{App: res.App}); err != nil {
			t.Fatalf("UpdateApp(%v) = %v", res.App, err)
		}
		if _, err := appkey.Parse(res.Key); err != nil || !strings.Contains(res.Key, res.KeyId) {
			t.Fatalf("issued key %q (id %q): %v", res.Key, res.KeyId, err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.UpdateAppRequest
		if in.decode(&req) {
			_, err := srv.UpdateApp(ctx, &req)
			protofuzz.Answer(t, "UpdateApp", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.IssueKeyRequest
		if in.decode(&req) {
			_, err := srv.IssueKey(ctx, &req)
			protofuzz.Answer(t, "IssueKey", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.RevokeKeyRequest
		if in.decode(&req) {
			_, err := srv.RevokeKey(ctx, &req)
			protofuzz.Answer(t, "RevokeKey", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ListKeysRequest
		if in.decode(&req) {
			_, err := srv.ListKeys(ctx, &req)
			protofuzz.Answer(t, "ListKeys", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.PutCategoryRequest
		if !in.decode(&req) {
			return
		}
		res, err := srv.PutCategory(ctx, &req)
		if protofuzz.Answer(t, "PutCategory", err) != codes.OK {
			return
		}
		// The category as stored is listed, and putting it again changes nothing.
		again, err := srv.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: res.Category})
		if err != nil || !proto.Equal(again.Category, res.Category) {
			t.Fatalf("PutCategory(%v) again = %v, %v", res.Category, again, err)
		}
		list, err := srv.ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
		found := false
		for _, c := range list.GetCategories() {
			found = found || proto.Equal(c, res.Category)
		}
		if err != nil || !found {
			t.Fatalf("ListCategories = %v, %v; want %v in it", list, err, res.Category)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.ListDeadLettersRequest
		if in.decode(&req) {
			_, err := srv.ListDeadLetters(ctx, &req)
			protofuzz.Answer(t, "ListDeadLetters", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.RedriveDeadLettersRequest
		if in.decode(&req) {
			_, err := srv.RedriveDeadLetters(ctx, &req)
			protofuzz.Answer(t, "RedriveDeadLetters", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.GetNotificationRequest
		if in.decode(&req) {
			_, err := srv.GetNotification(ctx, &req)
			protofuzz.Answer(t, "GetNotification", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.CancelNotificationRequest
		if in.decode(&req) {
			_, err := srv.CancelNotification(ctx, &req)
			protofuzz.Answer(t, "CancelNotification", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.TrackEventRequest
		if in.decode(&req) {
			_, err := srv.TrackEvent(ctx, &req)
			protofuzz.Answer(t, "TrackEvent", err)
		}
	},
	func(ctx context.Context, t *testing.T, srv *Server, in input) {
		var req heraldv1.GetDeliveryStatsRequest
		if in.decode(&req) {
			_, err := srv.GetDeliveryStats(ctx, &req)
			protofuzz.Answer(t, "GetDeliveryStats", err)
		}
	},
}

func FuzzAdmin(f *testing.F) {
	for op, r := range []proto.Message{
		&heraldv1.CreateAppRequest{Name: "billing-2", AllowedCategories: []string{"news", "news", "orders"},
			AllowedChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}, RequestsPerSecond: 10, Burst: 20},
		&heraldv1.UpdateAppRequest{App: &heraldv1.App{AppId: knownApp.String(), AllowedChannels: []heraldv1.Channel{9}}},
		&heraldv1.IssueKeyRequest{AppId: knownApp.String()},
		&heraldv1.RevokeKeyRequest{KeyId: "abcdefghijklmnop"},
		&heraldv1.ListKeysRequest{AppId: knownApp.String()},
		&heraldv1.PutCategoryRequest{Category: &heraldv1.Category{Name: "orders", Description: "Order updates", DefaultOptIn: true,
			AllowedChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS},
			Caps:            []*heraldv1.FrequencyCap{{Limit: 3, Window: durationpb.New(86400e9), Channel: heraldv1.Channel_CHANNEL_SMS}},
			Digest:          &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:00"}, Template: "orders-digest"}}},
		&heraldv1.ListDeadLettersRequest{Channel: heraldv1.Channel_CHANNEL_EMAIL, Reason: "provider_unavailable", PageSize: 10,
			PageToken: "AZC29AAAcACAAAAAAAAA0Q"},
		&heraldv1.RedriveDeadLettersRequest{DeliveryIds: []string{knownDelivery.String(), "nope"}, Reason: "x\x00"},
		&heraldv1.GetNotificationRequest{NotificationId: knownDelivery.String()},
		&heraldv1.CancelNotificationRequest{NotificationId: "{" + knownDelivery.String() + "}"},
		&heraldv1.TrackEventRequest{DeliveryId: knownDelivery.String(), Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_OPENED},
		&heraldv1.GetDeliveryStatsRequest{Period: durationpb.New(3600e9)},
	} {
		f.Add(uint8(op), marshal(r), uint8(255), "")
	}
	f.Fuzz(func(t *testing.T, op uint8, raw []byte, field uint8, text string) {
		store := newStrictStore()
		ctx := appkey.WithCaller(context.Background(), adminCaller)
		adminOps[int(op)%len(adminOps)](ctx, t, newServer(store), input{raw, field, text})
		noProblems(t, store)
	})
}
