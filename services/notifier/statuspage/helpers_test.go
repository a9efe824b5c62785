package statuspage_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/heraldhq/herald/services/notifier/ops"
	"github.com/heraldhq/herald/services/notifier/statuspage"
)

// source is a fake ops.Source whose snapshot a test replaces while the page reads it.
type source struct {
	mu   sync.Mutex
	snap ops.Snapshot
}

var _ ops.Source = (*source)(nil)

func (s *source) Snapshot() ops.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// set replaces the snapshot; the caller hands over snap and must not change it afterwards.
func (s *source) set(snap ops.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap = snap
}

// t0 is when busy's latest sample was taken.
var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

const every = 30 * time.Second

func depth(channel string, pending, inFlight int64) ops.ChannelSample {
	return ops.ChannelSample{Channel: channel, Pending: pending, InFlight: inFlight}
}

// busy is a notifier falling behind: over the last 15 minutes, sampled every 30 seconds, the
// email queue grew from 20 to 320 while SMS held at 55; one email dead letter reason, an
// SMS circuit half-open.
func busy() ops.Snapshot {
	var s ops.Snapshot
	for i := range 31 {
		s.History = append(s.History, ops.Sample{
			Time:     t0.Add(-15*time.Minute + time.Duration(i)*every),
			Channels: []ops.ChannelSample{depth("email", 10*int64(i), 20), depth("sms", 50, 5)},
		})
	}
	s.Latest = ops.Sample{Time: t0, Channels: []ops.ChannelSample{
		{Channel: "email", Pending: 300, InFlight: 20, Scheduled: 7, Retrying: 3, DeadLetters: 2,
			OldestAgeSeconds: 125.5, SendRate: 41.25, FailureRate: 0.25},
		{Channel: "sms", Pending: 50, InFlight: 5, OldestAgeSeconds: 4, SendRate: 12},
	}}
	s.History[len(s.History)-1] = s.Latest
	s.DeadLetters = []ops.DeadLetterGroup{{Channel: "email", Reason: "invalid address", Count: 2}}
	s.Circuits = []ops.Circuit{
		{Channel: "email", Provider: "sendgrid", Worker: "workers-email-0", State: "closed", Updated: t0.Add(-10 * time.Second)},
		{Channel: "sms", Provider: "twilio", Worker: "workers-sms-0", State: "half-open", Updated: t0.Add(-5 * time.Second)},
	}
	s.Engagement = []ops.EngagementRow{{Template: "shipped", Category: "account", Channel: "sms", Sent: 40, Clicked: 9, ClickRate: 0.225}}
	return s
}

// drained is busy five minutes on, after deliveries flowed: ten more samples in which email
// and SMS fall to zero and an iOS queue shows up, the samples older than 15 minutes gone, one
// more dead letter of each channel, and Twilio's circuit open.
func drained() ops.Snapshot {
	b := busy()
	var s ops.Snapshot
	end := t0.Add(10 * every)
	for _, smp := range b.History {
		if !smp.Time.Before(end.Add(-15 * time.Minute)) {
			s.History = append(s.History, smp)
		}
	}
	for i := int64(1); i <= 10; i++ {
		left := 10 - i
		s.History = append(s.History, ops.Sample{
			Time:     t0.Add(time.Duration(i) * every),
			Channels: []ops.ChannelSample{depth("email", 30*left, 2*left), depth("sms", 5*left, left/2), depth("ios", 0, 0)},
		})
	}
	s.Latest = ops.Sample{Time: end, Channels: []ops.ChannelSample{
		{Channel: "email", DeadLetters: 3, SendRate: 2.5},
		{Channel: "sms", DeadLetters: 1, SendRate: 0.5, FailureRate: 0.5},
		{Channel: "ios"},
	}}
	s.History[len(s.History)-1] = s.Latest
	s.DeadLetters = []ops.DeadLetterGroup{
		{Channel: "email", Reason: "invalid address", Count: 3},
		{Channel: "sms", Reason: "number unreachable", Count: 1},
	}
	s.Circuits = []ops.Circuit{
		{Channel: "email", Provider: "sendgrid", Worker: "workers-email-0", State: "closed", Updated: end.Add(-3 * time.Second)},
		{Channel: "sms", Provider: "twilio", Worker: "workers-sms-0", State: "open", Updated: end.Add(-1 * time.Second)},
	}
	return s
}

func newLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// get serves one request from a status page over snap.
func get(t *testing.T, snap ops.Snapshot, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	src := &source{}
	src.set(snap)
	rec := httptest.NewRecorder()
	statuspage.New(src, newLogger(t)).ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// fetch reads url's body.
func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

func parse(t *testing.T, body string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse the page: %v", err)
	}
	return doc
}

// find returns the elements under n named tag (any, if empty) that carry every attribute
// of attrs, given as name, value pairs.
func find(n *html.Node, tag string, attrs ...string) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type != html.ElementNode || (tag != "" && d.Data != tag) {
			continue
		}
		ok := true
		for i := 0; i+1 < len(attrs); i += 2 {
			if v, has := attr(d, attrs[i]); !has || v != attrs[i+1] {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// one is the only element find finds; it fails the test otherwise.
func one(t *testing.T, n *html.Node, tag string, attrs ...string) *html.Node {
	t.Helper()
	found := find(n, tag, attrs...)
	if len(found) != 1 {
		t.Fatalf("found %d <%s %v>, want 1", len(found), tag, attrs)
	}
	return found[0]
}

func attr(n *html.Node, name string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val, true
		}
	}
	return "", false
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}
