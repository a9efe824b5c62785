package web_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/contacts/web"
)

const inboundPath = "/webhooks/twilio/inbound"

// twilioSignature signs a webhook as Twilio does: HMAC-SHA1, keyed with the auth token, of the
// URL followed by each form parameter's name and value in name order, in base64.
func twilioSignature(token, u string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := u
	for _, k := range keys {
		s += k + form.Get(k)
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// inbound is Twilio's form for a new text from phone.
func inbound(from, body string) url.Values {
	return url.Values{
		"From": {from}, "To": {"+14155550100"}, "Body": {body}, "NumMedia": {"0"},
		"MessageSid": {"SM" + strings.ReplaceAll(uuid.NewString(), "-", "")}, "AccountSid": {"AC0123456789abcdef0123456789abcdef"},
	}
}

// sms posts form to the webhook, signed with sig ("" signs it properly for the public URL).
func (e *env) sms(form url.Values, sig string) *httptest.ResponseRecorder {
	if sig == "" {
		sig = twilioSignature(twilioToken, publicURL+inboundPath, form)
	}
	// The handler sees another host and scheme than Twilio used, as behind a proxy.
	r := httptest.NewRequest(http.MethodPost, "http://10.0.0.7:7481"+inboundPath, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Twilio-Signature", sig)
	return e.serve(r)
}

type twiml struct {
	XMLName  xml.Name `xml:"Response"`
	Messages []string `xml:"Message"`
}

// reply checks a TwiML answer and returns its messages.
func reply(t *testing.T, rec *httptest.ResponseRecorder) []string {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d; body:\n%s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Errorf("Content-Type %q", ct)
	}
	var r twiml
	if err := xml.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("not TwiML: %v\n%s", err, rec.Body)
	}
	return r.Messages
}

func (e *env) smsSuppressed(t *testing.T) bool {
	t.Helper()
	sups := e.suppressions(t, delivery.SMS, phone)
	want := []preference.Suppression{{Channel: delivery.SMS, Address: phone, Reason: "stop"}}
	switch {
	case len(sups) == 0:
		return false
	case slices.Equal(sups, want):
		return true
	}
	t.Fatalf("suppressions = %+v", sups)
	return false
}

func TestSMSStopAndStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stops := []string{"STOP", "stop", "  Stop\n", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "OptOut", "REVOKE"}
	starts := []string{"START", "start", " Yes ", "UNSTOP", "optin"}
	// Twilio sends E.164; a number in another form is normalised all the same.
	froms := []string{phone, "+1 (415) 555-0123"}
	for i, stop := range stops {
		start := starts[i%len(starts)]
		from := froms[i%len(froms)]
		if msgs := reply(t, e.sms(inbound(from, stop), "")); len(msgs) != 0 {
			t.Errorf("%q: answered %q", stop, msgs)
		}
		if !e.smsSuppressed(t) {
			t.Errorf("%q did not suppress the number", stop)
		}
		// Again: idempotent.
		reply(t, e.sms(inbound(from, stop), ""))
		if !e.smsSuppressed(t) {
			t.Errorf("%q twice: number not suppressed", stop)
		}
		if msgs := reply(t, e.sms(inbound(from, start), "")); len(msgs) != 0 {
			t.Errorf("%q: answered %q", start, msgs)
		}
		if e.smsSuppressed(t) {
			t.Errorf("%q did not lift the suppression", start)
		}
	}
	e.secrets = append(e.secrets, "415) 555-0123")
}

// TestSMSReplay: Twilio's signature holds no time, so a request recorded on its way (a proxy's
// log, say) stays valid forever. Posted again, a message changes nothing: a replayed START does
// not undo the STOP sent after it, nor a replayed STOP a later START. A keyword without a
// message SID, which Twilio always sends, is ignored.
func TestSMSReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stop, start, stopAgain := inbound(phone, "STOP"), inbound(phone, "START"), inbound(phone, "STOP")
	reply(t, e.sms(stop, ""))
	reply(t, e.sms(start, ""))
	reply(t, e.sms(stop, "")) // a replay
	if e.smsSuppressed(t) {
		t.Fatal("a replayed STOP suppressed the number after the person's START")
	}
	reply(t, e.sms(stopAgain, ""))
	reply(t, e.sms(start, "")) // a replay
	if !e.smsSuppressed(t) {
		t.Fatal("a replayed START lifted the person's later STOP")
	}
	for _, sid := range []string{"", "SMnot-a-sid", "XX0123456789abcdef0123456789abcdef"} {
		form := inbound(phone, "START")
		form.Set("MessageSid", sid)
		if sid == "" {
			form.Del("MessageSid")
		}
		reply(t, e.sms(form, ""))
		if !e.smsSuppressed(t) {
			t.Fatalf("START with MessageSid %q applied", sid)
		}
	}
}

func TestSMSHelp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, body := range []string{"HELP", "help", " Info "} {
		rec := e.sms(inbound(phone, body), "")
		if msgs := reply(t, rec); !slices.Equal(msgs, []string{helpText}) {
			t.Errorf("%q: answered %q, want %q", body, msgs, helpText)
		}
		raw := rec.Body.String()
		for _, want := range []string{"&amp; news &lt;acme.example/help&gt;", "<Response><Message>"} {
			if !strings.Contains(raw, want) {
				t.Errorf("%q: answer lacks %s:\n%s", body, want, raw)
			}
		}
	}
	if e.smsSuppressed(t) {
		t.Error("HELP suppressed the number")
	}
}

func TestSMSOtherMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, body := range []string{"", "stop please", "Please STOP", "S T O P", "hello", "STOP!"} {
		rec := e.sms(inbound(phone, body), "")
		if msgs := reply(t, rec); len(msgs) != 0 {
			t.Errorf("%q: answered %q", body, msgs)
		}
		if !strings.HasSuffix(rec.Body.String(), "<Response/>") {
			t.Errorf("%q: answer %q, want an empty <Response/>", body, rec.Body)
		}
		e.secrets = append(e.secrets, body)
	}
	// STOP from what is not a phone number changes nothing.
	reply(t, e.sms(inbound("whatsapp:"+phone, "STOP"), ""))
	if e.smsSuppressed(t) {
		t.Error("number suppressed")
	}
	e.secrets = slices.DeleteFunc(e.secrets, func(s string) bool { return s == "" })
}

func TestSMSSignature(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	form := inbound(phone, "STOP")
	changed := inbound("+14155550199", "STOP")
	for name, sig := range map[string]string{
		"missing":            "-", // replaced by no header below
		"wrong auth token":   twilioSignature("another-token", publicURL+inboundPath, form),
		"internal URL":       twilioSignature(twilioToken, "http://10.0.0.7:7481"+inboundPath, form),
		"other path":         twilioSignature(twilioToken, publicURL+"/webhooks/twilio/status", form),
		"other body":         twilioSignature(twilioToken, publicURL+inboundPath, changed),
		"garbage":            "not base64 at all",
		"signature of empty": twilioSignature(twilioToken, publicURL+inboundPath, url.Values{}),
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, inboundPath, strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if sig != "-" {
				r.Header.Set("X-Twilio-Signature", sig)
			}
			if rec := e.serve(r); rec.Code != http.StatusForbidden {
				t.Errorf("status %d, want 403", rec.Code)
			}
			if e.smsSuppressed(t) {
				t.Error("number suppressed")
			}
		})
	}
}

func TestSMSWebhookOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *web.Config) { c.TwilioAuthToken = "" })
	form := inbound(phone, "STOP")
	if rec := e.sms(form, twilioSignature("", publicURL+inboundPath, form)); rec.Code != http.StatusNotFound {
		t.Errorf("status %d, want 404", rec.Code)
	}
	if e.smsSuppressed(t) {
		t.Error("number suppressed")
	}
}
