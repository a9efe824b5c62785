package rpc

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// pushBodyOf returns the longest push body that, with title, makes a push payload of at most
// templates.MaxPushPayload bytes.
func pushBodyOf(t *testing.T, title string) string {
	t.Helper()
	lo, hi := 0, templates.MaxPushPayload
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if size, _ := templates.PushPayloadSize(title, sized(mid), nil); size <= templates.MaxPushPayload {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return sized(lo)
}

// TestInlineContentLimits sends inline content at and just over each limit a template's
// rendered parts are held to, on the channels that limit applies to: at the limit Send accepts
// it, over it Send refuses it with INVALID_ARGUMENT naming the content field (or data) and the
// limit, and so do Explain and each recipient of a SendBatch.
func TestInlineContentLimits(t *testing.T) {
	push := []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID}
	sms := []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS}
	email := []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
	everyone := toAddress(&heraldv1.Address{Email: "a@example.com", Phone: "+14155550123",
		IosTokens: knownUser.IOSTokens, AndroidTokens: knownUser.AndroidTokens})
	big, _ := structpb.NewStruct(map[string]any{"blob": sized(templates.MaxPushPayload)})
	pushBody := pushBodyOf(t, "Title")
	tests := []struct {
		name         string
		segments     int // the notifier's SMS segment cap; 0 for the default
		channels     []heraldv1.Channel
		within, over *heraldv1.Content
		data         *structpb.Struct // for over only
		field, want  string           // the violation over the limit: its field and the start of its reason
	}{
		{"push payload", 0, push,
			&heraldv1.Content{Title: "Title", Body: pushBody}, &heraldv1.Content{Title: "Title", Body: pushBody + "a"}, nil,
			"content.body", "makes a push payload of 4097 bytes; APNs and FCM take at most 4096"},
		{"push data", 0, push,
			&heraldv1.Content{Title: "Title", Body: "b"}, &heraldv1.Content{Title: "Title", Body: "b"}, big,
			"data", "makes a push payload of"},
		{"sms segments, GSM-7", 0, sms,
			&heraldv1.Content{Body: sized(1530)}, &heraldv1.Content{Body: sized(1531)}, nil,
			"content.body", "renders to 11 GSM-7 segments"},
		{"sms segments, UCS-2", 0, sms,
			&heraldv1.Content{Body: strings.Repeat("Ж", 670)}, &heraldv1.Content{Body: strings.Repeat("Ж", 671)}, nil,
			"content.body", "renders to 11 UCS-2 segments (a character outside the GSM alphabet"},
		{"sms segments, configured", 2, sms,
			&heraldv1.Content{Body: sized(306)}, &heraldv1.Content{Body: sized(307)}, nil,
			"content.body", "renders to 3 GSM-7 segments; at most 2 are allowed"},
		{"email subject", 0, email,
			&heraldv1.Content{Subject: strings.Repeat("ü", 255), Body: "b"}, &heraldv1.Content{Subject: strings.Repeat("ü", 256), Body: "b"}, nil,
			"content.subject", "renders to 256 characters; at most 255 are allowed"},
		{"email subject from the title", 0, email,
			&heraldv1.Content{Title: sized(255), Body: "b"}, &heraldv1.Content{Title: sized(256), Body: "b"}, nil,
			"content.title", "renders to 256 characters; at most 255 are allowed"},
		{"email subject on one line", 0, email,
			&heraldv1.Content{Subject: "Hello\tthere", Body: "b"}, &heraldv1.Content{Subject: "Hello\r\nBcc: x@example.com", Body: "b"}, nil,
			"content.subject", "must render to a single line without control characters"},
		// Without channels, every channel may be used, so every limit applies, as it does to a
		// template.
		{"every channel when none is requested", 0, nil,
			&heraldv1.Content{Title: "Title", Body: sized(1530)}, &heraldv1.Content{Title: "Title", Body: sized(1531)}, nil,
			"content.body", "renders to 11 GSM-7 segments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := appkey.WithCaller(context.Background(), adminCaller)
			store := newStrictStore()
			srv := newServer(store)
			srv.Templates.Limits.SMSSegments = tt.segments
			send := func(c *heraldv1.Content, data *structpb.Struct) *heraldv1.SendRequest {
				return &heraldv1.SendRequest{Recipient: everyone, Category: "news", Channels: tt.channels,
					Message: &heraldv1.SendRequest_Content{Content: c}, Data: data}
			}

			if res, err := srv.Send(ctx, send(tt.within, nil)); err != nil || len(res.Deliveries) == 0 {
				t.Fatalf("at the limit: %v, %v", res, err)
			}
			check := func(what string, code codes.Code, msg, reason string) {
				t.Helper()
				if code != codes.InvalidArgument || !strings.HasPrefix(reason, tt.want) ||
					!strings.Contains(msg, tt.field+": "+tt.want) {
					t.Errorf("%s over the limit: %s %q (%s: %q); want INVALID_ARGUMENT with %s: %s...",
						what, code, msg, tt.field, reason, tt.field, tt.want)
				}
			}
			_, err := srv.Send(ctx, send(tt.over, tt.data))
			check("Send", errs.Status(err).Code(), errs.Status(err).Message(), violation(err, tt.field))
			_, err = srv.Explain(ctx, &heraldv1.ExplainRequest{Request: send(tt.over, tt.data)})
			check("Explain", errs.Status(err).Code(), errs.Status(err).Message(), violation(err, tt.field))

			batch, err := srv.SendBatch(ctx, &heraldv1.SendBatchRequest{Category: "news", Channels: tt.channels,
				Message: &heraldv1.SendBatchRequest_Content{Content: tt.over}, Data: tt.data,
				Recipients: []*heraldv1.BatchRecipient{{Recipient: everyone}}})
			if err != nil || len(batch.Results) != 1 || batch.Results[0].Error == nil {
				t.Fatalf("SendBatch over the limit = %v, %v; want the recipient refused", batch, err)
			}
			be := batch.Results[0].Error
			reason := ""
			for _, v := range be.Violations {
				if v.Field == tt.field {
					reason = v.Description
				}
			}
			code := codes.Unknown
			if be.Code == "INVALID_ARGUMENT" {
				code = codes.InvalidArgument
			}
			check("SendBatch", code, be.Message, reason)
			noProblems(t, store)
		})
	}
}

// TestInlineContentLimitsFollowTheChannels: a limit applies only when its channel may be used,
// as it does to a template: a body too long for an SMS goes by email, and data too large for a
// push payload goes by SMS.
func TestInlineContentLimitsFollowTheChannels(t *testing.T) {
	ctx := appkey.WithCaller(context.Background(), adminCaller)
	store := newStrictStore()
	srv := newServer(store)
	big, _ := structpb.NewStruct(map[string]any{"blob": sized(templates.MaxPushPayload)})
	for name, req := range map[string]*heraldv1.SendRequest{
		"long body by email": {Recipient: toEmail(), Category: "news", Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL},
			Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "s", Body: sized(20_000)}}},
		"long title for push": {Recipient: toAddress(&heraldv1.Address{IosTokens: knownUser.IOSTokens}), Category: "news",
			Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS},
			Message:  &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Title: sized(1000), Body: "b"}}},
		"large data by sms": {Recipient: toAddress(&heraldv1.Address{Phone: "+14155550123"}), Category: "news",
			Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS}, Data: big,
			Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Body: "b"}}},
	} {
		if _, err := srv.Send(ctx, req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	noProblems(t, store)
}
