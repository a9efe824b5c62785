package e2e

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/heraldhq/herald/internal/fakes/twiliofake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
)

func ptrOr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// linksBase is the short links' public base URL in these tests: a proxy's name. The tests reach
// the notifier's HTTP port directly with the link's path.
const linksBase = "http://links.test"

var shortLink = regexp.MustCompile(regexp.QuoteMeta(linksBase) + `/l/[0-9A-Za-z]{11}`)

const browserUA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"

// follow requests a short link as a browser would, without following the redirect.
func follow(t *testing.T, s *stack, link, userAgent string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.notifier.HTTPAddr()+strings.TrimPrefix(link, linksBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// TestShortLinks: an SMS template's link reaches Twilio as a short link; following it gives 302
// to the original URL and one click for the delivery; a second click within the window and a
// link previewer's do not count as a person's; an unknown code is 404. In email, an opted-out
// link and a mailto: link are left as they are.
func TestShortLinks(t *testing.T) {
	twilioFake := twiliofake.New(twilioSID, twilioAuth)
	twilioURL := twilioFake.Start()
	t.Cleanup(twilioFake.Close)
	s := startStack(t, stackOptions{
		providers: func(c *workersd.Config) {
			c.SMSProvider = "twilio"
			c.Twilio.AccountSID, c.Twilio.AuthToken, c.Twilio.From, c.Twilio.BaseURL = twilioSID, twilioAuth, "+14155550199", twilioURL
		},
		links: &notifierd.LinksConfig{Key: "e2e short link key, 16+ bytes", BaseURL: linksBase, Retention: 24 * time.Hour,
			Rate: 1000, Burst: 1000, Window: time.Minute, Prefetch: 100 * time.Millisecond, FlushInterval: 50 * time.Millisecond},
	})
	ctx := context.Background()
	const long = "https://shop.example.com/orders/42?ref=sms&t=secret-token"
	if _, err := s.tmpl.CreateTemplate(ctx, &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: "shipped", Parts: &heraldv1.TemplateParts{SmsBody: "Order {{.order}} shipped: " + long + ". Help: {{notrack \"https://help.example.com\"}}"},
	}}); err != nil {
		t.Fatal(err)
	}
	data, err := structpb.NewStruct(map[string]any{"order": "42"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Phone: "+14155550100"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Template{Template: &heraldv1.TemplateRef{Name: "shipped"}},
		Data:      data,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := waitFinal(t, s, res.NotificationId)
	d := n.Deliveries[0]
	if d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("SMS delivery %s (%s)", d.State, d.LastError)
	}
	msgs := twilioFake.Messages()
	if len(msgs) != 1 {
		t.Fatalf("Twilio received %d messages", len(msgs))
	}
	link := shortLink.FindString(msgs[0].Body)
	if want := "Order 42 shipped: " + link + ". Help: https://help.example.com"; link == "" || msgs[0].Body != want {
		t.Fatalf("SMS body %q, want %q with a short link", msgs[0].Body, want)
	}

	// Clicks closer to the send than the prefetch window are a scanner's: wait it out.
	var sentAt time.Time
	if err := s.pool.QueryRow(ctx, `SELECT sent_at FROM delivery.deliveries WHERE id = $1`, d.DeliveryId).Scan(&sentAt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch window to pass", 10*time.Second, func() (bool, error) {
		return time.Since(sentAt) > 200*time.Millisecond, nil
	})

	r := follow(t, s, link, browserUA)
	if r.StatusCode != http.StatusFound || r.Header.Get("Location") != long || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("first click: %s, Location %q, Cache-Control %q", r.Status, r.Header.Get("Location"), r.Header.Get("Cache-Control"))
	}
	clicks := func(bot bool) (int, error) {
		var n int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifier.link_clicks WHERE delivery_id = $1 AND (bot <> '') = $2`,
			d.DeliveryId, bot).Scan(&n)
		return n, err
	}
	waitFor(t, "the click to be written", 10*time.Second, func() (bool, error) {
		n, err := clicks(false)
		return n == 1, err
	})
	if r := follow(t, s, link, browserUA); r.StatusCode != http.StatusFound {
		t.Fatalf("second click: %s", r.Status)
	}
	if r := follow(t, s, link, "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"); r.StatusCode != http.StatusFound {
		t.Fatalf("previewer: %s", r.Status)
	}
	waitFor(t, "the previewer's click to be written", 10*time.Second, func() (bool, error) {
		n, err := clicks(true)
		return n == 1, err
	})
	// The Recorder takes clicks in order: the person's second click was judged before the bot's
	// was written.
	if n, err := clicks(false); err != nil || n != 1 {
		t.Errorf("%d clicks by people (%v), want 1: the second is within the window", n, err)
	}
	if got := metric(t, s, `herald_link_clicks_total{category="account",channel="sms",kind="duplicate",template="shipped"}`); got != 1 {
		t.Errorf("duplicate clicks metric = %v, want 1", got)
	}
	stats, err := heraldv1.NewAdminServiceClient(s.conn).GetDeliveryStats(ctx, &heraldv1.GetDeliveryStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range stats.Stats {
		if st.Template == "shipped" && st.Channel == heraldv1.Channel_CHANNEL_SMS {
			found = st.Sent == 1 && st.Clicked == 1
		}
	}
	if !found {
		t.Errorf("stats %v: want shipped/sms sent 1, clicked 1", stats.Stats)
	}

	for _, code := range []string{"AAAAAAAAAAA", "short", strings.Repeat("z", 11), link[len(link)-11:len(link)-1] + "!"} {
		if r := follow(t, s, linksBase+"/l/"+code, browserUA); r.StatusCode != http.StatusNotFound {
			t.Errorf("code %q: %s, want 404", code, r.Status)
		}
	}

	// Email: tracked, opted-out and mailto: links.
	html := `<p><a href="https://shop.example.com/sale">Sale</a> <a data-herald-notrack href="https://shop.example.com/terms?a=1&amp;b=2">Terms</a> <a href="mailto:help@example.com">Mail us</a></p>`
	res, err = s.notify.Send(ctx, &heraldv1.SendRequest{
		Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Email: "ada@example.com"}}},
		Category:  "account",
		Message:   &heraldv1.SendRequest_Content{Content: &heraldv1.Content{Subject: "Sale", Html: html}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, res.NotificationId)
	var got string
	for _, m := range s.fake.Messages() {
		if m.Subject == "Sale" {
			got = m.HTML
		}
	}
	sale := shortLink.FindString(got)
	if want := `<p><a href="` + sale + `">Sale</a> <a href="https://shop.example.com/terms?a=1&amp;b=2">Terms</a> <a href="mailto:help@example.com">Mail us</a></p>`; sale == "" || got != want {
		t.Errorf("email HTML\n%s\nwant\n%s", got, want)
	}
	if r := follow(t, s, sale, browserUA); r.StatusCode != http.StatusFound || r.Header.Get("Location") != "https://shop.example.com/sale" {
		t.Errorf("email link: %s to %q", r.Status, r.Header.Get("Location"))
	}
	for _, line := range s.logs.lines() {
		if strings.Contains(line, "secret-token") || strings.Contains(line, "shop.example.com") {
			t.Errorf("a log line holds a long URL: %s", line)
		}
	}
}
