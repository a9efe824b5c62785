package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/internal/fakes/twiliofake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
)

const (
	bundleID   = "com.example.herald"
	twilioSID  = "AC0123456789abcdef0123456789abcdef"
	twilioAuth = "0123456789abcdef0123456789abcdef"
	fcmToken   = "fcm-registration-token:APA91b-example_token"
)

// TestEveryChannelThroughItsProvider sends one notification on all four channels through the
// real provider SDKs (apns2, firebase messaging, twilio-go, sendgrid-go) against protocol-faithful
// fakes on loopback, and checks each delivery is SENT with the provider's message id.
func TestEveryChannelThroughItsProvider(t *testing.T) {
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

	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.IOSProvider, c.AndroidProvider, c.SMSProvider = "apns", "fcm", "twilio"
		c.APNsHost = apnsURL
		c.APNs.Topic, c.APNs.KeyPEM, c.APNs.KeyID, c.APNs.TeamID = bundleID, p8, "KEY1234567", "TEAM123456"
		c.APNs.RootCAs = apnsFake.RootCAs()
		c.FCM.ProjectID, c.FCM.CredentialsJSON, c.FCM.Endpoint = "herald-test", fcmFake.ServiceAccountJSON(), fcmFake.Endpoint()
		c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
	}})
	ctx := context.Background()
	res, err := s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{
			Email: "ada@example.com", Phone: "+14155550100",
			IosTokens: []string{iosToken}, AndroidTokens: []string{fcmToken},
		}}},
		Category: "account",
		Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
			Title: "Your order", Subject: "Your order", Body: "It has shipped.",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if len(n.Deliveries) != 4 {
		t.Fatalf("%d deliveries, want 4", len(n.Deliveries))
	}
	providers := map[heraldv1.Channel]string{
		heraldv1.Channel_CHANNEL_IOS: "apns", heraldv1.Channel_CHANNEL_ANDROID: "fcm",
		heraldv1.Channel_CHANNEL_SMS: "twilio", heraldv1.Channel_CHANNEL_EMAIL: "sendgrid",
	}
	for _, d := range n.Deliveries {
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || d.Provider != providers[d.Channel] || d.ProviderMessageId == "" {
			t.Errorf("%s: %s via %q id %q (reason %q, error %q), want SENT via %s with a provider id",
				d.Channel, d.State, d.Provider, d.ProviderMessageId, d.Reason, d.LastError, providers[d.Channel])
		}
		switch d.Channel {
		case heraldv1.Channel_CHANNEL_IOS:
			if apnsFake.Count(d.DeliveryId) != 1 {
				t.Errorf("APNs received the delivery %d times", apnsFake.Count(d.DeliveryId))
			}
		case heraldv1.Channel_CHANNEL_ANDROID:
			if fcmFake.Count(d.DeliveryId) != 1 {
				t.Errorf("FCM received the delivery %d times", fcmFake.Count(d.DeliveryId))
			}
		case heraldv1.Channel_CHANNEL_SMS:
			msgs := twilioFake.Messages()
			if len(msgs) != 1 || msgs[0].SID != d.ProviderMessageId || msgs[0].Body != "It has shipped." {
				t.Errorf("Twilio received %+v", msgs)
			}
		case heraldv1.Channel_CHANNEL_EMAIL:
			if s.fake.Count(d.DeliveryId) != 1 {
				t.Errorf("SendGrid received the delivery %d times", s.fake.Count(d.DeliveryId))
			}
		}
	}
}

// TestProviderVerdictsReachContacts: APNs's 410 Unregistered deactivates the device, and
// Twilio's 21610 (the number replied STOP) suppresses the number, so the next Send skips them.
func TestProviderVerdictsReachContacts(t *testing.T) {
	apnsFake := apnsfake.New(bundleID)
	apnsURL := apnsFake.Start()
	t.Cleanup(apnsFake.Close)
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	apnsFake.TrustKey("TEAM123456", "KEY1234567", &key.PublicKey)
	twilioFake := twiliofake.New(twilioSID, twilioAuth)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.IOSProvider, c.SMSProvider = "apns", "twilio"
		c.APNsHost = apnsURL
		c.APNs.Topic, c.APNs.KeyPEM, c.APNs.KeyID, c.APNs.TeamID = bundleID, p8, "KEY1234567", "TEAM123456"
		c.APNs.RootCAs = apnsFake.RootCAs()
		c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
	}})
	ctx := context.Background()
	reachableUser(t, s, "gus") // email, +14155550100, iosToken
	apnsFake.Unregister(iosToken, time.Now().Add(time.Hour))
	twilioFake.FailNumber("+14155550100", 21610)

	req := userSend("gus", "account")
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_SMS}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	for _, d := range n.Deliveries {
		want := map[heraldv1.Channel]string{heraldv1.Channel_CHANNEL_IOS: "unregistered", heraldv1.Channel_CHANNEL_SMS: "opted_out"}[d.Channel]
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_FAILED || d.Reason != want || d.Attempts != 1 {
			t.Errorf("%s: %s %q after %d attempts, want FAILED %q after 1", d.Channel, d.State, d.Reason, d.Attempts, want)
		}
	}
	waitFor(t, "the device to be deactivated", 30*time.Second, func() (bool, error) {
		list, err := s.people.ListDevices(ctx, &heraldv1.ListDevicesRequest{UserId: "gus", IncludeInactive: true})
		return err == nil && len(list.Devices) == 1 && !list.Devices[0].Active && list.Devices[0].DeactivatedReason == "unregistered", err
	})
	waitFor(t, "the number to be suppressed", 30*time.Second, func() (bool, error) {
		res, err := s.notify.Send(ctx, req)
		if err != nil {
			return false, err
		}
		st := states(res)
		// No active device: iOS has no address now; the number carries the STOP.
		return st[heraldv1.Channel_CHANNEL_IOS] == "SKIPPED no_address" && st[heraldv1.Channel_CHANNEL_SMS] == "SKIPPED suppressed", nil
	})
	// Registering the token again brings it back, whatever APNs said before.
	if _, err := s.people.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{
		UserId: "gus", Platform: heraldv1.Platform_PLATFORM_IOS, Token: iosToken,
	}}); err != nil {
		t.Fatal(err)
	}
	res, err = s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := states(res)[heraldv1.Channel_CHANNEL_IOS]; got != "QUEUED" {
		t.Fatalf("iOS after registering again: %s", got)
	}
}
