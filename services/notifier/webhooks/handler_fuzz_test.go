package webhooks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/events"
	"github.com/heraldhq/herald/services/notifier"
)

// recorder is the Store and the publisher behind a Handler in the handler fuzz targets. Every
// event that names a delivery is one it knows, an email or SMS delivery to an address, so that
// the facts of the events are published too.
type recorder struct {
	mu        sync.Mutex
	events    []notifier.ProviderEvent
	facts     []events.Event
	announced []string
}

func (r *recorder) RecordProviderEvents(_ context.Context, evs []notifier.ProviderEvent) ([]notifier.ProviderEvent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, evs...)
	out := slices.Clone(evs)
	for i := range out {
		if out[i].DeliveryID != uuid.Nil {
			out[i].Channel, out[i].Address = delivery.Email, "ada@example.com"
			if out[i].Provider == twilioProvider {
				out[i].Channel, out[i].Address = delivery.SMS, "+14155550123"
			}
		}
	}
	return out, nil
}

func (r *recorder) MarkProviderEventsAnnounced(_ context.Context, _ string, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.announced = append(r.announced, ids...)
	return nil
}

func (r *recorder) publish(_ context.Context, subject string, e events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch subject {
	case events.EmailInvalid, events.NumberInvalid, events.OptedOut:
	default:
		return nil // checked by the caller: no fact of another subject
	}
	r.facts = append(r.facts, e)
	return nil
}

// fuzzKey signs SendGrid's events in FuzzSendGridWebhook.
var fuzzKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

const (
	fuzzPublicURL   = "https://notify.example.com/herald"
	fuzzTwilioToken = "twilio-fuzz-auth-token"
)

func newFuzzHandler(t *testing.T, rec *recorder) *Handler {
	der, err := x509.MarshalPKIXPublicKey(&fuzzKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{PublicURL: fuzzPublicURL, SendGridPublicKey: base64.StdEncoding.EncodeToString(der),
		TwilioAuthToken: fuzzTwilioToken, Publish: rec.publish, Store: rec})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkRecorded checks what a handler recorded and published.
func checkRecorded(t *testing.T, rec *recorder) {
	t.Helper()
	for _, e := range rec.events {
		checkEvent(t, e)
	}
	for _, f := range rec.facts {
		if f.ID == uuid.Nil || f.DeliveryID == uuid.Nil || f.Address == "" || f.Reason == "" {
			t.Fatalf("fact %+v", f)
		}
	}
}

// FuzzSendGridWebhook posts bodies to the SendGrid event webhook, signed with the configured key
// or carrying the fuzzer's signature and timestamp headers. A request is acted on only when its
// signature holds over the timestamp and the body, and the timestamp is recent: then it is
// answered 200 or 400, the events recorded are fit to store, and their facts published. Anything
// else is refused, 403 (or 413 over the size limit), and records nothing.
func FuzzSendGridWebhook(f *testing.F) {
	for _, seed := range []string{
		`[{"email":"a@b.c","timestamp":1513299569,"event":"bounce","type":"bounce","status":"5.1.1","sg_event_id":"e1","sg_message_id":"m1","delivery_id":"01890a5d-ac96-774b-bcce-b302099a8057"}]`,
		`[{"event":"spamreport","sg_event_id":"e2","delivery_id":"01890a5d-ac96-774b-bcce-b302099a8057"},{"event":"delivered","sg_event_id":"e3"}]`,
		`[{"event":"delivered","sg_event_id":"a\u0000b"},null,1]`,
		`{}`,
		``,
	} {
		f.Add(true, int64(0), "", []byte(seed))
		f.Add(false, int64(-30), "MEUCIQD", []byte(seed))
	}
	f.Add(true, int64(-601), "", []byte(`[]`))
	f.Add(true, int64(601), "", []byte(`[]`))
	f.Fuzz(func(t *testing.T, sign bool, skew int64, signature string, body []byte) {
		if len(body) > maxSendGridBody+1 {
			return
		}
		rec := &recorder{}
		h := newFuzzHandler(t, rec)
		now := time.Now()
		timestamp := strconv.FormatInt(now.Unix()+skew, 10)
		if sign {
			digest := sha256.Sum256(append([]byte(timestamp), body...))
			sig, err := ecdsa.SignASN1(rand.Reader, fuzzKey, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			signature = base64.StdEncoding.EncodeToString(sig)
		}
		req := httptest.NewRequest(http.MethodPost, SendGridPath, bytes.NewReader(body))
		req.Header.Set(sgSignatureHeader, signature)
		req.Header.Set(sgTimestampHeader, timestamp)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)

		// Within maxSignatureAge, give or take the second the clock may have turned.
		fresh := skew > -int64(maxSignatureAge/time.Second)+2 && skew < int64(maxSignatureAge/time.Second)-2
		stale := skew < -int64(maxSignatureAge/time.Second)-2 || skew > int64(maxSignatureAge/time.Second)+2
		switch {
		case len(body) > maxSendGridBody:
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a body of %d bytes: %d", len(body), w.Code)
			}
		case sign && fresh:
			if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
				t.Fatalf("signed: %d %s", w.Code, w.Body)
			}
		case !sign || stale:
			// An unsigned request can only pass with a forged ECDSA signature.
			if w.Code != http.StatusForbidden {
				t.Fatalf("signed %v, %ds off: %d %s", sign, skew, w.Code, w.Body)
			}
		}
		if w.Code != http.StatusOK && (len(rec.events) > 0 || len(rec.facts) > 0) {
			t.Fatalf("answered %d but recorded %d events and %d facts", w.Code, len(rec.events), len(rec.facts))
		}
		checkRecorded(t, rec)
	})
}

// twilioSign is Twilio's signature of a status callback: base64 of HMAC-SHA1, keyed with the
// auth token, of the URL followed by each parameter's name and value, sorted by name.
func twilioSign(u string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range keys {
		for _, v := range form[k] {
			b.WriteString(k + v)
		}
	}
	mac := hmac.New(sha1.New, []byte(fuzzTwilioToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// FuzzTwilioWebhook posts forms to the Twilio status callback, signed as Twilio signs them
// (over the public URL with the query, and the form) or carrying the fuzzer's signature. A signed
// callback is answered 200, with one event fit to store, or 400; anything else is refused (403,
// or 400 for a body that is not a form) and records nothing.
func FuzzTwilioWebhook(f *testing.F) {
	for _, s := range []struct{ query, form string }{
		{"", "MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=delivered&AccountSid=AC00000000000000000000000000000000&To=%2B15551234567"},
		{"delivery_id=01890a5d-ac96-774b-bcce-b302099a8057", "MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=undelivered&ErrorCode=30003"},
		{"delivery_id=01890a5d-ac96-774b-bcce-b302099a8057", "SmsSid=SM0123456789abcdef0123456789abcdef&SmsStatus=failed&ErrorCode=21610"},
		{"a=1&a=2", "MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=sent&MessageStatus=sent"},
		{"", "%zz"},
	} {
		f.Add(true, s.query, s.form, "")
		f.Add(false, s.query, s.form, "aGVsbG8=")
	}
	f.Fuzz(func(t *testing.T, sign bool, query, body, signature string) {
		if len(body) > maxTwilioBody+1 {
			return
		}
		target := TwilioPath
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
		if err != nil || req.URL.Path != TwilioPath {
			return // not a request line a server would read
		}
		form, formErr := url.ParseQuery(body)
		repeated := false
		for _, vs := range form {
			repeated = repeated || len(vs) > 1
		}
		if sign {
			u := fuzzPublicURL + req.URL.EscapedPath()
			if req.URL.RawQuery != "" {
				u += "?" + req.URL.RawQuery
			}
			signature = twilioSign(u, form)
		}
		req.Header.Set(twilioSignatureHeader, signature)
		rec := &recorder{}
		w := httptest.NewRecorder()
		newFuzzHandler(t, rec).ServeHTTP(w, req)

		switch {
		case len(body) > maxTwilioBody:
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a body of %d bytes: %d", len(body), w.Code)
			}
		case formErr != nil:
			if w.Code != http.StatusBadRequest {
				t.Fatalf("a body that is not a form: %d", w.Code)
			}
		case sign && !repeated:
			if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
				t.Fatalf("signed: %d %s", w.Code, w.Body)
			}
		default:
			if w.Code != http.StatusForbidden {
				t.Fatalf("signed %v, repeated %v: %d %s", sign, repeated, w.Code, w.Body)
			}
		}
		if w.Code == http.StatusOK && len(rec.events) != 1 || w.Code != http.StatusOK && len(rec.events) > 0 {
			t.Fatalf("answered %d with %d events recorded", w.Code, len(rec.events))
		}
		checkRecorded(t, rec)
	})
}
