// Package browsertest starts a real headless Chromium for browser tests (Debian's chromium,
// which .ci/run installs), driven with chromedp.
package browsertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is where Debian installs the browser.
const Chromium = "/usr/bin/chromium"

// New starts a headless Chromium with a fresh profile, gone when the test ends, that emulates
// a phone width CSS pixels wide (0: a desktop window). It fails the test, rather than skip it,
// when Chromium is missing: a skipped browser test would hide breakage in CI.
func New(t *testing.T, width int64) context.Context {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		t.Fatalf("the browser test needs Debian's Chromium at %s (apt-get install -y chromium): %v", Chromium, err)
	}
	// An upper bound only: every wait in a test ends as soon as its condition holds.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	// The profile must outlive the browser: t.Cleanup runs in reverse order, so the allocator,
	// registered after TempDir, stops Chromium (and waits for it) before the dir is removed.
	profile := t.TempDir()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(Chromium),
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
	var actions []chromedp.Action[chromedp.Void]
	if width > 0 {
		actions = append(actions, chromedp.EmulateViewport(width, 800, chromedp.EmulateMobile, chromedp.EmulatePortrait))
	}
	if err := chromedp.Do(bctx, actions...); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}
