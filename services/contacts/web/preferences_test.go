package web_test

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts/web"
)

// badPreferenceTokens are the tokens the preference page refuses, each with its answer.
func badPreferenceTokens(e *env) []struct {
	name   string
	token  string
	status int
} {
	good := e.prefToken(userID)
	hour := time.Now().Add(time.Hour).Unix()
	return []struct {
		name   string
		token  string
		status int
	}{
		{"missing", "", http.StatusBadRequest},
		{"garbage", "not-a-token", http.StatusForbidden},
		{"forged", e.forger.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: userID, Expires: hour}), http.StatusForbidden},
		{"altered", altered(good), http.StatusForbidden},
		{"signature cut", good[:strings.LastIndexByte(good, '.')], http.StatusForbidden},
		{"expired", e.sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: userID, Expires: time.Now().Add(-time.Minute).Unix()}), http.StatusForbidden},
		{"unsubscribe token", e.sign(linktoken.Claims{Purpose: linktoken.Unsubscribe, UserID: userID}), http.StatusForbidden},
		{"unknown user", e.prefToken("nobody"), http.StatusForbidden},
		{"no user", e.sign(linktoken.Claims{Purpose: linktoken.Preferences, Expires: hour}), http.StatusForbidden},
	}
}

func TestPreferencesRefusesBadLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var refusal string // every 403 is the same page
	for _, tc := range badPreferenceTokens(e) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				var rec = e.get("/preferences?token=" + url.QueryEscape(tc.token))
				if method == http.MethodPost {
					// A form that would pause everything, were the token good.
					rec = e.postForm("/preferences", url.Values{"token": {tc.token}, "pause": {"on"}})
				}
				body := checkPage(t, rec, tc.status)
				if tc.status == http.StatusForbidden {
					if refusal == "" {
						refusal = body
					}
					if body != refusal {
						t.Errorf("refusals differ:\n%s\n---\n%s", body, refusal)
					}
					if !strings.Contains(body, "not valid or has expired") {
						t.Errorf("refusal does not explain:\n%s", body)
					}
				}
				if strings.Contains(body, "Notification settings") {
					t.Errorf("refused link shows the settings:\n%s", body)
				}
				if got := e.settings(t, userID); got != "{}" {
					t.Errorf("settings = %s, want untouched", got)
				}
			})
		}
	}
}

var (
	inputTag = regexp.MustCompile(`<input [^>]*>`)
	idAttr   = regexp.MustCompile(` id="([^"]+)"`)
)

// switchTag returns the <input> whose id is id.
func switchTag(t *testing.T, body, id string) string {
	t.Helper()
	for _, tag := range inputTag.FindAllString(body, -1) {
		if strings.Contains(tag, ` id="`+id+`"`) {
			return tag
		}
	}
	t.Fatalf("no input with id %q in\n%s", id, body)
	return ""
}

func checked(tag string) bool { return strings.Contains(tag, " checked") }

func TestPreferencesPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := checkPage(t, e.get("/preferences?token="+e.prefToken(userID)), http.StatusOK)

	// Accessible: every control is labelled, checkboxes are switches, groups have legends.
	for _, tag := range inputTag.FindAllString(body, -1) {
		if strings.Contains(tag, `type="hidden"`) {
			continue
		}
		m := idAttr.FindStringSubmatch(tag)
		if m == nil || !strings.Contains(body, `<label for="`+m[1]+`">`) {
			t.Errorf("control without a label: %s", tag)
		}
		if strings.Contains(tag, `type="checkbox"`) && !strings.Contains(tag, `role="switch"`) {
			t.Errorf("checkbox is not a switch: %s", tag)
		}
	}
	if f, l := strings.Count(body, "<fieldset>"), strings.Count(body, "<legend>"); f < 4+4 || f != l {
		t.Errorf("%d fieldsets, %d legends", f, l)
	}
	for _, want := range []string{
		"Pause all notifications", "only messages that can&#39;t be turned off: Security",
		"Email", "Push notifications", "Text messages (SMS)",
		"<legend>Account</legend>", "Activity on your account: receipts, changes, reminders",
		"<legend>Marketing</legend>", "Offers and promotions", "<legend>Product</legend>", "<legend>Security</legend>",
		`type="time"`, "Europe/Lisbon", `<button type="submit">Save</button>`,
		`<form method="post" action="preferences">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, `role="status"`) || strings.Contains(body, `role="alert"`) {
		t.Error("a fresh page shows a status")
	}

	// With no settings, every default-opt-in category and channel is on.
	for _, tag := range inputTag.FindAllString(body, -1) {
		if strings.Contains(tag, `type="checkbox"`) && checked(tag) == (tag == switchTag(t, body, "pause")) {
			t.Errorf("wrong default: %s", tag)
		}
	}
	// The critical category is shown on, cannot be changed, and says why.
	for _, id := range []string{"cat-3", "cat-3-email", "cat-3-push", "cat-3-sms"} {
		tag := switchTag(t, body, id)
		if !checked(tag) || !strings.Contains(tag, " disabled") || strings.Contains(tag, "name=") ||
			!strings.Contains(tag, "cat-3-why") {
			t.Errorf("critical switch: %s", tag)
		}
	}
	if !strings.Contains(body, `id="cat-3-why">Always on`) {
		t.Error("the critical category does not say why it is always on")
	}
}

// allOn is the form of a page with every switch on and no quiet hours.
func allOn(token string) url.Values {
	f := url.Values{"token": {token}, "channel": {"email", "push", "sms", "inbox"}}
	for _, c := range []string{"account", "marketing", "product"} {
		f.Add("receive", c)
		f["cat:"+c] = []string{"email", "push", "sms", "inbox"}
	}
	return f
}

func TestSavePreferences(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.prefToken(userID)

	// Push off everywhere, marketing off, marketing email off too, quiet hours at night.
	form := allOn(tok)
	form["channel"] = []string{"email", "sms", "inbox"}
	form["receive"] = []string{"account", "product"}
	form["cat:marketing"] = []string{"push", "sms", "inbox"}
	form.Set("quiet_start", "22:00")
	form.Set("quiet_end", "07:00:00") // as a browser may send it
	rec := e.postForm("/preferences", form)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	loc := rec.Header().Get("Location")
	if want := "preferences?saved=1&token=" + tok; loc != want {
		t.Fatalf("Location = %q, want %q", loc, want)
	}
	if rec.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Error("the redirect may leak the token in a Referer")
	}
	yes := true
	want := asJSON(t, &preference.Settings{
		OptedOutChannels: []delivery.Channel{delivery.Android, delivery.IOS},
		// Account and product were left as shown, so they keep following their defaults.
		Categories: map[string]preference.CategorySetting{
			"marketing": {OptedOut: &yes, OptedOutChannels: []delivery.Channel{delivery.Email}},
		},
		QuietHours: &preference.QuietHours{Start: "22:00", End: "07:00"},
	})
	if got := e.settings(t, userID); got != want {
		t.Fatalf("settings = %s\nwant       %s", got, want)
	}

	// The page the redirect leads to shows the choices and says they were saved.
	body := checkPage(t, e.get("/"+loc), http.StatusOK)
	if !strings.Contains(body, `<p class="status" role="status">Saved.`) {
		t.Errorf("no Saved status:\n%s", body)
	}
	for id, on := range map[string]bool{
		"pause": false, "ch-email": true, "ch-push": false, "ch-sms": true,
		"cat-0": true, "cat-1": false, "cat-1-email": false, "cat-1-push": true, "cat-2": true,
	} {
		if tag := switchTag(t, body, id); checked(tag) != on {
			t.Errorf("%s: want on=%v: %s", id, on, tag)
		}
	}
	for _, id := range []string{"quiet-start", "quiet-end"} {
		tag := switchTag(t, body, id)
		if want := map[string]string{"quiet-start": `value="22:00"`, "quiet-end": `value="07:00"`}[id]; !strings.Contains(tag, want) {
			t.Errorf("%s: %s lacks %s", id, tag, want)
		}
	}

	// Everything back on, paused, no quiet hours: marketing is now an explicit opt-in.
	form = allOn(tok)
	form.Set("pause", "on")
	if rec := e.postForm("/preferences", form); rec.Code != http.StatusSeeOther {
		t.Fatalf("status %d, want 303; body:\n%s", rec.Code, rec.Body)
	}
	no := false
	want = asJSON(t, &preference.Settings{
		GlobalOptOut: true,
		Categories:   map[string]preference.CategorySetting{"marketing": {OptedOut: &no}},
	})
	if got := e.settings(t, userID); got != want {
		t.Fatalf("settings = %s\nwant       %s", got, want)
	}
}

func TestSavePreferencesKeepsWhatThePageCannotShow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.prefToken(userID)
	// iOS off but Android on: one push switch cannot show that.
	stored := &preference.Settings{
		OptedOutChannels: []delivery.Channel{delivery.IOS},
		Categories: map[string]preference.CategorySetting{
			"product": {OptedOutChannels: []delivery.Channel{delivery.Android}},
		},
	}
	e.updateSettings(t, userID, stored)

	// The page shows push off where either is off; saving it as shown changes nothing.
	body := checkPage(t, e.get("/preferences?token="+tok), http.StatusOK)
	if checked(switchTag(t, body, "ch-push")) || checked(switchTag(t, body, "cat-2-push")) {
		t.Fatal("push shown on while iOS or Android is off")
	}
	form := allOn(tok)
	form["channel"] = []string{"email", "sms", "inbox"}
	form["cat:product"] = []string{"email", "sms", "inbox"}
	if rec := e.postForm("/preferences", form); rec.Code != http.StatusSeeOther {
		t.Fatalf("status %d; body:\n%s", rec.Code, rec.Body)
	}
	if got, want := e.settings(t, userID), asJSON(t, stored); got != want {
		t.Fatalf("settings = %s\nwant       %s", got, want)
	}

	// Turning push on turns both on.
	if rec := e.postForm("/preferences", allOn(tok)); rec.Code != http.StatusSeeOther {
		t.Fatalf("status %d; body:\n%s", rec.Code, rec.Body)
	}
	if got := e.settings(t, userID); got != "{}" {
		t.Fatalf("settings = %s, want {}", got)
	}
}

func TestSavePreferencesInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.prefToken(userID)
	for _, tc := range []struct {
		name, start, end, problem string
	}{
		{"start only", "22:00", "", "both a start and an end"},
		{"end only", "", "07:00", "both a start and an end"},
		{"not a time", "25:00", "07:00", "times such as 22:00"},
		{"markup", `"><script>alert(1)</script>`, "07:00", "times such as 22:00"},
		{"same times", "07:00", "07:00", "start and end at different times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := allOn(tok)
			form.Set("pause", "on")
			form.Set("quiet_start", tc.start)
			form.Set("quiet_end", tc.end)
			body := checkPage(t, e.postForm("/preferences", form), http.StatusUnprocessableEntity)
			if !strings.Contains(body, `role="alert" id="form-error">`) || !strings.Contains(body, tc.problem) {
				t.Errorf("no error saying %q:\n%s", tc.problem, body)
			}
			// The form comes back as submitted, with the quiet hours marked and nothing saved.
			start := switchTag(t, body, "quiet-start")
			if !strings.Contains(start, `aria-invalid="true"`) || !strings.Contains(start, "form-error") ||
				!strings.Contains(html.UnescapeString(start), `value="`+tc.start) {
				t.Errorf("quiet start: %s", start)
			}
			if !checked(switchTag(t, body, "pause")) {
				t.Error("the submitted pause switch was not kept")
			}
			if got := e.settings(t, userID); got != "{}" {
				t.Errorf("settings = %s, want untouched", got)
			}
		})
	}
}

func TestSavePreferencesBadForm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	big := url.Values{"token": {e.prefToken(userID)}, "pad": {strings.Repeat("x", 70<<10)}}
	checkPage(t, e.postForm("/preferences", big), http.StatusBadRequest)
	if got := e.settings(t, userID); got != "{}" {
		t.Errorf("settings = %s, want untouched", got)
	}
}

func TestPreferenceLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := time.Now()
	link, expires, err := e.handler.PreferenceLink(userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, strings.TrimPrefix(link, publicURL+"/preferences?token="))
	if !strings.HasPrefix(link, publicURL+"/preferences?token=") {
		t.Fatalf("link %q", link)
	}
	if lo, hi := before.Add(time.Hour-time.Second), time.Now().Add(time.Hour); expires.Before(lo) || expires.After(hi) {
		t.Errorf("expires %v, want between %v and %v", expires, lo, hi)
	}
	checkPage(t, e.get(strings.TrimPrefix(link, publicURL)), http.StatusOK)

	if _, _, err := e.handler.PreferenceLink(userID, 0); errs.KindOf(err) != errs.Invalid {
		t.Errorf("ttl 0: err = %v, want Invalid", err)
	}
	off := web.New(e.svc, web.Config{PublicURL: publicURL})
	if _, _, err := off.PreferenceLink(userID, time.Hour); errs.KindOf(err) != errs.FailedPrecondition {
		t.Errorf("no signer: err = %v, want FailedPrecondition", err)
	}
}
