package web_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts/web"
)

// chromium is Debian's browser; .ci/run installs it.
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium with a fresh profile, gone when the test ends, that
// emulates a phone 360 CSS pixels wide (so the page's viewport meta tag matters). It fails the test, rather than skip it, when Chromium is missing.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the browser test needs Debian's Chromium at %s (apt-get install -y chromium): %v", chromium, err)
	}
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

func TestBrowserPreferencePage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux) // on loopback
	t.Cleanup(srv.Close)
	h := web.New(e.svc, web.Config{PublicURL: srv.URL, Signer: e.signer, Log: e.log})
	h.Register(mux)
	link, _, err := h.PreferenceLink(userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	prefix := srv.URL + "/preferences?token="
	token := strings.TrimPrefix(link, prefix)
	e.secrets = append(e.secrets, token)

	ctx := browser(t)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	isChecked := func(sel string) bool {
		t.Helper()
		on, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('`+sel+`').checked`))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return on
	}
	const (
		marketingEmail = `input[name="cat:marketing"][value="email"]`
		sms            = `#ch-sms`
	)

	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(link))
	if err != nil {
		t.Fatalf("open the link: %v", err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("the link answered %d", resp.Status)
	}
	run("wait for the form", chromedp.WaitVisible(chromedp.CSS(marketingEmail)))

	// The style sheet got past the Content-Security-Policy, and the page fits a phone.
	layout, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`[getComputedStyle(document.querySelector('main')).maxWidth,
		  getComputedStyle(document.querySelector('input[role=switch]')).appearance,
		  window.innerWidth, document.documentElement.scrollWidth].join(' ')`))
	if err != nil {
		t.Fatal(err)
	}
	if layout != "640px none 360 360" {
		t.Errorf("max width, switch appearance, window and page width = %q, want %q: the style sheet "+
			"did not apply, or the page is wider than a 360px screen", layout, "640px none 360 360")
	}

	if !isChecked(marketingEmail) || !isChecked(sms) {
		t.Fatal("a switch starts off")
	}
	// Marketing email off with a click, SMS off from the keyboard.
	run("click marketing email", chromedp.Click(chromedp.CSS(marketingEmail)))
	run("press space on SMS", chromedp.Focus(chromedp.CSS(sms)), chromedp.KeyEvent(" "))
	if isChecked(marketingEmail) || isChecked(sms) {
		t.Fatal("the click or the key did not turn the switch off")
	}

	resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`button[type=submit]`)))
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("save answered %d", resp.Status)
	}
	run("wait for the status", chromedp.WaitVisible(chromedp.CSS(`p[role=status]`)))
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p[role=status]`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(status, "Saved") {
		t.Errorf("status %q", status)
	}

	run("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(marketingEmail)))
	if isChecked(marketingEmail) || isChecked(sms) {
		t.Error("after a reload, a switch turned off shows on")
	}
	if !isChecked(`input[name="cat:product"][value="email"]`) {
		t.Error("after a reload, a switch left on shows off")
	}

	st, _, _, err := e.svc.GetSettings(ctxT(t), userID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Categories["marketing"].OptedOutChannels, []delivery.Channel{delivery.Email}) ||
		!slices.Equal(st.OptedOutChannels, []delivery.Channel{delivery.SMS}) || len(st.Categories) != 1 {
		t.Errorf("stored settings %+v", st)
	}

	// Changed elsewhere while the page is open: the save changes nothing, and the page says so
	// and shows the settings as they are now.
	paused := &preference.Settings{GlobalOptOut: true}
	e.updateSettings(t, userID, paused)
	run("click product email", chromedp.Click(chromedp.CSS(`input[name="cat:product"][value="email"]`)))
	resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`button[type=submit]`)))
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	if resp.Status != http.StatusConflict {
		t.Errorf("a save of settings changed elsewhere answered %d, want 409", resp.Status)
	}
	run("wait for the alert", chromedp.WaitVisible(chromedp.CSS(`p[role=alert]`)))
	alert, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p[role=alert]`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(alert, "Your settings were changed somewhere else") {
		t.Errorf("alert %q", alert)
	}
	if !isChecked(`#pause`) || !isChecked(marketingEmail) || !isChecked(sms) {
		t.Error("the page does not show the settings as they are now")
	}
	if got, want := e.settings(t, userID), asJSON(t, paused); got != want {
		t.Errorf("stored settings %s, want %s", got, want)
	}

	// A tampered link is refused.
	resp, err = chromedp.Run(ctx, chromedp.NavigateResponse(prefix+altered(token)))
	if err != nil {
		t.Fatalf("open the tampered link: %v", err)
	}
	if resp.Status != http.StatusForbidden {
		t.Errorf("the tampered link answered %d, want 403", resp.Status)
	}
	run("wait for the refusal", chromedp.WaitVisible(chromedp.CSS(`h1`)))
	heading, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`h1`)))
	if err != nil {
		t.Fatal(err)
	}
	if heading != "This link is not valid or has expired" {
		t.Errorf("tampered link shows %q", heading)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('input').length`)); err != nil || n != 0 {
		t.Errorf("the refusal page has %d inputs (%v)", n, err)
	}
}
