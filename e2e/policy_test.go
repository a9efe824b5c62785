package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// TestKeysAndScopes: an admin creates a scoped app; the app rotates its key (two active at
// most), a revoked key stops working at once on every notifier, and calls outside the app's
// scope are denied.
func TestKeysAndScopes(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	second := s.startNotifier(t) // another replica, with its own caches
	admin := heraldv1.NewAdminServiceClient(s.conn)

	app, err := admin.CreateApp(ctx, &heraldv1.CreateAppRequest{
		Name: "billing", AllowedCategories: []string{"account"},
		AllowedChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := app.Key
	as := func(addr, key string) heraldv1.NotificationServiceClient {
		return heraldv1.NewNotificationServiceClient(dial(t, addr, key))
	}
	for _, addr := range []string{s.notifier.GRPCAddr(), second.GRPCAddr()} {
		if _, err := as(addr, first).Send(ctx, emailRequest("ada@example.com")); err != nil {
			t.Fatalf("the new app's key on %s: %v", addr, err)
		}
	}

	// Scope: another category, or a channel outside the app's, is denied.
	req := emailRequest("ada@example.com")
	req.Category = "marketing"
	if _, err := as(s.notifier.GRPCAddr(), first).Send(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a category outside the scope: %v, want PermissionDenied", err)
	}
	req = emailRequest("ada@example.com")
	req.Recipient.GetAddress().Phone = "+14155550100"
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS}
	if _, err := as(s.notifier.GRPCAddr(), first).Send(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a channel outside the scope: %v, want PermissionDenied", err)
	}
	// Without explicit channels, the scope narrows the channels instead of failing.
	req.Channels = nil
	res, err := as(s.notifier.GRPCAddr(), first).Send(ctx, req)
	if err != nil || len(res.Deliveries) != 1 || res.Deliveries[0].Channel != heraldv1.Channel_CHANNEL_EMAIL {
		t.Fatalf("implicit channels within the scope: %v, %v", res, err)
	}
	// Only admin apps administer.
	if _, err := heraldv1.NewAdminServiceClient(dial(t, s.notifier.GRPCAddr(), first)).ListApps(ctx, &heraldv1.ListAppsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a non-admin app listing apps: %v", err)
	}

	// Rotation: a second key, then no third while two are active.
	next, err := admin.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: app.App.AppId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.IssueKey(ctx, &heraldv1.IssueKeyRequest{AppId: app.App.AppId}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a third active key: %v, want FailedPrecondition", err)
	}
	if _, err := admin.RevokeKey(ctx, &heraldv1.RevokeKeyRequest{KeyId: app.KeyId}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{s.notifier.GRPCAddr(), second.GRPCAddr()} {
		if _, err := as(addr, first).Send(ctx, emailRequest("ada@example.com")); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("the revoked key on %s: %v, want Unauthenticated", addr, err)
		}
		if _, err := as(addr, next.Key).Send(ctx, emailRequest("ada@example.com")); err != nil {
			t.Fatalf("the new key on %s: %v", addr, err)
		}
	}
	keys, err := admin.ListKeys(ctx, &heraldv1.ListKeysRequest{AppId: app.App.AppId})
	if err != nil || len(keys.Keys) != 2 || keys.Keys[1].RevokeTime == nil {
		t.Fatalf("ListKeys = %v, %v", keys, err)
	}
}

// TestFrequencyCapAcrossReplicas: with marketing capped at 3 per 24 hours, three Sends through
// two notifiers are queued and the fourth is skipped (rate_limited).
func TestFrequencyCapAcrossReplicas(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	admin := heraldv1.NewAdminServiceClient(s.conn)
	if _, err := admin.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
		Name: "marketing", Description: "Offers", DefaultOptIn: true,
		Caps: []*heraldv1.FrequencyCap{{Limit: 3, Window: durationpb.New(24 * time.Hour)}},
	}}); err != nil {
		t.Fatal(err)
	}
	second := heraldv1.NewNotificationServiceClient(dial(t, s.startNotifier(t).GRPCAddr(), s.key))
	reachableUser(t, s, "hal")
	var got []string
	for i := range 4 {
		client := s.notify
		if i%2 == 1 {
			client = second
		}
		res, err := client.Send(ctx, userSend("hal", "marketing"))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, states(res)[heraldv1.Channel_CHANNEL_EMAIL])
	}
	want := []string{"QUEUED", "QUEUED", "QUEUED", "SKIPPED rate_limited"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("email of the 4 Sends: %v, want %v", got, want)
		}
	}
	// Another user, and another category, have their own counts.
	reachableUser(t, s, "ivy")
	if res, err := s.notify.Send(ctx, userSend("ivy", "marketing")); err != nil || states(res)[heraldv1.Channel_CHANNEL_EMAIL] != "QUEUED" {
		t.Fatalf("another user: %v, %v", res, err)
	}
	if res, err := s.notify.Send(ctx, userSend("hal", "account")); err != nil || states(res)[heraldv1.Channel_CHANNEL_EMAIL] != "QUEUED" {
		t.Fatalf("another category: %v, %v", res, err)
	}
}

// TestLimitStoreDown: with JetStream (the limit store) gone, Sends are still accepted and the
// failure is counted; the reconciler publishes once the broker is back.
func TestLimitStoreDown(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	admin := heraldv1.NewAdminServiceClient(s.conn)
	if _, err := admin.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
		Name: "marketing", DefaultOptIn: true,
		Caps: []*heraldv1.FrequencyCap{{Limit: 3, Window: durationpb.New(time.Hour)}},
	}}); err != nil {
		t.Fatal(err)
	}
	s.nats.Shutdown()
	s.nats.WaitForShutdown()
	before := s.notifier.LimitFailures()
	req := emailRequest("ada@example.com")
	req.Category = "marketing"
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatalf("Send with the limit store down: %v", err)
	}
	if got := states(res)[heraldv1.Channel_CHANNEL_EMAIL]; got != "QUEUED" {
		t.Fatalf("email with the limit store down: %s, want QUEUED", got)
	}
	if s.notifier.LimitFailures() <= before {
		t.Fatal("the limit store's failure was not counted")
	}
}

// TestScheduleSurvivesRestart: a Send for later is kept through a notifier restart and fires
// on time, not before.
func TestScheduleSurvivesRestart(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	at := time.Now().Add(3 * time.Second).Truncate(time.Millisecond)
	req := emailRequest("ada@example.com")
	req.SendAt = timestamppb.New(at)
	res, err := s.notify.Send(ctx, req)
	if err != nil || res.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED {
		t.Fatalf("Send for later: %v, %v", res, err)
	}
	s.notifier.Close()
	restarted := s.startNotifier(t)
	s.notify = heraldv1.NewNotificationServiceClient(dial(t, restarted.GRPCAddr(), s.key))
	n := waitFinal(t, s, res.NotificationId)
	d := n.Deliveries[0]
	if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("scheduled delivery: %s %q", d.State, d.LastError)
	}
	if sent := d.SentTime.AsTime(); sent.Before(at) {
		t.Fatalf("sent at %s, before its send_at %s", sent, at)
	}
	if got := s.fake.Messages()[0].ReceivedAt; got.Before(at) {
		t.Fatalf("the provider got it at %s, before its send_at %s", got, at)
	}
}

// TestCancelAndTTL: a canceled notification is never sent; one whose ttl passes before a worker
// can send it expires.
func TestCancelAndTTL(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	req := emailRequest("ada@example.com")
	req.SendAt = timestamppb.New(time.Now().Add(time.Hour))
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.notify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: res.NotificationId})
	if err != nil || c.Notification.Deliveries[0].State != heraldv1.DeliveryState_DELIVERY_STATE_CANCELED {
		t.Fatalf("CancelNotification = %v, %v", c, err)
	}

	short := emailRequest("bo@example.com")
	short.Ttl = durationpb.New(time.Second)
	exp, err := s.notify.Send(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery to expire", 30*time.Second, func() (bool, error) {
		n, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: exp.NotificationId})
		return err == nil && n.Notification.Deliveries[0].State == heraldv1.DeliveryState_DELIVERY_STATE_EXPIRED, err
	})
	s.startWorkers(t)
	queued, err := s.notify.Send(ctx, emailRequest("cy@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, queued.NotificationId) // the workers run: what was canceled or expired stays so
	if n := len(s.fake.Messages()); n != 1 {
		t.Fatalf("the provider received %d emails, want only the last one", n)
	}
	if _, err := s.notify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: "0190c2a0-0000-7000-8000-000000000000"}); status.Code(err) != codes.NotFound {
		t.Fatalf("canceling an unknown notification: %v", err)
	}
}

// TestSendBatchAndExplain: a batch answers for each recipient, one bad address failing only
// itself; Explain answers without sending.
func TestSendBatchAndExplain(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	data, _ := structpb.NewStruct(map[string]any{"name": "friend"})
	mine, _ := structpb.NewStruct(map[string]any{"name": "Ada"})
	addr := func(email string) *heraldv1.Recipient {
		return &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: email}}}
	}
	if _, err := s.tmpl.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "hello", Parts: &heraldv1.TemplateParts{EmailSubject: "Hello {{.name}}", EmailText: "Hi {{.name}}"},
	}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.notify.SendBatch(ctx, &heraldv1.SendBatchRequest{
		Category: "account", Data: data,
		Message: &heraldv1.SendBatchRequest_Template{Template: &heraldv1.TemplateRef{Name: "hello"}},
		Recipients: []*heraldv1.BatchRecipient{
			{Recipient: addr("ada@example.com"), Data: mine, IdempotencyKey: "b-1"},
			{Recipient: addr("not an address")},
			{Recipient: addr("bo@example.com")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Results
	if len(r) != 3 || r[0].Response == nil || r[1].Error == nil || r[2].Response == nil {
		t.Fatalf("results = %v", r)
	}
	if r[1].Error.Code != "INVALID_ARGUMENT" || len(r[1].Error.Violations) == 0 ||
		r[1].Error.Violations[0].Field != "recipient.address.email" {
		t.Fatalf("the bad recipient's error = %v", r[1].Error)
	}
	again, err := s.notify.SendBatch(ctx, &heraldv1.SendBatchRequest{
		Category: "account", Data: data,
		Message:    &heraldv1.SendBatchRequest_Template{Template: &heraldv1.TemplateRef{Name: "hello"}},
		Recipients: []*heraldv1.BatchRecipient{{Recipient: addr("ada@example.com"), Data: mine, IdempotencyKey: "b-1"}},
	})
	if err != nil || !again.Results[0].Response.GetDuplicate() || again.Results[0].Response.NotificationId != r[0].Response.NotificationId {
		t.Fatalf("replayed batch recipient: %v, %v", again, err)
	}
	if _, err := s.notify.SendBatch(ctx, &heraldv1.SendBatchRequest{Category: "account"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an empty batch: %v", err)
	}

	reachableUser(t, s, "jo")
	updateSettings(t, s, "jo", &heraldv1.Settings{
		OptedOutChannels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS},
	})
	var before int
	s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.notifications`).Scan(&before)
	ex, err := s.notify.Explain(ctx, &heraldv1.ExplainRequest{Request: &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: "jo"}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "hello"}},
		Data:      mine,
	}})
	if err != nil {
		t.Fatal(err)
	}
	byChannel := map[heraldv1.Channel]*heraldv1.ExplainedDelivery{}
	for _, d := range ex.Deliveries {
		byChannel[d.Channel] = d
	}
	if e := byChannel[heraldv1.Channel_CHANNEL_EMAIL]; e == nil || e.State != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED ||
		e.Content.EmailSubject != "Hello Ada" {
		t.Fatalf("explained email = %v", e)
	}
	if sms := byChannel[heraldv1.Channel_CHANNEL_SMS]; sms == nil || sms.State != heraldv1.DeliveryState_DELIVERY_STATE_SKIPPED {
		t.Fatalf("explained SMS = %v", sms)
	}
	var after int
	s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.notifications`).Scan(&after)
	if after != before {
		t.Fatalf("Explain stored %d notifications", after-before)
	}
}

// TestAppRequestRate: an app over its request rate gets RESOURCE_EXHAUSTED with a retry delay.
func TestAppRequestRate(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	// One request per thousand seconds, two at once: the third call cannot be admitted however
	// slow the machine is.
	app, err := heraldv1.NewAdminServiceClient(s.conn).CreateApp(ctx, &heraldv1.CreateAppRequest{
		Name: "chatty", RequestsPerSecond: 0.001, Burst: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), app.Key))
	for range 2 {
		if _, err := client.Send(ctx, emailRequest("ada@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	_, err = client.Send(ctx, emailRequest("ada@example.com"))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("the third call: %v, want ResourceExhausted", err)
	}
	var retry time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri.RetryDelay.AsDuration()
		}
	}
	if retry <= 0 {
		t.Fatalf("no RetryInfo in %v", st.Details())
	}
	// Other apps are not affected.
	if _, err := s.notify.Send(ctx, emailRequest("ada@example.com")); err != nil {
		t.Fatalf("another app: %v", err)
	}
}

// TestQuietHours: during the user's quiet hours, push and SMS of a non-critical category wait
// until the window ends; email and critical categories go at once.
func TestQuietHours(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	reachableUser(t, s, "kim")
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{
		UserId: "kim", Email: "kim@example.com", Phone: "+14155550100", Timezone: "UTC",
	}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	updateSettings(t, s, "kim", &heraldv1.Settings{QuietHours: &heraldv1.QuietHours{
		Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04"),
	}})
	res, err := s.notify.Send(ctx, userSend("kim", "account"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[heraldv1.Channel]string{
		heraldv1.Channel_CHANNEL_EMAIL: "QUEUED",
		heraldv1.Channel_CHANNEL_IOS:   "SCHEDULED quiet_hours",
		heraldv1.Channel_CHANNEL_SMS:   "SCHEDULED quiet_hours",
	}
	if got := states(res); !equalMaps(got, want) {
		t.Fatalf("account Send in quiet hours: %v, want %v", got, want)
	}
	res, err = s.notify.Send(ctx, userSend("kim", "security"))
	if err != nil {
		t.Fatal(err)
	}
	for ch, st := range states(res) {
		if st != "QUEUED" {
			t.Errorf("security in quiet hours: %s %s, want QUEUED", ch, st)
		}
	}
}
