package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	"github.com/heraldhq/herald/internal/fakes/smtpfake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier/ops"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
	"github.com/heraldhq/herald/services/workers/smtp"
)

// writeSecret writes a secret file for a providers file and returns its path.
func writeSecret(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEmailFailover: with SendGrid then SMTP in the providers file, SendGrid answering 503
// sends the email through SMTP; once SendGrid recovers, its circuit's probe brings the channel
// back to it. Every delivery reaches exactly one of the two providers, and its record names the
// one that took it.
func TestEmailFailover(t *testing.T) {
	smtpFake := smtpfake.New(smtpfake.Config{Username: "herald", Password: "smtp-password", TLS: smtpfake.NoTLS})
	smtpFake.Start()
	t.Cleanup(smtpFake.Close)
	dir := t.TempDir()
	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.ProvidersFile = writeSecret(t, dir, "providers.yaml", fmt.Appendf(nil, `
email:
  - name: primary
    provider: sendgrid
    api_key_file: %s
    base_url: %s
    from: herald@example.com
    breaker_failures: 3
    breaker_cooldown: 300ms
  - name: backup
    provider: smtp
    host: 127.0.0.1
    port: %d
    tls: none
    username: herald
    password_file: %s
    from: herald@example.com
`, writeSecret(t, dir, "sendgrid", []byte(sendgridKey)), c.SendGridBaseURL, smtpFake.Port(),
			writeSecret(t, dir, "smtp", []byte("smtp-password"))))
	}})
	ctx := context.Background()
	var ids []string
	send := func() *heraldv1.Delivery {
		t.Helper()
		res, err := s.notify.Send(ctx, emailRequest(fmt.Sprintf("user%d@example.com", len(ids))))
		if err != nil {
			t.Fatal(err)
		}
		n := waitFinal(t, s, res.NotificationId)
		d := n.Deliveries[0]
		ids = append(ids, d.DeliveryId)
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
			t.Fatalf("delivery %s: %s %q (%s)", d.DeliveryId, d.State, d.Reason, d.LastError)
		}
		return d
	}

	for range 3 {
		if d := send(); d.Provider != "sendgrid/primary" {
			t.Fatalf("with SendGrid up, sent through %q", d.Provider)
		}
	}
	s.fake.Fail(http.StatusServiceUnavailable, sendgridfake.Always)
	for range 8 {
		if d := send(); d.Provider != "smtp/backup" {
			t.Fatalf("with SendGrid answering 503, sent through %q (attempts %d)", d.Provider, d.Attempts)
		}
	}
	s.fake.Fail(0, 0)
	// The circuit's probe goes once its cooldown is over; until then SMTP keeps the channel.
	waitFor(t, "SendGrid to take the channel back", 30*time.Second, func() (bool, error) {
		return send().Provider == "sendgrid/primary", nil
	})
	for range 3 {
		if d := send(); d.Provider != "sendgrid/primary" {
			t.Fatalf("after SendGrid recovered, sent through %q", d.Provider)
		}
	}

	// The metrics count the failovers; the status page shows both credentials, SendGrid active.
	metrics := get(t, "http://"+s.workers.HTTPAddr()+"/metrics")
	for _, want := range []string{
		`herald_route_failovers_total{channel="email",credential="primary",provider="sendgrid"}`,
		`herald_route_calls_total{channel="email",credential="backup",provider="smtp",result="accepted"}`,
		`herald_route_active{channel="email",credential="primary",provider="sendgrid"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("workers /metrics lacks %s", want)
		}
	}
	waitFor(t, "the status page to show both email credentials", 30*time.Second, func() (bool, error) {
		var data ops.Snapshot
		if err := json.Unmarshal([]byte(get(t, "http://"+s.notifier.HTTPAddr()+"/status/data")), &data); err != nil {
			return false, err
		}
		shown := map[string]bool{}
		for _, c := range data.Circuits {
			if c.Channel == "email" {
				shown[c.Provider] = c.Active
			}
		}
		active, ok := shown["sendgrid/primary"]
		_, backup := shown["smtp/backup"]
		return ok && active && backup, nil
	})

	// No delivery was sent twice, nor lost: each reached exactly one provider.
	viaSMTP := map[string]int{}
	for _, m := range smtpFake.Messages() {
		viaSMTP[m.Header.Get(smtp.DeliveryIDHeader)]++
	}
	backups := 0
	for _, id := range ids {
		sg, sm := s.fake.Count(id), viaSMTP[id]
		if sg+sm != 1 {
			t.Errorf("delivery %s reached SendGrid %d times and SMTP %d times", id, sg, sm)
		}
		backups += sm
	}
	if backups < 8 || len(smtpFake.Messages()) != backups {
		t.Errorf("SMTP took %d of the deliveries and %d messages in all, want at least 8 and no others",
			backups, len(smtpFake.Messages()))
	}
}

// TestCredentialsPerDeviceApp: two APNs bundle ids and two FCM projects in one workers process;
// each device is reached through the credential of the app it registered for.
func TestCredentialsPerDeviceApp(t *testing.T) {
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	dir := t.TempDir()
	type apnsApp struct {
		fake *apnsfake.Fake
		url  string
		key  string
	}
	apps := map[string]*apnsApp{}
	for i, bundle := range []string{"com.example.shop", "com.example.news"} {
		f := apnsfake.New(bundle)
		url := f.Start()
		t.Cleanup(f.Close)
		p8, key, err := apnsfake.NewAuthKey()
		if err != nil {
			t.Fatal(err)
		}
		keyID := fmt.Sprintf("KEY%07d", i)
		f.TrustKey("TEAM123456", keyID, &key.PublicKey)
		apps[bundle] = &apnsApp{fake: f, url: url, key: writeSecret(t, dir, bundle+".p8", p8)}
	}
	fcmShop, fcmNews := fcmfake.New("shop-project", "shop-access-token"), fcmfake.New("news-project", "news-access-token")
	for _, f := range []*fcmfake.Fake{fcmShop, fcmNews} {
		f.Start()
		t.Cleanup(f.Close)
	}
	file := fmt.Sprintf(`
ios:
  - name: shop
    provider: apns
    topic: com.example.shop
    device_apps: [com.example.shop]
    host: %s
    key_file: %s
    key_id: KEY0000000
    team_id: TEAM123456
  - name: news
    provider: apns
    topic: com.example.news
    device_apps: [com.example.news]
    host: %s
    key_file: %s
    key_id: KEY0000001
    team_id: TEAM123456
android:
  - name: shop
    provider: fcm
    project_id: shop-project
    device_apps: [com.example.shop]
    credentials_file: %s
    endpoint: %s
  - name: news
    provider: fcm
    project_id: news-project
    device_apps: [com.example.news]
    credentials_file: %s
    endpoint: %s
`, apps["com.example.shop"].url, apps["com.example.shop"].key, apps["com.example.news"].url, apps["com.example.news"].key,
		writeSecret(t, dir, "shop.json", fcmShop.ServiceAccountJSON()), fcmShop.Endpoint(),
		writeSecret(t, dir, "news.json", fcmNews.ServiceAccountJSON()), fcmNews.Endpoint())
	s := startStack(t, stackOptions{providers: func(c *workersd.Config) {
		c.ProvidersFile = writeSecret(t, dir, "providers.yaml", []byte(file))
		c.ProviderEntry = func(ch delivery.Channel, name string, c *workersd.Config) {
			if ch == delivery.IOS {
				c.APNs.RootCAs = apps["com.example."+name].fake.RootCAs()
			}
		}
	}})

	ctx := context.Background()
	const (
		shopIOS     = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
		newsIOS     = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"
		shopAndroid = "fcm-registration-token:APA91b-shop_device"
		newsAndroid = "fcm-registration-token:APA91b-news_device"
	)
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "ivy"}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*heraldv1.Device{
		{UserId: "ivy", Platform: heraldv1.Platform_PLATFORM_IOS, Token: shopIOS, App: "com.example.shop"},
		{UserId: "ivy", Platform: heraldv1.Platform_PLATFORM_IOS, Token: newsIOS, App: "com.example.news"},
		{UserId: "ivy", Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: shopAndroid, App: "com.example.shop"},
		{UserId: "ivy", Platform: heraldv1.Platform_PLATFORM_ANDROID, Token: newsAndroid, App: "com.example.news"},
	} {
		if _, err := s.people.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: d}); err != nil {
			t.Fatal(err)
		}
	}
	req := userSend("ivy", "account")
	req.Channels = []heraldv1.Channel{heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID}
	res, err := s.notify.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	if len(n.Deliveries) != 4 {
		t.Fatalf("%d deliveries, want 4", len(n.Deliveries))
	}
	for _, d := range n.Deliveries {
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
			t.Errorf("%s delivery: %s %q (%s) via %q", d.Channel, d.State, d.Reason, d.LastError, d.Provider)
		}
	}

	// Each fake got its own app's device, with its own credential.
	for bundle, want := range map[string]string{"com.example.shop": shopIOS, "com.example.news": newsIOS} {
		got := apps[bundle].fake.Notifications()
		if len(got) != 1 || got[0].Token != want || got[0].Topic != bundle {
			t.Errorf("APNs for %s got %d pushes (%+v), want one to its own device with its topic", bundle, len(got), got)
		}
	}
	for name, c := range map[string]struct {
		fake  *fcmfake.Fake
		token string
	}{"shop": {fcmShop, shopAndroid}, "news": {fcmNews, newsAndroid}} {
		got := c.fake.Messages()
		if len(got) != 1 || got[0].Token != c.token {
			t.Errorf("FCM project %s got %d messages (%+v), want one to its own device", name, len(got), got)
		}
	}
	byProvider := map[string]int{}
	for _, d := range n.Deliveries {
		byProvider[d.Provider]++
	}
	for _, p := range []string{"apns/shop", "apns/news", "fcm/shop", "fcm/news"} {
		if byProvider[p] != 1 {
			t.Errorf("deliveries by provider %v, want one through %s", byProvider, p)
		}
	}
}

// TestCredentialsPerCallingApp: a providers file entry that lists an app's id carries that
// app's emails; other apps' go through the channel's default entry.
func TestCredentialsPerCallingApp(t *testing.T) {
	smtpFake := smtpfake.New(smtpfake.Config{Username: "herald", Password: "smtp-password", TLS: smtpfake.NoTLS})
	smtpFake.Start()
	t.Cleanup(smtpFake.Close)
	dir := t.TempDir()
	var shopID string // known once the notifier runs, before the workers start
	s := startStack(t, stackOptions{noWorkers: true, providers: func(c *workersd.Config) {
		c.ProvidersFile = writeSecret(t, dir, "providers.yaml", fmt.Appendf(nil, `
email:
  - name: shop
    provider: smtp
    apps: [%s]
    host: 127.0.0.1
    port: %d
    tls: none
    username: herald
    password_file: %s
    from: shop@example.com
  - name: default
    provider: sendgrid
    api_key_file: %s
    base_url: %s
    from: herald@example.com
`, shopID, smtpFake.Port(), writeSecret(t, dir, "smtp", []byte("smtp-password")),
			writeSecret(t, dir, "sendgrid", []byte(sendgridKey)), c.SendGridBaseURL))
	}})
	ctx := context.Background()
	app, err := heraldv1.NewAdminServiceClient(s.conn).CreateApp(ctx, &heraldv1.CreateAppRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	shopID = app.App.AppId
	s.startWorkers(t)

	shop := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), app.Key))
	for _, c := range []struct {
		name   string
		client heraldv1.NotificationServiceClient
		want   string
	}{{"the shop app", shop, "smtp/shop"}, {"another app", s.notify, "sendgrid/default"}} {
		res, err := c.client.Send(ctx, emailRequest("ada@example.com"))
		if err != nil {
			t.Fatal(err)
		}
		var d *heraldv1.Delivery
		waitFor(t, c.name+"'s email to be sent", 30*time.Second, func() (bool, error) {
			got, err := c.client.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
			if err != nil {
				return false, err
			}
			d = got.Notification.Deliveries[0]
			return d.State != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED && d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENDING &&
				d.State != heraldv1.DeliveryState_DELIVERY_STATE_RETRYING, nil
		})
		if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || d.Provider != c.want {
			t.Errorf("%s: %s via %q (%s), want SENT via %s", c.name, d.State, d.Provider, d.LastError, c.want)
		}
	}
	if got := smtpFake.Messages(); len(got) != 1 || got[0].From != "shop@example.com" {
		t.Errorf("SMTP got %d messages, want the shop app's one from its own address", len(got))
	}
}
