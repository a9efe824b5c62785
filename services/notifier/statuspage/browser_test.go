package statuspage_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/services/notifier/statuspage"
)

// chromium is Debian's browser; .ci/run installs it.
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium with a fresh profile, gone when the test ends, that
// emulates a phone 360 CSS pixels wide. It fails the test, rather than skip it, when Chromium
// is missing.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the browser test needs Debian's Chromium at %s (apt-get install -y chromium): %v", chromium, err)
	}
	// An upper bound only: every wait below ends as soon as its condition holds.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	// The profile must outlive the browser: t.Cleanup runs in reverse order, so the allocator,
	// registered after TempDir, stops Chromium (and waits for it) before the dir is removed.
	profile := t.TempDir()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(360, 800, chromedp.EmulateMobile, chromedp.EmulatePortrait)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// collect reads, from a document, everything the page shows that the script updates, keyed
// by what it is. Run on the live page and on a fresh server rendering of the same snapshot, it
// shows whether the script draws what the server draws.
const collect = `(doc) => {
	const out = {};
	const q = (sel) => Array.from(doc.querySelectorAll(sel));
	const cls = (n) => n.getAttribute('class') || '';
	out['queues order'] = q('#queues tbody tr').map((tr) => tr.dataset.channel || cls(tr)).join(' ');
	for (const c of q('#queues [data-field]')) out['queue ' + c.dataset.channel + ' ' + c.dataset.field] = c.textContent + ' ' + cls(c);
	out['lines order'] = q('#series polyline').map((p) => p.dataset.channel).join(' ');
	for (const p of q('#series polyline')) out['line ' + p.dataset.channel] = cls(p) + ' ' + p.getAttribute('points');
	for (const li of q('#legend li')) out['legend ' + li.dataset.channel] = cls(li.querySelector('line')) + ' ' + li.textContent;
	out['ticks'] = q('#chart text[data-tick]').map((t) => t.textContent).join(' ');
	out['desc'] = doc.getElementById('chart-desc').textContent;
	out['no data note'] = String(doc.getElementById('chart-empty').getAttribute('display'));
	out['dead letters'] = q('#dead-letters tbody tr').map((tr) => tr.textContent).join(' | ');
	for (const tr of q('#circuits tbody tr')) {
		out['circuit ' + tr.dataset.provider] = [cls(tr), tr.dataset.state, tr.textContent,
			String(tr.querySelector('time') && tr.querySelector('time').getAttribute('datetime'))].join(' ');
	}
	out['open circuits'] = doc.getElementById('open-circuits').textContent + ' ' + cls(doc.getElementById('open-circuits'));
	const sampled = doc.getElementById('sampled');
	out['sampled'] = sampled.textContent + ' ' + sampled.getAttribute('datetime');
	out['updated'] = doc.body.dataset.updated;
	return out;
}`

func TestBrowserChartFollowsDeliveries(t *testing.T) {
	t.Parallel()
	src := &source{}
	src.set(busy())
	srv := httptest.NewServer(statuspage.New(src, newLogger(t))) // on loopback
	t.Cleanup(srv.Close)

	ctx := browser(t)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	cell := func(channel, field string) string {
		t.Helper()
		return eval(`document.querySelector('#queues [data-channel="` + channel + `"][data-field="` + field + `"]').textContent`)
	}
	points := func() map[string]string {
		t.Helper()
		m, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
			`Object.fromEntries(Array.from(document.querySelectorAll('#series polyline'), (p) => [p.dataset.channel, p.getAttribute('points')]))`))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// waitUpdated waits until the script has drawn the sample taken at sampled.
	waitUpdated := func(sampled time.Time) {
		t.Helper()
		want, _ := json.Marshal(sampled.Format(time.RFC3339Nano))
		run("wait for the page to show the sample of "+string(want),
			chromedp.Poll[chromedp.Void](`document.body.dataset.updated === `+string(want),
				chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(time.Minute)))
	}
	// sameAsServer checks that the live page shows what the server renders now.
	sameAsServer := func() {
		t.Helper()
		page, err := json.Marshal(fetch(t, srv.URL+"/status"))
		if err != nil {
			t.Fatal(err)
		}
		live, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(`+collect+`)(document)`))
		if err != nil {
			t.Fatal(err)
		}
		rendered, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
			`(`+collect+`)(new DOMParser().parseFromString(`+string(page)+`, 'text/html'))`))
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range rendered {
			if got, ok := live[k]; !ok || got != want {
				t.Errorf("%s: the script shows %q, the server %q", k, got, want)
			}
		}
		for k, got := range live {
			if _, ok := rendered[k]; !ok {
				t.Errorf("%s: the script shows %q, the server nothing", k, got)
			}
		}
	}

	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(srv.URL+"/status"))
	if err != nil {
		t.Fatalf("open the page: %v", err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("the page answered %d", resp.Status)
	}
	run("wait for the chart", chromedp.WaitVisible(chromedp.CSS(`#chart`)))

	// It renders: the table's numbers, a line per channel.
	if got := cell("email", "pending") + " " + cell("sms", "pending") + " " + cell("email", "failure_rate"); got != "300 50 0.3" {
		t.Errorf("pending email and SMS, email failure rate = %q, want %q", got, "300 50 0.3")
	}
	before := points()
	if len(before) != 2 || strings.Count(before["email"], ",") != 31 || strings.Count(before["sms"], ",") != 31 {
		t.Fatalf("lines before: %v", before)
	}

	// The script runs and the style sheet applies (both past the Content-Security-Policy),
	// and the page fits a phone: the tables scroll inside their regions, not the page.
	run("wait for the script", chromedp.Poll[chromedp.Void](
		`document.getElementById('live').textContent === 'It updates every 2 seconds.'`, chromedp.WithPollingTimeout(time.Minute)))
	layout := eval(`[getComputedStyle(document.querySelector('main')).maxWidth,
		getComputedStyle(document.querySelector('#series polyline')).strokeWidth,
		window.innerWidth, document.documentElement.scrollWidth,
		Math.round(document.getElementById('chart').getBoundingClientRect().right) <= window.innerWidth].join(' ')`)
	if want := "1024px 2.5px 360 360 true"; layout != want {
		t.Errorf("max width, line width, window, page width, chart fits = %q, want %q: the style sheet "+
			"did not apply, or the page is wider than a 360px screen", layout, want)
	}

	// Deliveries flow: five minutes of samples in which the queues drain.
	next := drained()
	src.set(next)
	waitUpdated(next.Latest.Time)

	if got := cell("email", "pending") + " " + cell("sms", "pending") + " " + cell("ios", "pending") + " " + cell("sms", "failure_rate"); got != "0 0 0 0.5" {
		t.Errorf("pending email, SMS and iOS, SMS failure rate = %q, want %q", got, "0 0 0 0.5")
	}
	after := points()
	if len(after) != 3 {
		t.Fatalf("lines after: %v", after)
	}
	for _, ch := range []string{"email", "sms"} {
		if after[ch] == before[ch] {
			t.Errorf("%s's line did not move: %s", ch, after[ch])
		}
		// The line ends at the right edge of the plot, at depth zero.
		pts := strings.Fields(after[ch])
		if last := pts[len(pts)-1]; last != "344.0,170.0" {
			t.Errorf("%s's line ends at %s, want 344.0,170.0 (now, empty)", ch, last)
		}
		// It falls through the last ten samples: y grows as the depth drops.
		var ys []float64
		for _, p := range pts[len(pts)-11:] {
			_, y, _ := strings.Cut(p, ",")
			f, err := strconv.ParseFloat(y, 64)
			if err != nil {
				t.Fatalf("%s's line has the point %q", ch, p)
			}
			ys = append(ys, f)
		}
		if !slices.IsSorted(ys) || ys[0] == ys[len(ys)-1] {
			t.Errorf("%s's queue does not fall over the last samples: y = %v", ch, ys)
		}
	}
	if got := eval(`document.getElementById('chart-desc').textContent`); got != "Latest queue depth: email 0, sms 0, ios 0. The scale runs from 0 to 400." {
		t.Errorf("the chart's description is %q", got)
	}
	if got := eval(`document.querySelector('#circuits tr[data-provider="twilio"]').className + ' ' + document.getElementById('open-circuits').textContent`); got != "state-open (1 open)" {
		t.Errorf("twilio's circuit: %q", got)
	}
	if got := eval(`String(document.getElementById('poll-error').hidden)`); got != "true" {
		t.Error("the page shows a polling failure")
	}
	sameAsServer()

	// When the notifier goes away, the page says its figures are stale.
	srv.Close()
	run("wait for the failure note", chromedp.Poll[chromedp.Void](
		`!document.getElementById('poll-error').hidden`, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(time.Minute)))
	if got := eval(`document.getElementById('poll-error').textContent`); !strings.HasPrefix(got, "Live updates failed") {
		t.Errorf("failure note %q", got)
	}
}
