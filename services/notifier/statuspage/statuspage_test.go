package statuspage_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/heraldhq/herald/services/notifier/ops"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestPageShowsTheSnapshot(t *testing.T) {
	t.Parallel()
	rec := get(t, busy(), http.MethodGet, "/status")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d\n%s", rec.Code, rec.Body)
	}
	doc := parse(t, rec.Body.String())

	one(t, doc, "html", "lang", "en")
	one(t, doc, "body", "data-updated", "2026-03-14T09:00:00Z")
	if got := text(one(t, doc, "time", "id", "sampled")); got != "2026-03-14 09:00:00 UTC" {
		t.Errorf("sampled at %q", got)
	}

	queues := one(t, doc, "table", "id", "queues")
	if n := len(find(queues, "th", "scope", "col")); n != 9 {
		t.Errorf("the queues table has %d column headers, want 9", n)
	}
	for _, c := range []struct{ channel, field, want, class string }{
		{"email", "channel", "email", ""},
		{"email", "pending", "300", "num"},
		{"email", "in_flight", "20", "num"},
		{"email", "scheduled", "7", "num"},
		{"email", "retrying", "3", "num"},
		{"email", "oldest_age_seconds", "2m 05s", "num"},
		{"email", "send_rate", "41.3", "num"},
		{"email", "failure_rate", "0.3", "num warn"},
		{"email", "dead_letters", "2", "num warn"},
		{"sms", "pending", "50", "num"},
		{"sms", "oldest_age_seconds", "4s", "num"},
		{"sms", "send_rate", "12.0", "num"},
		{"sms", "failure_rate", "0.0", "num"},
		{"sms", "dead_letters", "0", "num"},
	} {
		cell := one(t, queues, "", "data-channel", c.channel, "data-field", c.field)
		if got := text(cell); got != c.want {
			t.Errorf("%s %s shows %q, want %q", c.channel, c.field, got, c.want)
		}
		if got, _ := attr(cell, "class"); got != c.class {
			t.Errorf("%s %s has class %q, want %q", c.channel, c.field, got, c.class)
		}
	}
	if row := one(t, queues, "th", "data-channel", "email"); row.Parent.Data != "tr" {
		t.Error("the channel name is not a row header")
	}

	// The depth axis runs to 400 (email peaks at 320); time runs 15 minutes to the right
	// edge of the plot at x=344, depth from y=170 (zero) up to y=10.
	chart := one(t, doc, "svg", "id", "chart")
	if got, _ := attr(chart, "role"); got != "img" {
		t.Errorf("the chart's role is %q", got)
	}
	if got, _ := attr(chart, "aria-labelledby"); got != "chart-title chart-desc" {
		t.Errorf("the chart is labelled by %q", got)
	}
	if got, want := text(one(t, chart, "desc", "id", "chart-desc")), "Latest queue depth: email 320, sms 55. The scale runs from 0 to 400."; got != want {
		t.Errorf("the chart's description is %q, want %q", got, want)
	}
	var ticks []string
	for _, n := range find(chart, "text", "class", "y") {
		ticks = append(ticks, text(n))
	}
	if got := strings.Join(ticks, " "); got != "0 100 200 300 400" {
		t.Errorf("depth axis labels %q", got)
	}
	for _, label := range []string{"−15 min", "−10 min", "−5 min", "now", "time", "deliveries waiting"} {
		if !strings.Contains(text(chart), label) {
			t.Errorf("the chart lacks the axis label %q", label)
		}
	}
	lines := find(chart, "polyline")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want one per channel", len(lines))
	}
	for i, c := range []struct{ channel, class, first, last string }{
		{"email", "s0", "50.0,162.0", "344.0,42.0"},
		{"sms", "s1", "50.0,148.0", "344.0,148.0"},
	} {
		if got, _ := attr(lines[i], "data-channel"); got != c.channel {
			t.Errorf("line %d is %q's, want %q's", i, got, c.channel)
		}
		if got, _ := attr(lines[i], "class"); got != c.class {
			t.Errorf("%s's line has class %q, want %q", c.channel, got, c.class)
		}
		points, _ := attr(lines[i], "points")
		pts := strings.Fields(points)
		if len(pts) != 31 || pts[0] != c.first || pts[30] != c.last {
			t.Errorf("%s's line: %d points from %s to %s, want 31 from %s to %s", c.channel, len(pts), pts[0], pts[len(pts)-1], c.first, c.last)
		}
	}
	if got, _ := attr(one(t, chart, "text", "id", "chart-empty"), "display"); got != "none" {
		t.Errorf("the chart shows its no-data note (display %q)", got)
	}
	legend := one(t, doc, "ul", "id", "legend")
	if got := text(one(t, legend, "li", "data-channel", "email")); got != "email: 320" {
		t.Errorf("email's legend entry %q", got)
	}

	dead := one(t, doc, "table", "id", "dead-letters")
	row := one(t, dead, "tr", "data-channel", "email", "data-reason", "invalid address")
	if got := text(one(t, row, "td", "data-field", "count")); got != "2" {
		t.Errorf("email dead letters for invalid address: %q", got)
	}

	circuits := one(t, doc, "table", "id", "circuits")
	half := one(t, circuits, "tr", "data-provider", "twilio")
	for name, want := range map[string]string{"class": "state-half-open", "data-state": "half-open", "data-channel": "sms", "data-worker": "workers-sms-0"} {
		if got, _ := attr(half, name); got != want {
			t.Errorf("twilio's circuit row has %s %q, want %q", name, got, want)
		}
	}
	if got := text(one(t, half, "td", "data-field", "updated")); got != "2026-03-14 08:59:55 UTC" {
		t.Errorf("twilio's circuit reported at %q", got)
	}
	if got := text(one(t, doc, "span", "id", "open-circuits")); got != "(0 open)" {
		t.Errorf("open circuits %q", got)
	}
}

func TestPageHighlightsOpenCircuits(t *testing.T) {
	t.Parallel()
	s := busy()
	s.Circuits[1].State = "open"
	doc := parse(t, get(t, s, http.MethodGet, "/status").Body.String())
	row := one(t, doc, "tr", "data-provider", "twilio")
	if got, _ := attr(row, "class"); got != "state-open" {
		t.Errorf("the open circuit's row has class %q", got)
	}
	badge := one(t, doc, "span", "id", "open-circuits")
	if got, _ := attr(badge, "class"); text(badge) != "(1 open)" || got != "count warn" {
		t.Errorf("open circuits %q (class %q)", text(badge), got)
	}
}

// TestPageMarksActiveCredential: of a channel's several credentials, the one that last took a
// message is marked active.
func TestPageMarksActiveCredential(t *testing.T) {
	t.Parallel()
	s := busy()
	s.Circuits = append(s.Circuits,
		ops.Circuit{Channel: "email", Provider: "sendgrid/primary", Worker: "w-1", State: "open", Updated: t0},
		ops.Circuit{Channel: "email", Provider: "smtp/backup", Worker: "w-1", State: "closed", Updated: t0, Active: true})
	doc := parse(t, get(t, s, http.MethodGet, "/status").Body.String())
	for provider, want := range map[string]string{"sendgrid/primary": "sendgrid/primary", "smtp/backup": "smtp/backup (active)"} {
		row := one(t, doc, "tr", "data-provider", provider)
		if got := text(one(t, row, "td", "data-field", "provider")); got != want {
			t.Errorf("provider cell %q, want %q", got, want)
		}
	}
}

// TestPageEscapes feeds markup through every string of a snapshot: it must come out as the
// same text, never as elements or attributes.
func TestPageEscapes(t *testing.T) {
	t.Parallel()
	const (
		channel  = `<script>alert("channel")</script>`
		reason   = `"><img src=x onerror=alert(1)>`
		provider = `' onmouseover='alert(2)`
		worker   = `</table><b>worker</b>`
		state    = `open" data-x="1`
	)
	s := ops.Snapshot{
		Latest:      ops.Sample{Time: t0, Channels: []ops.ChannelSample{depth(channel, 1, 2)}},
		History:     []ops.Sample{{Time: t0, Channels: []ops.ChannelSample{depth(channel, 1, 2)}}},
		DeadLetters: []ops.DeadLetterGroup{{Channel: channel, Reason: reason, Count: 1}},
		Circuits:    []ops.Circuit{{Channel: channel, Provider: provider, Worker: worker, State: state, Updated: t0}},
	}
	body := get(t, s, http.MethodGet, "/status").Body.String()
	for _, bad := range []string{"<img", "<b>", `alert("channel")</script>`, "onmouseover='", `data-x="1"`} {
		if strings.Contains(body, bad) {
			t.Errorf("the page contains %s unescaped", bad)
		}
	}
	doc := parse(t, body)
	if n := len(find(doc, "script")); n != 1 {
		t.Errorf("%d scripts in the page, want its own one", n)
	}
	if n := len(find(doc, "img")) + len(find(doc, "b")); n != 0 {
		t.Errorf("%d injected elements", n)
	}
	if got := text(one(t, doc, "th", "data-channel", channel, "data-field", "channel")); got != channel {
		t.Errorf("the channel shows as %q", got)
	}
	one(t, doc, "polyline", "data-channel", channel)
	if got := text(one(t, doc, "td", "data-field", "reason")); got != reason {
		t.Errorf("the reason shows as %q", got)
	}
	row := one(t, doc, "tr", "data-provider", provider, "data-worker", worker, "data-state", state)
	if got := text(one(t, row, "td", "data-field", "worker")); got != worker {
		t.Errorf("the worker shows as %q", got)
	}
}

func TestPageWithoutSamples(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]ops.Snapshot{
		"nothing":    {},
		"no history": {Latest: ops.Sample{Time: t0, Channels: []ops.ChannelSample{depth("email", 3, 1)}}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := get(t, s, http.MethodGet, "/status")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d\n%s", rec.Code, rec.Body)
			}
			doc := parse(t, rec.Body.String())
			chart := one(t, doc, "svg", "id", "chart")
			if _, hidden := attr(one(t, chart, "text", "id", "chart-empty"), "display"); hidden {
				t.Error("the chart hides its no-data note")
			}
			for _, l := range find(chart, "polyline") {
				if p, _ := attr(l, "points"); p != "" {
					t.Errorf("a line with points %q", p)
				}
			}
			var ticks []string
			for _, n := range find(chart, "text", "class", "y") {
				ticks = append(ticks, text(n))
			}
			if got := strings.Join(ticks, " "); got != "0 1 2 3 4" {
				t.Errorf("depth axis labels %q", got)
			}
			for _, want := range []string{"No dead letters.", "No circuits reported."} {
				if !strings.Contains(text(doc), want) {
					t.Errorf("the page lacks %q", want)
				}
			}
			desc := text(one(t, chart, "desc", "id", "chart-desc"))
			if name == "nothing" {
				one(t, doc, "body", "data-updated", "")
				if !strings.Contains(text(doc), "No channels reported yet.") || desc != "No samples in the last 15 minutes." {
					t.Errorf("an empty snapshot shows no note; the chart says %q", desc)
				}
			} else if desc != "Latest queue depth: email 4. The scale runs from 0 to 4." {
				t.Errorf("the chart says %q", desc)
			}
		})
	}
}

func TestPageGolden(t *testing.T) {
	t.Parallel()
	body := get(t, busy(), http.MethodGet, "/status").Body.String()
	golden := filepath.Join("testdata", "busy.golden.html")
	if *update {
		if err := os.WriteFile(golden, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if body != string(want) {
		t.Errorf("the page differs from %s (go test -update rewrites it); got:\n%s", golden, body)
	}
}

func TestData(t *testing.T) {
	t.Parallel()
	s := busy()
	rec := get(t, s, http.MethodGet, "/status/data")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d\n%s", rec.Code, rec.Body)
	}
	var got ops.Snapshot
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("the JSON decodes to\n%+v\nwant\n%+v", got, s)
	}
	for _, field := range []string{`"latest":{"time":"2026-03-14T09:00:00Z"`, `"in_flight":20`, `"oldest_age_seconds":125.5`, `"dead_letters":[{"channel":"email","reason":"invalid address","count":2}]`, `"state":"half-open"`} {
		if !strings.Contains(rec.Body.String(), field) {
			t.Errorf("the JSON lacks %s", field)
		}
	}

	empty := get(t, ops.Snapshot{}, http.MethodGet, "/status/data").Body.String()
	if want := `{"latest":{"time":"0001-01-01T00:00:00Z","channels":[]},"history":[],"dead_letters":[],"circuits":[],"engagement":[]}`; empty != want {
		t.Errorf("an empty snapshot is %s, want %s", empty, want)
	}
}

var (
	scriptElement = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
	styleElement  = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
)

func TestHeaders(t *testing.T) {
	t.Parallel()
	for target, contentType := range map[string]string{
		"/status":      "text/html; charset=utf-8",
		"/status/data": "application/json",
	} {
		rec := get(t, busy(), http.MethodGet, target)
		h := rec.Header()
		for name, want := range map[string]string{
			"Content-Type":           contentType,
			"Cache-Control":          "no-store",
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", target, name, got, want)
			}
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: Content-Security-Policy %q lacks %q", target, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q allows something unsafe", target, csp)
		}
		if target != "/status" {
			continue
		}
		// The policy allows exactly the page's one script and one style sheet.
		body := rec.Body.String()
		for directive, re := range map[string]*regexp.Regexp{"script-src": scriptElement, "style-src": styleElement} {
			m := re.FindAllStringSubmatch(body, -1)
			if len(m) != 1 {
				t.Fatalf("%d elements for %s, want 1", len(m), directive)
			}
			sum := sha256.Sum256([]byte(m[0][1]))
			if want := directive + " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"; !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q does not say %q", csp, want)
			}
		}
		for _, bad := range []string{" src=", " href=", " style=", "<link", "<iframe", "http://", "https://"} {
			if strings.Contains(strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""), bad) {
				t.Errorf("the page contains %q: it must load nothing from elsewhere nor need an inline style attribute", bad)
			}
		}
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		method, target string
		want           int
	}{
		{http.MethodGet, "/status", http.StatusOK},
		{http.MethodHead, "/status", http.StatusOK},
		{http.MethodGet, "/status/data", http.StatusOK},
		{http.MethodPost, "/status", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/status/data", http.StatusMethodNotAllowed},
		{http.MethodGet, "/status/other", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	} {
		if got := get(t, busy(), c.method, c.target).Code; got != c.want {
			t.Errorf("%s %s answered %d, want %d", c.method, c.target, got, c.want)
		}
	}
}
