package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/fakes/twiliofake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
)

// chainRequest is an email-then-SMS fallback Send to email and +14155550100.
func chainRequest(email string, stepTimeout time.Duration) *heraldv1.SendRequest {
	req := emailRequest(email)
	req.Recipient.GetAddress().Phone = "+14155550100"
	req.GetContent().Title = "Your receipt"
	req.Fallback = &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}}
	if stepTimeout > 0 {
		req.Fallback.StepTimeout = durationpb.New(stepTimeout)
	}
	return req
}

// steps lists a notification's deliveries as "step channel state reason".
func steps(n *heraldv1.Notification) []string {
	var out []string
	for _, d := range n.Deliveries {
		out = append(out, fmt.Sprintf("%d %s %s %s", d.Step, channelName(d.Channel), stateName(d.State), d.Reason))
	}
	return out
}

func channelName(c heraldv1.Channel) string { return c.String()[len("CHANNEL_"):] }

func stateName(s heraldv1.DeliveryState) string { return s.String()[len("DELIVERY_STATE_"):] }

// TestFallbackOnFailure: an email SendGrid refuses for good moves the chain on to SMS, and only
// the SMS reaches the user. Explain shows the chain before, GetNotification each step after.
func TestFallbackOnFailure(t *testing.T) {
	twilioFake := twiliofake.New(twilioSID, twilioAuth)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.SMSProvider = "twilio"
		c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
	}})
	ctx := context.Background()
	s.fake.RefuseAddress("refused@example.com")
	req := chainRequest("refused@example.com", 0)

	ex, err := s.notify.Explain(ctx, &heraldv1.ExplainRequest{Request: req})
	if err != nil {
		t.Fatal(err)
	}
	var explained []string
	for _, d := range ex.Deliveries {
		explained = append(explained, fmt.Sprintf("%d %s %s", d.Step, channelName(d.Channel), stateName(d.State)))
	}
	if want := []string{"1 EMAIL QUEUED", "2 SMS WAITING"}; !slices.Equal(explained, want) {
		t.Errorf("Explain: %q, want %q", explained, want)
	}

	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if got, want := steps(n), []string{"1 EMAIL FAILED rejected", "2 SMS SENT "}; !slices.Equal(got, want) {
		t.Errorf("steps %q, want %q", got, want)
	}
	if msgs := twilioFake.Messages(); len(msgs) != 1 || msgs[0].To != "+14155550100" {
		t.Errorf("Twilio got %d messages (%+v), want the one SMS", len(msgs), msgs)
	}
	if msgs := s.fake.Messages(); len(msgs) != 0 {
		t.Errorf("SendGrid accepted %d messages, want none", len(msgs))
	}
}

// TestFallbackStepTimeout: with a step timeout, the next channel goes when no delivery event
// came for the sent email, also across a notifier restart in the middle of the chain; an open
// reported within the timeout ends the chain instead.
func TestFallbackStepTimeout(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	whole := t // what the subtests start lives as long as the stack

	t.Run("no event: the next step goes, after a restart", func(t *testing.T) {
		res, err := s.notify.Send(ctx, chainRequest("ada@example.com", time.Second))
		if err != nil {
			t.Fatal(err)
		}
		// The chain's state is in PostgreSQL only: no notifier runs while the email is sent.
		s.notifier.Close()
		waitFor(t, "the email to be sent", 30*time.Second, func() (bool, error) {
			var st string
			err := s.pool.QueryRow(ctx, `SELECT state FROM delivery.deliveries WHERE id = $1`, res.Deliveries[0].DeliveryId).Scan(&st)
			return st == "sent", err
		})
		s.notifier = s.startNotifier(whole)
		s.notify = heraldv1.NewNotificationServiceClient(dial(whole, s.notifier.GRPCAddr(), s.key))
		n := waitFinal(t, s, res.NotificationId)
		if got, want := steps(n), []string{"1 EMAIL SENT step_timeout", "2 SMS SENT "}; !slices.Equal(got, want) {
			t.Errorf("steps %q, want %q", got, want)
		}
		if sms, email := n.Deliveries[1].SentTime.AsTime(), n.Deliveries[0].SentTime.AsTime(); sms.Before(email.Add(time.Second)) {
			t.Errorf("SMS sent at %s, before the email's step timeout ran out (%s + 1s)", sms, email)
		}
	})

	t.Run("opened in time: the chain ends", func(t *testing.T) {
		// A timeout the test cannot outlast: only the event can end the step.
		res, err := s.notify.Send(ctx, chainRequest("bea@example.com", time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		email := res.Deliveries[0].DeliveryId
		waitFor(t, "the email to be sent", 30*time.Second, func() (bool, error) {
			n, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
			return err == nil && n.Notification.Deliveries[0].State == heraldv1.DeliveryState_DELIVERY_STATE_SENT, err
		})
		if _, err := s.notify.TrackEvent(ctx, &heraldv1.TrackEventRequest{DeliveryId: email,
			Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_OPENED}); err != nil {
			t.Fatal(err)
		}
		n := waitFinal(t, s, res.NotificationId)
		if got, want := steps(n), []string{"1 EMAIL DELIVERED ", "2 SMS SKIPPED fallback_not_needed"}; !slices.Equal(got, want) {
			t.Errorf("steps %q, want %q", got, want)
		}
	})
}

// TestFallbackCategoryAndBatch: a category's fallback is kept and followed by a Send that asks
// for no channels; a SendBatch's fallback makes a chain of each recipient.
func TestFallbackCategoryAndBatch(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	admin := heraldv1.NewAdminServiceClient(s.conn)
	chain := &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_SMS, heraldv1.Channel_CHANNEL_EMAIL}}
	if _, err := admin.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
		Name: "chained", DefaultOptIn: true, Fallback: chain}}); err != nil {
		t.Fatal(err)
	}
	cats, err := admin.ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cats.Categories {
		if c.Name == "chained" {
			found = slices.Equal(c.GetFallback().GetChannels(), chain.Channels)
		}
	}
	if !found {
		t.Errorf("ListCategories: %v, want chained with its fallback", cats.Categories)
	}

	req := chainRequest("ada@example.com", 0)
	req.Fallback, req.Category = nil, "chained"
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if got, want := steps(n), []string{"1 SMS SENT ", "2 EMAIL SKIPPED fallback_not_needed"}; !slices.Equal(got, want) {
		t.Errorf("the category's chain: steps %q, want %q", got, want)
	}

	// The chain is part of the request an idempotency key stands for.
	keyed := chainRequest("cy@example.com", 0)
	keyed.IdempotencyKey = "chain-1"
	first, err := s.notify.Send(ctx, keyed)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.notify.Send(ctx, keyed); err != nil || !again.Duplicate || again.NotificationId != first.NotificationId {
		t.Errorf("the same chain again: %v, %v; want the first answer, duplicate", again, err)
	}
	for name, change := range map[string]func(*heraldv1.SendRequest){
		"another order":  func(r *heraldv1.SendRequest) { slices.Reverse(r.Fallback.Channels) },
		"a step timeout": func(r *heraldv1.SendRequest) { r.Fallback.StepTimeout = durationpb.New(time.Minute) },
	} {
		other := proto.CloneOf(keyed)
		change(other)
		if _, err := s.notify.Send(ctx, other); status.Code(err) != codes.AlreadyExists {
			t.Errorf("the key with %s: %v, want ALREADY_EXISTS", name, err)
		}
	}

	batch := &heraldv1.SendBatchRequest{Category: "account", Fallback: &heraldv1.Fallback{
		Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}},
		Message: &heraldv1.SendBatchRequest_Content{Content: &heraldv1.Content{Subject: "Hi", Body: "Hello"}}}
	s.fake.RefuseAddress("fail@example.com")
	for _, email := range []string{"fail@example.com", "bea@example.com"} {
		batch.Recipients = append(batch.Recipients, &heraldv1.BatchRecipient{Recipient: &heraldv1.Recipient{
			Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: email, Phone: "+14155550100"}}}})
	}
	br, err := s.notify.SendBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{
		{"1 EMAIL FAILED rejected", "2 SMS SENT "},
		{"1 EMAIL SENT ", "2 SMS SKIPPED fallback_not_needed"},
	} {
		r := br.Results[i]
		if r.GetError() != nil {
			t.Fatalf("recipient %d: %v", i, r.GetError())
		}
		n := waitFinal(t, s, r.GetResponse().GetNotificationId())
		if got := steps(n); !slices.Equal(got, want) {
			t.Errorf("batch recipient %d: steps %q, want %q", i, got, want)
		}
	}
}
