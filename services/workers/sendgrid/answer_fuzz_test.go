package sendgrid

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// answer is what the fuzz server says to the next send.
type answer struct {
	status                             int
	messageID, retryAfter, rateLimitAt string
	body                               []byte
}

// FuzzAnswer has a fake SendGrid give every answer the fuzzer makes up to a real send: any
// status, message id, wait headers and body. Whatever it says, Send classifies it as the
// package documents: 2xx sent with the X-Message-Id, 401 and 403 a configuration error, 429 a
// retry within bounds, 408 and 5xx a retry, other 4xx a permanent refusal. The error never
// carries the recipient's address, stays short, and holds only text PostgreSQL stores.
func FuzzAnswer(f *testing.F) {
	var (
		mu  sync.Mutex
		cur answer
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := cur
		mu.Unlock()
		for k, v := range map[string]string{"X-Message-Id": a.messageID, "Retry-After": a.retryAfter, "X-RateLimit-Reset": a.rateLimitAt} {
			if v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
	}))
	f.Cleanup(srv.Close)
	s, err := New(Config{APIKey: "SG.fuzz", BaseURL: srv.URL, From: "herald@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	const to = "ada.lovelace@example.com"
	for _, a := range []answer{
		{202, "W9jHwXRKRWe7aiwGm3rG0A", "", "", nil},
		{400, "", "", "", []byte(`{"errors":[{"message":"Does not contain a valid address: ` + to + `","field":"personalizations.0.to.0.email"}]}`)},
		{400, "", "", "", []byte(`{"errors":[{"message":"a\u0000b","field":"` + to + `\u0000"},{"message":"x"},{"message":"y"},{"message":"z"}]}`)},
		{401, "", "", "", []byte(`{"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null}]}`)},
		{429, "", "30", "", nil},
		{429, "", "", "99999999999", nil},
		{429, "", "Wed, 21 Oct 2099 07:28:00 GMT", "", nil},
		{413, "", "", "", []byte(strings.Repeat("{", maxAnswerBytes+1))},
		{503, "", "-1", "", []byte(`<html>` + to + `</html>`)},
		{302, "", "", "", nil},
	} {
		f.Add(a.status, a.messageID, a.retryAfter, a.rateLimitAt, a.body)
	}
	f.Fuzz(func(t *testing.T, status int, messageID, retryAfter, rateLimitAt string, body []byte) {
		status = 200 + (status%400+400)%400 // 1xx are not final answers
		for _, h := range []*string{&messageID, &retryAfter, &rateLimitAt} {
			if !httpguts.ValidHeaderFieldValue(*h) {
				*h = ""
			}
		}
		mu.Lock()
		cur = answer{status, messageID, retryAfter, rateLimitAt, body}
		mu.Unlock()
		m := &workers.Message{DeliveryID: uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8058"), Channel: delivery.Email, To: to,
			Content: delivery.Content{Subject: "fuzz subject", Text: "fuzz text"}}
		res, err := s.Send(t.Context(), m)
		o, reason, wait := workers.Classify(err)
		var ce *workers.ConfigError
		switch {
		case status < 300:
			if err != nil || res.ProviderMessageID != strings.TrimSpace(messageID) {
				t.Fatalf("%d with X-Message-Id %q: %+v, %v", status, messageID, res, err)
			}
			return
		case status == 401 || status == 403:
			if !errors.As(err, &ce) {
				t.Fatalf("%d: %v", status, err)
			}
		case status == 408 || status == 429 || status >= 500 || status < 400:
			if o != workers.OutcomeRetry || wait < 0 || wait > maxRetryAfter || wait > 0 && status != 429 {
				t.Fatalf("%d: outcome %v, wait %v (%v)", status, o, wait, err)
			}
		default:
			if o != workers.OutcomeFailed || reason != "rejected" {
				t.Fatalf("%d: outcome %v %q (%v)", status, o, reason, err)
			}
		}
		msg := err.Error()
		if strings.Contains(msg, to) || len(msg) > 2048 || !utf8.ValidString(msg) ||
			strings.ContainsFunc(msg, func(r rune) bool { return unicode.IsControl(r) }) {
			t.Fatalf("error %q", msg)
		}
	})
}

// TestAnswerBodyIsBounded: an answer of any length is read only up to maxAnswerBytes, and its
// status still decides.
func TestAnswerBodyIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		chunk := []byte(strings.Repeat("x", 1<<20))
		for range 64 { // 64 MiB, which the SDK once read whole
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	s, err := New(Config{APIKey: "SG.test", BaseURL: srv.URL, From: "herald@example.com", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = s.Send(t.Context(), &workers.Message{Channel: delivery.Email, To: "a@example.com",
		Content: delivery.Content{Subject: "s", Text: "t"}})
	runtime.ReadMemStats(&after)
	if o, reason, _ := workers.Classify(err); o != workers.OutcomeFailed || reason != "rejected" {
		t.Fatalf("Send = %v, want a permanent refusal", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Fatalf("a send allocated %d MiB", n>>20)
	}
}
