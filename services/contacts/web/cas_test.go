package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
)

var etagInput = regexp.MustCompile(`<input type="hidden" name="etag" value="([^"]*)">`)

// etagOf returns the etag the page's form carries.
func etagOf(t *testing.T, body string) string {
	t.Helper()
	m := etagInput.FindStringSubmatch(body)
	if m == nil || m[1] == "" {
		t.Fatalf("no etag in the form:\n%s", body)
	}
	return m[1]
}

// changedElsewhere checks the answer to a save whose page showed settings changed since: the
// page, 409, saying so, showing the settings as they are now with their etag.
func changedElsewhere(t *testing.T, e *env, form url.Values, now *preference.Settings) string {
	t.Helper()
	body := checkPage(t, e.postForm("/preferences", form), http.StatusConflict)
	if !strings.Contains(body, `<p class="error" role="alert" id="form-error">Your settings were changed somewhere else`) ||
		!strings.Contains(body, "your changes were not saved") {
		t.Errorf("the page does not say the settings changed elsewhere:\n%s", body)
	}
	if got, want := e.settings(t, userID), asJSON(t, now); got != want {
		t.Fatalf("settings = %s, want %s: the stale save changed them", got, want)
	}
	_, version, _, err := e.svc.GetSettings(ctxT(t), userID)
	if err != nil {
		t.Fatal(err)
	}
	if etag := etagOf(t, body); etag != version.Etag() || etag == form.Get("etag") {
		t.Errorf("the page carries etag %s, want the current %s", etag, version.Etag())
	}
	return body
}

// TestSavePreferencesChangedElsewhere: a page whose settings changed after it was served (in
// another window, by an unsubscribe link) saves nothing: it shows the settings as they are now
// and says why, and saving that page applies the user's change on top of the other.
func TestSavePreferencesChangedElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.prefToken(userID)
	etag := etagOf(t, checkPage(t, e.get("/preferences?token="+tok), http.StatusOK))

	// Elsewhere, SMS is turned off.
	elsewhere := &preference.Settings{OptedOutChannels: []delivery.Channel{delivery.SMS}}
	e.updateSettings(t, userID, elsewhere)

	// Here, the page still shows SMS on; the user turns marketing off and saves.
	form := allOn(tok)
	form.Set("etag", etag)
	form["receive"] = []string{"account", "product"}
	body := changedElsewhere(t, e, form, elsewhere)
	if checked(switchTag(t, body, "ch-sms")) || !checked(switchTag(t, body, "cat-1")) {
		t.Errorf("the page does not show the settings as they are now:\n%s", body)
	}

	// The page shown now has the current etag: the user makes the change again and it saves,
	// keeping SMS off.
	form = allOn(tok)
	form.Set("etag", etagOf(t, body))
	form["channel"] = []string{"email", "push", "inbox"}
	form["receive"] = []string{"account", "product"}
	if rec := e.postForm("/preferences", form); rec.Code != http.StatusSeeOther {
		t.Fatalf("status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	yes := true
	both := &preference.Settings{OptedOutChannels: []delivery.Channel{delivery.SMS},
		Categories: map[string]preference.CategorySetting{"marketing": {OptedOut: &yes}}}
	if got, want := e.settings(t, userID), asJSON(t, both); got != want {
		t.Fatalf("settings = %s, want %s", got, want)
	}

	// The etag that was current before that save is stale now.
	form.Set("pause", "on")
	changedElsewhere(t, e, form, both)

	// A form whose etag was not made by the page is not read.
	form.Set("etag", "x")
	checkPage(t, e.postForm("/preferences", form), http.StatusBadRequest)
	if got, want := e.settings(t, userID), asJSON(t, both); got != want {
		t.Fatalf("settings = %s, want %s", got, want)
	}
}

// racer is a contacts.Store on which another writer changes the settings just before the first
// conditional update of them lands: a save elsewhere between a page's read and its write.
type racer struct {
	contacts.Store
	change *preference.Settings
	once   sync.Once
}

func (r *racer) UpdateSettings(ctx context.Context, userID string, st *preference.Settings, ifVersion contacts.Version) (contacts.Version, error) {
	if ifVersion != contacts.AnyVersion {
		var err error
		r.once.Do(func() { _, err = r.Store.UpdateSettings(ctx, userID, r.change, contacts.AnyVersion) })
		if err != nil {
			return 0, err
		}
	}
	return r.Store.UpdateSettings(ctx, userID, st, ifVersion)
}

func racing(change *preference.Settings) func(contacts.Store) contacts.Store {
	return func(s contacts.Store) contacts.Store { return &racer{Store: s, change: change} }
}

// TestSavePreferencesRace: settings changed elsewhere after a save read them, before it wrote
// them, are not overwritten either.
func TestSavePreferencesRace(t *testing.T) {
	t.Parallel()
	paused := &preference.Settings{GlobalOptOut: true}
	e := newEnvOn(t, racing(paused))
	tok := e.prefToken(userID)
	form := allOn(tok)
	form.Set("etag", etagOf(t, checkPage(t, e.get("/preferences?token="+tok), http.StatusOK)))
	form["receive"] = []string{"account", "product"}
	body := changedElsewhere(t, e, form, paused)
	if !checked(switchTag(t, body, "pause")) {
		t.Errorf("the page does not show the pause made elsewhere:\n%s", body)
	}
}

// TestUnsubscribeRace: an unsubscribe whose read of the settings is overtaken by another
// change reads them again, and keeps that change.
func TestUnsubscribeRace(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, racing(&preference.Settings{GlobalOptOut: true}))
	rec := e.postForm("/unsubscribe?token="+url.QueryEscape(e.unsubToken(linktoken.Claims{UserID: userID, Category: "marketing"})), oneClick)
	checkPage(t, rec, http.StatusOK)
	want := &preference.Settings{GlobalOptOut: true, Categories: map[string]preference.CategorySetting{
		"marketing": {OptedOutChannels: []delivery.Channel{delivery.Email}}}}
	if got := e.settings(t, userID); got != asJSON(t, want) {
		t.Fatalf("settings = %s, want %s", got, asJSON(t, want))
	}
}
