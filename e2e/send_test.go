package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/appkey"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

func emailRequest(to string) *heraldv1.SendRequest {
	return &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: to}}},
		Category:  "account",
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Subject: "Your receipt", Body: "Thanks for your order.", Html: "<p>Thanks for your order.</p>",
		}},
	}
}

// waitState waits until every delivery of the notification is in a final state and returns
// the notification.
func waitFinal(t *testing.T, s *stack, id string) *heraldv1.Notification {
	t.Helper()
	var n *heraldv1.Notification
	waitFor(t, "deliveries of "+id+" to be final", 30*time.Second, func() (bool, error) {
		res, err := s.notify.GetNotification(context.Background(), &heraldv1.GetNotificationRequest{NotificationId: id})
		if err != nil {
			return false, err
		}
		n = res.Notification
		for _, d := range n.Deliveries {
			switch d.State {
			case heraldv1.DeliveryState_DELIVERY_STATE_QUEUED, heraldv1.DeliveryState_DELIVERY_STATE_SENDING,
				heraldv1.DeliveryState_DELIVERY_STATE_RETRYING, heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED,
				heraldv1.DeliveryState_DELIVERY_STATE_WAITING:
				return false, nil
			}
		}
		return true, nil
	})
	return n
}

func TestSendEmailReachesSent(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	res, err := s.notify.Send(ctx, emailRequest("Ada@Example.COM"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 1 || res.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED ||
		res.Deliveries[0].Channel != heraldv1.Channel_CHANNEL_EMAIL {
		t.Fatalf("Send answered %v, want one queued email delivery", res.Deliveries)
	}
	n := waitFinal(t, s, res.NotificationId)
	d := n.Deliveries[0]
	if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("delivery state %s (reason %q, error %q), want SENT", d.State, d.Reason, d.LastError)
	}
	if d.Attempts != 1 || d.Provider != "sendgrid" || d.ProviderMessageId == "" || d.SentTime == nil {
		t.Errorf("delivery = %+v, want one sendgrid attempt with a provider message id and sent time", d)
	}
	msgs := s.fake.Messages()
	if len(msgs) != 1 {
		t.Fatalf("the fake received %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.To[0] != "Ada@example.com" || m.Subject != "Your receipt" || m.HTML != "<p>Thanks for your order.</p>" ||
		m.Text != "Thanks for your order." || m.CustomArgs["delivery_id"] != d.DeliveryId || m.MessageID != d.ProviderMessageId {
		t.Errorf("the fake received %+v", m)
	}
	var attempts int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.attempts WHERE delivery_id = $1 AND outcome = 'sent'`,
		d.DeliveryId).Scan(&attempts); err != nil || attempts != 1 {
		t.Errorf("attempt log holds %d sent attempts (err %v), want 1", attempts, err)
	}
}

func TestSendWithTemplate(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	_, err := s.tmpl.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "welcome",
		Parts: &heraldv1.TemplateParts{
			EmailSubject: "Welcome, {{.name}}",
			EmailHtml:    "<p>Hello {{.name}}</p>",
			EmailText:    "Hello {{.name}}",
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := structpb.NewStruct(map[string]any{"name": "<Ada>"})
	res, err := s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "welcome"}},
		Data:      data,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if n.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("state %s, want SENT", n.Deliveries[0].State)
	}
	if n.Template.GetName() != "welcome" || n.Template.GetVersion() != 1 {
		t.Errorf("notification template = %v, want welcome v1", n.Template)
	}
	m := s.fake.Messages()[0]
	if m.Subject != "Welcome, <Ada>" || m.HTML != "<p>Hello &lt;Ada&gt;</p>" || m.Text != "Hello <Ada>" {
		t.Errorf("rendered subject %q html %q text %q", m.Subject, m.HTML, m.Text)
	}

	// A missing variable is the caller's mistake.
	_, err = s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "welcome"}},
	})
	wantField(t, err, codes.InvalidArgument, "template.email_subject")

	_, err = s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "nope"}},
	})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown template: %v, want NotFound", err)
	}
}

func TestSendToUser(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{
		UserId: "u-1", Email: "grace@example.com", Phone: "+14155550100",
	}}); err != nil {
		t.Fatal(err)
	}
	req := emailRequest("")
	req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "u-1"}}
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if len(n.Deliveries) != 1 || n.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || n.UserId != "u-1" {
		t.Fatalf("notification = %v", n)
	}
	if to := s.fake.Messages()[0].To[0]; to != "grace@example.com" {
		t.Errorf("sent to %q", to)
	}

	req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "nobody"}}
	if _, err := s.notify.Send(ctx, req); status.Code(err) != codes.NotFound {
		t.Errorf("unknown user: %v, want NotFound", err)
	}
}

func TestAuthentication(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	for name, key := range map[string]string{
		"no key":        "",
		"garbage":       "not-a-key",
		"unknown key":   appkey.New().String(),
		"wrong secret":  s.key[:len(s.key)-4] + "AAAA",
		"no hk_ prefix": strings.TrimPrefix(s.key, "hk_"),
	} {
		t.Run(name, func(t *testing.T) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if key != "" {
				opts = append(opts, appkey.Credentials(key))
			}
			for _, addr := range []string{s.notifier.GRPCAddr(), s.contacts.GRPCAddr()} {
				conn, err := grpc.NewClient(addr, opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if addr == s.notifier.GRPCAddr() {
					_, err = heraldv1.NewNotificationServiceClient(conn).Send(ctx, emailRequest("ada@example.com"))
				} else {
					_, err = heraldv1.NewContactsServiceClient(conn).GetUser(ctx, &heraldv1.GetUserRequest{UserId: "u"})
				}
				if status.Code(err) != codes.Unauthenticated {
					t.Fatalf("call to %s: %v, want Unauthenticated", addr, err)
				}
			}
		})
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.notifications`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d notifications stored (err %v), want 0", n, err)
	}
}

func wantField(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("error %v, want %s", err, code)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				if v.Field == field {
					if v.Description == "" {
						t.Errorf("violation of %s has no description", field)
					}
					return
				}
			}
		}
	}
	t.Fatalf("error %v has no field violation for %s", err, field)
}

func TestInvalidArguments(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	tests := []struct {
		name  string
		edit  func(*heraldv1.SendRequest)
		field string
	}{
		{"malformed email", func(r *heraldv1.SendRequest) {
			r.Recipient.GetAddress().Email = "ada@@example"
		}, "recipient.address.email"},
		{"email with display name", func(r *heraldv1.SendRequest) {
			r.Recipient.GetAddress().Email = "Ada <ada@example.com>"
		}, "recipient.address.email"},
		{"bad phone", func(r *heraldv1.SendRequest) {
			r.Recipient.GetAddress().Phone = "12345"
		}, "recipient.address.phone"},
		{"bad ios token", func(r *heraldv1.SendRequest) {
			r.Recipient.GetAddress().IosTokens = []string{"zz"}
		}, "recipient.address.ios_tokens[0]"},
		{"no recipient", func(r *heraldv1.SendRequest) { r.Recipient = nil }, "recipient"},
		{"empty address", func(r *heraldv1.SendRequest) {
			r.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{}}}
		}, "recipient.address"},
		{"bad category", func(r *heraldv1.SendRequest) { r.Category = "Not A Category" }, "category"},
		{"no message", func(r *heraldv1.SendRequest) { r.Message = nil }, "message"},
		{"unknown channel", func(r *heraldv1.SendRequest) { r.Channels = []heraldv1.Channel{42} }, "channels[0]"},
		{"channel without content", func(r *heraldv1.SendRequest) {
			r.Recipient.GetAddress().Phone = "+14155550100"
			r.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS}
			r.Message = &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "s", Html: "<p>x</p>"}}
		}, "content"},
		{"huge body", func(r *heraldv1.SendRequest) {
			r.GetContent().Body = strings.Repeat("x", 70<<10)
		}, "content.body"},
		{"long idempotency key", func(r *heraldv1.SendRequest) {
			r.IdempotencyKey = strings.Repeat("k", 300)
		}, "idempotency_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := emailRequest("ada@example.com")
			tt.edit(req)
			_, err := s.notify.Send(ctx, req)
			wantField(t, err, codes.InvalidArgument, tt.field)
		})
	}
	_, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: "42"})
	wantField(t, err, codes.InvalidArgument, "notification_id")
}

func TestIdempotency(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	req := emailRequest("ada@example.com")
	req.IdempotencyKey = "order-17"
	first, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.NotificationId != first.NotificationId || first.Duplicate ||
		again.Deliveries[0].DeliveryId != first.Deliveries[0].DeliveryId {
		t.Fatalf("replay = %v, first = %v", again, first)
	}
	req.GetContent().Body = "something else"
	_, err = s.notify.Send(ctx, req)
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("reused key with a different request: %v, want AlreadyExists", err)
	}
	waitFinal(t, s, first.NotificationId)
	if n := s.fake.Count(first.Deliveries[0].DeliveryId); n != 1 {
		t.Errorf("the fake received the delivery %d times, want 1", n)
	}
}

func TestHealthAndReflection(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	conn, err := grpc.NewClient(s.notifier.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range res.GetListServicesResponse().GetService() {
		names = append(names, svc.Name)
	}
	for _, want := range []string{"herald.v1.NotificationService", "herald.v1.TemplateService", "herald.v1.AdminService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

// TestLatestTemplateAcrossReplicas: notifiers cache a template's latest version, yet a version
// created on one replica is what the next Send on another renders.
func TestLatestTemplateAcrossReplicas(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	second := heraldv1.NewNotificationServiceClient(dial(t, s.startNotifier(t).GRPCAddr(), s.key))
	send := func() *heraldv1.Notification {
		t.Helper()
		res, err := second.Send(ctx, &heraldv1.SendRequest{
			Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
			Category:  "account",
			Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "news"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := second.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
		if err != nil {
			t.Fatal(err)
		}
		return n.Notification
	}
	for v := int32(1); v <= 3; v++ {
		if _, err := s.tmpl.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
			Name:  "news",
			Parts: &heraldv1.TemplateParts{EmailSubject: fmt.Sprintf("Issue %d", v), EmailText: "Read it"},
		}}); err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second Send is served from the cache
			if n := send(); n.Template.GetVersion() != v {
				t.Fatalf("after creating v%d on the first notifier, the second rendered v%d", v, n.Template.GetVersion())
			}
		}
	}
}
