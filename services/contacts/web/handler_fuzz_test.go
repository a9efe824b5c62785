package web

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/linktoken"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts"
	"github.com/heraldhq/herald/services/contacts/contactstest"
)

// The handler fuzz targets serve requests with the fuzzer's bodies, forms and tokens through
// the real pages on a contactstest.Store. However a request is made, the page answers with one
// of its documented statuses, never 5xx; nothing changes without a valid signature or link; and
// what reaches the store is what PostgreSQL stores and the service allows.

const (
	fuzzPublicURL   = "https://notify.example.com"
	fuzzTwilioToken = "twilio-fuzz-auth-token"
)

var fuzzSigner = func() *linktoken.Signer {
	s, err := linktoken.New(linktoken.Key{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		panic(err)
	}
	return s
}()

type fuzzPages struct {
	store *contactstest.Store
	mux   *http.ServeMux
}

func newFuzzPages() *fuzzPages {
	p := &fuzzPages{store: contactstest.New(), mux: http.NewServeMux()}
	New(contacts.New(p.store, p.store), Config{PublicURL: fuzzPublicURL, Signer: fuzzSigner,
		TwilioAuthToken: fuzzTwilioToken, SMSHelpText: "Reply STOP to stop."}).Register(p.mux)
	return p
}

func (p *fuzzPages) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	p.mux.ServeHTTP(w, r)
	return w
}

func (p *fuzzPages) checkStore(t *testing.T) {
	t.Helper()
	if pr := p.store.Problems(); len(pr) > 0 {
		t.Fatalf("reached the store: %q", pr)
	}
}

// settings returns the settings stored for the fixture user.
func (p *fuzzPages) settings(t *testing.T) *preference.Settings {
	st, _, err := p.store.Settings(t.Context(), contactstest.User.ID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// twilioSign signs an inbound SMS as Twilio does: HMAC-SHA1 of the URL followed by each
// parameter's name and (first) value, sorted by name.
func twilioSign(u string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range keys {
		b.WriteString(k + form[k][0])
	}
	mac := hmac.New(sha1.New, []byte(fuzzTwilioToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// FuzzInboundSMS posts texts to the inbound SMS webhook, signed as Twilio signs them or carrying
// the fuzzer's signature. Unsigned, nothing happens (403). Signed, the answer is TwiML; a STOP
// from a valid number with a message SID suppresses the number, once per SID; START lifts
// nothing it should not.
func FuzzInboundSMS(f *testing.F) {
	for _, body := range []string{
		"MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B14155550123&To=%2B15005550006&Body=STOP",
		"MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B1+415+555+0123&Body=+start+",
		"MessageSid=MM0123456789abcdef0123456789abcdef&From=%2B14155550123&Body=help",
		"MessageSid=SMx&From=%2B14155550123&Body=STOP",
		"From=%2B14155550123&Body=STOP&Body=START",
		"Body=stop&From=0301234567",
		"%zz",
		"etag=0&pause=on",
		"etag=7&pause=on",
		"etag=-1&pause=on",
	} {
		f.Add(true, body, "")
		f.Add(false, body, "c2lnbmF0dXJl")
	}
	f.Fuzz(func(t *testing.T, sign bool, body, signature string) {
		if len(body) > maxForm+1 {
			return
		}
		form, formErr := url.ParseQuery(body)
		if sign && formErr == nil {
			signature = twilioSign(fuzzPublicURL+"/webhooks/twilio/inbound", form)
		}
		p := newFuzzPages()
		post := func() *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodPost, "/webhooks/twilio/inbound", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("X-Twilio-Signature", signature)
			return p.serve(r)
		}
		w := post()
		switch {
		case len(body) > maxForm:
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a body of %d bytes: %d", len(body), w.Code)
			}
		case !sign || formErr != nil:
			if w.Code != http.StatusForbidden {
				t.Fatalf("signed %v, form error %v: %d %s", sign, formErr, w.Code, w.Body)
			}
		default:
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml; charset=utf-8" {
				t.Fatalf("signed: %d %s %s", w.Code, w.Header().Get("Content-Type"), w.Body)
			}
			var twiml struct {
				XMLName xml.Name `xml:"Response"`
				Message []string `xml:"Message"`
			}
			if err := xml.Unmarshal(w.Body.Bytes(), &twiml); err != nil || len(twiml.Message) > 1 {
				t.Fatalf("TwiML %s: %v", w.Body, err)
			}
		}
		sups := p.store.Suppressions()
		if w.Code != http.StatusOK && len(sups) > 0 {
			t.Fatalf("answered %d, suppressed %v", w.Code, sups)
		}
		for _, s := range sups {
			if parseSMSCommand(form.Get("Body")) != smsStop || s.Channel != delivery.SMS || s.Reason != "stop" || s.Category != "" {
				t.Fatalf("body %q suppressed %+v", body, s)
			}
		}
		if w.Code == http.StatusOK {
			// Twilio's message is applied once: the same post again changes nothing.
			if again := post(); again.Code != http.StatusOK || len(p.store.Suppressions()) != len(sups) {
				t.Fatalf("posted again: %d, suppressions %v then %v", again.Code, sups, p.store.Suppressions())
			}
		}
		p.checkStore(t)
	})
}

// unsubscribeClaims are what the fuzzer's selector byte picks an unsubscribe link's claims
// from: links Herald signs, for the user or for an address, for every category, one, a
// critical one, one deleted since.
var unsubscribeClaims = func() []linktoken.Claims {
	var out []linktoken.Claims
	for _, who := range []linktoken.Claims{
		{UserID: contactstest.User.ID},
		{UserID: "deleted-user"},
		{Channel: "email", Address: "someone@example.com"},
		{Address: "someone@example.com"},
		{Channel: "sms", Address: "+14155550123"},
	} {
		for _, cat := range []string{"", "marketing", "security", "deleted_category"} {
			c := who
			c.Purpose, c.Category = linktoken.Unsubscribe, cat
			out = append(out, c)
		}
	}
	return out
}()

// FuzzUnsubscribe makes one-click unsubscribe requests (RFC 8058) with the fuzzer's method,
// content type and body, and a link Herald signed or the fuzzer's token. GET never changes
// anything. A POST changes something only with a valid link and the one-click body, and then
// exactly what the link names: the user's email (for the category), or the address.
func FuzzUnsubscribe(f *testing.F) {
	for i := range unsubscribeClaims {
		f.Add(uint8(i), true, "", true, "application/x-www-form-urlencoded", []byte("List-Unsubscribe=One-Click"))
	}
	f.Add(uint8(0), true, "", false, "", []byte(nil))
	f.Add(uint8(0), true, "", true, "multipart/form-data; boundary=b",
		[]byte("--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n"))
	f.Add(uint8(0), false, "k1.eyJwIjoidW5zdWIiLCJ1IjoidTEifQ.AAAA", true, "application/x-www-form-urlencoded",
		[]byte("List-Unsubscribe=One-Click"))
	f.Add(uint8(0), true, "", true, "multipart/form-data; boundary=", []byte("--\r\n"))
	f.Fuzz(func(t *testing.T, pick uint8, signed bool, token string, post bool, contentType string, body []byte) {
		if len(body) > maxForm+1 {
			return
		}
		c := unsubscribeClaims[int(pick)%len(unsubscribeClaims)]
		if signed {
			token = fuzzSigner.Sign(c)
		}
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		p := newFuzzPages()
		r := httptest.NewRequest(method, "/unsubscribe?token="+url.QueryEscape(token), bytes.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		w := p.serve(r)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusConflict:
		default:
			t.Fatalf("%s: %d %s", method, w.Code, w.Body)
		}
		p.checkStore(t)
		sups, st := p.store.Suppressions(), p.settings(t)
		changed := len(sups) > 0 || st != nil
		if !post || !signed || w.Code != http.StatusOK {
			if changed {
				t.Fatalf("%s signed %v answered %d, yet suppressions %v, settings %+v", method, signed, w.Code, sups, st)
			}
			return
		}
		// A signed one-click POST that was answered OK.
		switch {
		case c.UserID == contactstest.User.ID && c.Category == "deleted_category":
			if changed {
				t.Fatalf("unsubscribed from a deleted category: %v %+v", sups, st)
			}
		case c.UserID == contactstest.User.ID:
			optedOut := st != nil && (c.Category == "" && slices.Contains(st.OptedOutChannels, delivery.Email) ||
				c.Category != "" && slices.Contains(st.Categories[c.Category].OptedOutChannels, delivery.Email))
			if !optedOut || len(sups) > 0 {
				t.Fatalf("link %+v: settings %+v, suppressions %v", c, st, sups)
			}
		default:
			if len(sups) != 1 || sups[0].Address != c.Address || sups[0].Channel != delivery.Email ||
				sups[0].Category != c.Category || st != nil {
				t.Fatalf("link %+v: suppressions %v, settings %+v", c, sups, st)
			}
		}
	})
}

// FuzzPreferences posts the preference form with the fuzzer's fields, and a link Herald signed
// for the fixture user or the fuzzer's token. Without a valid link nothing changes; with one the
// form is saved (303) or shown again with what is wrong (422) or with the settings as they are
// now when the form's etag is not theirs (409), and what is saved keeps every critical category
// on.
func FuzzPreferences(f *testing.F) {
	for _, form := range []string{
		"",
		"pause=on",
		"channel=email&channel=sms&receive=account&cat:account=push&cat:marketing=email&quiet_start=22:00&quiet_end=07:00",
		"receive=security&cat:security=email&cat:nope=sms&channel=fax",
		"quiet_start=07:00&quiet_end=07:00",
		"quiet_start=24:00&quiet_end=",
		"token=x&token=y",
		"%zz",
		"etag=0&pause=on",
		"etag=7&pause=on",
		"etag=-1&pause=on",
	} {
		f.Add(true, "", form)
		f.Add(false, "k1.e30.AAAA", form)
	}
	f.Fuzz(func(t *testing.T, signed bool, token, form string) {
		if len(form) > maxForm {
			return
		}
		if signed {
			token = fuzzSigner.Sign(linktoken.Claims{Purpose: linktoken.Preferences, UserID: contactstest.User.ID,
				Expires: time.Now().Add(time.Hour).Unix()})
		}
		body := "token=" + url.QueryEscape(token)
		if form != "" {
			body = form + "&" + body
		}
		p := newFuzzPages()
		r := httptest.NewRequest(http.MethodPost, "/preferences", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := p.serve(r)
		switch w.Code {
		case http.StatusSeeOther, http.StatusUnprocessableEntity, http.StatusConflict, http.StatusBadRequest, http.StatusForbidden:
		default:
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		p.checkStore(t)
		st := p.settings(t)
		if w.Code != http.StatusSeeOther {
			if st != nil {
				t.Fatalf("answered %d, yet saved %+v", w.Code, st)
			}
			return
		}
		if !signed {
			// The fuzzer's own token: only one Herald signed could get here.
			if _, err := fuzzSigner.Verify(token, linktoken.Preferences, time.Now()); err != nil {
				t.Fatalf("saved with token %q", token)
			}
		}
		if st == nil || !st.Allows(contactstest.Categories[2], delivery.Email) {
			t.Fatalf("saved %+v", st)
		}
		// The page shows what was saved.
		show := p.serve(httptest.NewRequest(http.MethodGet, "/preferences?token="+url.QueryEscape(token), nil))
		if b, _ := io.ReadAll(show.Body); show.Code != http.StatusOK || len(b) == 0 {
			t.Fatalf("the page after saving: %d", show.Code)
		}
	})
}
