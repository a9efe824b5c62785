package web_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
)

// oneClick is the body RFC 8058 prescribes.
var oneClick = url.Values{"List-Unsubscribe": {"One-Click"}}

const outsider = "reader@example.org" // an address that belongs to no user

func (e *env) unsubToken(c linktoken.Claims) string {
	c.Purpose = linktoken.Unsubscribe
	return e.sign(c)
}

func TestUnsubscribeGetChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		claims  linktoken.Claims
		heading string
	}{
		{"user, category", linktoken.Claims{UserID: userID, Category: "marketing"}, "Unsubscribe from Marketing emails?"},
		{"user, all", linktoken.Claims{UserID: userID}, "Unsubscribe from all emails?"},
		{"address, category", linktoken.Claims{Channel: "email", Address: outsider, Category: "product"}, "Unsubscribe from Product emails?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := e.unsubToken(tc.claims)
			for range 2 { // a mail scanner may follow the link more than once
				body := checkPage(t, e.get("/unsubscribe?token="+tok), http.StatusOK)
				for _, want := range []string{
					tc.heading,
					`<form method="post" action="unsubscribe?token=` + tok + `">`,
					`<input type="hidden" name="List-Unsubscribe" value="One-Click">`,
					`<button type="submit">Unsubscribe</button>`,
				} {
					if !strings.Contains(body, want) {
						t.Errorf("page lacks %s:\n%s", want, body)
					}
				}
			}
			if got := e.settings(t, userID); got != "{}" {
				t.Errorf("settings = %s, want untouched", got)
			}
			if sups := e.suppressions(t, delivery.Email, outsider); len(sups) != 0 {
				t.Errorf("suppressions = %+v, want none", sups)
			}
		})
	}
}

func TestUnsubscribeOneClick(t *testing.T) {
	t.Parallel()
	yes := true
	for _, tc := range []struct {
		name   string
		claims linktoken.Claims
		said   string
		// settings are the user's settings after, as JSON; sups the outsider's suppressions.
		settings *preference.Settings
		sups     []preference.Suppression
	}{
		{
			name:   "user, category",
			claims: linktoken.Claims{UserID: userID, Category: "marketing"},
			said:   "You will not get Marketing emails from us any more.",
			settings: &preference.Settings{Categories: map[string]preference.CategorySetting{
				"marketing": {OptedOutChannels: []delivery.Channel{delivery.Email}},
				"product":   {OptedOut: &yes}, // kept from before
			}},
		},
		{
			name:   "user, all",
			claims: linktoken.Claims{UserID: userID},
			said:   "You will not get emails from us any more, except",
			settings: &preference.Settings{
				OptedOutChannels: []delivery.Channel{delivery.Email},
				Categories:       map[string]preference.CategorySetting{"product": {OptedOut: &yes}},
			},
		},
		{
			name:     "address, category",
			claims:   linktoken.Claims{Channel: "email", Address: outsider, Category: "marketing"},
			said:     "You will not get Marketing emails from us any more.",
			settings: &preference.Settings{Categories: map[string]preference.CategorySetting{"product": {OptedOut: &yes}}},
			sups:     []preference.Suppression{{Channel: delivery.Email, Address: outsider, Category: "marketing", Reason: "unsubscribe"}},
		},
		{
			name:     "address, all",
			claims:   linktoken.Claims{Address: outsider},
			said:     "You will not get emails from us any more, except",
			settings: &preference.Settings{Categories: map[string]preference.CategorySetting{"product": {OptedOut: &yes}}},
			sups:     []preference.Suppression{{Channel: delivery.Email, Address: outsider, Reason: "unsubscribe"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.updateSettings(t, userID, &preference.Settings{Categories: map[string]preference.CategorySetting{"product": {OptedOut: &yes}}})
			tok := e.unsubToken(tc.claims)
			for i := range 3 { // idempotent: a repeat answers the same and changes nothing more
				rec := e.postForm("/unsubscribe?token="+url.QueryEscape(tok), oneClick)
				body := checkPage(t, rec, http.StatusOK)
				if !strings.Contains(body, "You are unsubscribed") || !strings.Contains(body, tc.said) {
					t.Errorf("post %d: page does not confirm:\n%s", i, body)
				}
				if loc := rec.Header().Get("Location"); loc != "" {
					t.Errorf("post %d: redirects to %q", i, loc)
				}
				if got, want := e.settings(t, userID), asJSON(t, tc.settings); got != want {
					t.Errorf("post %d: settings = %s\nwant %s", i, got, want)
				}
				if got := e.suppressions(t, delivery.Email, outsider); !reflect.DeepEqual(got, tc.sups) {
					t.Errorf("post %d: suppressions = %+v, want %+v", i, got, tc.sups)
				}
			}
		})
	}
}

func TestUnsubscribeMultipart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("List-Unsubscribe", "One-Click")
	mw.Close()
	r := httptest.NewRequest(http.MethodPost, "/unsubscribe?token="+e.unsubToken(linktoken.Claims{UserID: userID, Category: "marketing"}), &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	checkPage(t, e.serve(r), http.StatusOK)
	if got, want := e.settings(t, userID), `{"categories":{"marketing":{"opted_out_channels":["email"]}}}`; got != want {
		t.Errorf("settings = %s, want %s", got, want)
	}
}

func TestUnsubscribeCritical(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []linktoken.Claims{
		{UserID: userID, Category: "security"},
		{Channel: "email", Address: outsider, Category: "security"},
	} {
		tok := e.unsubToken(c)
		get := checkPage(t, e.get("/unsubscribe?token="+tok), http.StatusConflict)
		post := checkPage(t, e.postForm("/unsubscribe?token="+tok, oneClick), http.StatusConflict)
		for _, body := range []string{get, post} {
			if !strings.Contains(body, "These emails can&#39;t be turned off") || !strings.Contains(body, "Security emails keep your account safe") {
				t.Errorf("no explanation:\n%s", body)
			}
			if strings.Contains(body, "<form") {
				t.Errorf("offers to unsubscribe:\n%s", body)
			}
		}
	}
	if got := e.settings(t, userID); got != "{}" {
		t.Errorf("settings = %s, want untouched", got)
	}
	if sups := e.suppressions(t, delivery.Email, outsider); len(sups) != 0 {
		t.Errorf("suppressions = %+v, want none", sups)
	}
}

func TestUnsubscribeRefusesBadLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	good := e.unsubToken(linktoken.Claims{Channel: "email", Address: outsider, Category: "marketing"})
	var refusal string
	for _, tc := range []struct {
		name   string
		token  string
		status int
	}{
		{"missing", "", http.StatusBadRequest},
		{"forged", e.forger.Sign(linktoken.Claims{Purpose: linktoken.Unsubscribe, Address: outsider, Category: "marketing"}), http.StatusForbidden},
		{"altered", altered(good), http.StatusForbidden},
		{"preferences token", e.prefToken(userID), http.StatusForbidden},
		{"unknown user", e.unsubToken(linktoken.Claims{UserID: "nobody", Category: "marketing"}), http.StatusForbidden},
		{"no recipient", e.unsubToken(linktoken.Claims{Category: "marketing"}), http.StatusForbidden},
		{"sms address", e.unsubToken(linktoken.Claims{Channel: "sms", Address: phone}), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get := checkPage(t, e.get("/unsubscribe?token="+url.QueryEscape(tc.token)), tc.status)
			post := checkPage(t, e.postForm("/unsubscribe?token="+url.QueryEscape(tc.token), oneClick), tc.status)
			if tc.status == http.StatusForbidden {
				if refusal == "" {
					refusal = get
				}
				if get != refusal || post != refusal {
					t.Errorf("refusals differ:\n%s\n---\n%s\n---\n%s", get, post, refusal)
				}
			}
		})
	}
	if got := e.settings(t, userID); got != "{}" {
		t.Errorf("settings = %s, want untouched", got)
	}
	for _, addr := range []struct {
		ch   delivery.Channel
		addr string
	}{{delivery.Email, outsider}, {delivery.SMS, phone}} {
		if sups := e.suppressions(t, addr.ch, addr.addr); len(sups) != 0 {
			t.Errorf("suppressions of %s = %+v, want none", addr.ch, sups)
		}
	}
}

func TestUnsubscribeNeedsTheOneClickBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.unsubToken(linktoken.Claims{UserID: userID, Category: "marketing"})
	for name, form := range map[string]url.Values{
		"empty":      {},
		"wrong":      {"List-Unsubscribe": {"Two-Clicks"}},
		"only query": nil, // the value in the URL, not the body
	} {
		t.Run(name, func(t *testing.T) {
			path := "/unsubscribe?token=" + tok
			if form == nil {
				path += "&List-Unsubscribe=One-Click"
			}
			checkPage(t, e.postForm(path, form), http.StatusBadRequest)
			if got := e.settings(t, userID); got != "{}" {
				t.Errorf("settings = %s, want untouched", got)
			}
		})
	}
}
