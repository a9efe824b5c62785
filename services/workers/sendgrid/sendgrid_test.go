package sendgrid_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/sendgrid"
)

const (
	key  = "SG.secret-test-key"
	to   = "ada.lovelace@example.com"
	from = "noreply@herald.test"
	text = "your code is 123456"
	html = "<p>your code is <b>123456</b></p>"
)

func setup(t *testing.T, cfg sendgrid.Config) (*sendgridfake.Fake, *sendgrid.Sender) {
	t.Helper()
	f := sendgridfake.New(key)
	url := f.Start()
	t.Cleanup(f.Close)
	if cfg.APIKey == "" {
		cfg.APIKey = key
	}
	cfg.BaseURL = url
	if cfg.From == "" {
		cfg.From = from
	}
	s, err := sendgrid.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f, s
}

func message() *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.Email,
		To:             to,
		Category:       "security",
		Priority:       delivery.High,
		Content:        delivery.Content{Subject: "Your code", Text: text, HTML: html},
		Attempt:        1,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkSecrets fails the test if err mentions the address, the body or the key.
func checkSecrets(t *testing.T, err error) {
	t.Helper()
	for _, secret := range []string{to, text, html, key, "123456"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains %q", err, secret)
		}
	}
}

func TestSendBuildsTheMail(t *testing.T) {
	f, s := setup(t, sendgrid.Config{FromName: "Herald", Categories: []string{"herald"}})
	m := message()
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("fake recorded %d messages", len(msgs))
	}
	got := msgs[0]
	if res.ProviderMessageID == "" || res.ProviderMessageID != got.MessageID {
		t.Errorf("ProviderMessageID %q, fake answered %q", res.ProviderMessageID, got.MessageID)
	}
	if len(got.To) != 1 || got.To[0] != to || got.From != from || got.FromName != "Herald" ||
		got.Subject != "Your code" || got.Text != text || got.HTML != html {
		t.Errorf("sent %+v", got)
	}
	if got.CustomArgs["delivery_id"] != m.DeliveryID.String() ||
		got.CustomArgs["notification_id"] != m.NotificationID.String() {
		t.Errorf("custom_args %v", got.CustomArgs)
	}
	if strings.Join(got.Categories, ",") != "herald,security" {
		t.Errorf("categories %v", got.Categories)
	}
	if f.Count(m.DeliveryID.String()) != 1 {
		t.Error("not counted once")
	}
	if s.Provider() != "sendgrid" {
		t.Errorf("Provider() = %q", s.Provider())
	}
}

func TestSendTextOnlyAndHTMLOnly(t *testing.T) {
	f, s := setup(t, sendgrid.Config{})
	textOnly, htmlOnly := message(), message()
	textOnly.Content.HTML = ""
	htmlOnly.Content.Text = ""
	for _, m := range []*workers.Message{textOnly, htmlOnly} {
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.Messages()
	if msgs[0].Text != text || msgs[0].HTML != "" || msgs[1].Text != "" || msgs[1].HTML != html {
		t.Errorf("sent %+v", msgs)
	}
}

func TestKeyIsSentAsBearerToken(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	s, err := sendgrid.New(sendgrid.Config{APIKey: key, BaseURL: srv.URL, From: from})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if got != "Bearer "+key {
		t.Errorf("Authorization %q", got)
	}
}

func TestAnswerMapping(t *testing.T) {
	tests := []struct {
		name       string
		cfg        sendgrid.Config
		prepare    func(*sendgridfake.Fake, *workers.Message)
		outcome    workers.Outcome
		reason     string
		retryAfter time.Duration
		status     int // the *sendgrid.APIError's, 0 for none
	}{
		{
			name:    "400 invalid address",
			prepare: func(_ *sendgridfake.Fake, m *workers.Message) { m.To = "ada.lovelace@" },
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400,
		},
		{
			name:    "400",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Fail(400, 1) },
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400,
		},
		{
			name:    "413",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Fail(413, 1) },
			outcome: workers.OutcomeFailed, reason: "rejected", status: 413,
		},
		{
			name:    "401 wrong key",
			cfg:     sendgrid.Config{APIKey: "SG.wrong-key"},
			outcome: workers.OutcomeRetry, reason: "provider_config", status: 401,
		},
		{
			name:    "403",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Fail(403, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_config", status: 403,
		},
		{
			name: "429 with Retry-After",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) {
				f.SetRetryAfter(7 * time.Second)
				f.Fail(429, 1)
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", retryAfter: 7 * time.Second, status: 429,
		},
		{
			name:    "500",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Fail(500, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 500,
		},
		{
			name:    "503",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Fail(503, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 503,
		},
		{
			name:    "connection dropped",
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.Drop(1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable",
		},
		{
			name:    "timeout",
			cfg:     sendgrid.Config{Timeout: 100 * time.Millisecond},
			prepare: func(f *sendgridfake.Fake, _ *workers.Message) { f.SetDelay(time.Minute) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := setup(t, tt.cfg)
			m := message()
			if tt.prepare != nil {
				tt.prepare(f, m)
			}
			start := time.Now()
			_, err := s.Send(ctx(t), m)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Send took %v", d)
			}
			t.Log(err)
			o, reason, ra := workers.Classify(err)
			if o != tt.outcome || reason != tt.reason || ra != tt.retryAfter {
				t.Errorf("Classify = %v, %q, %v; want %v, %q, %v (err: %v)",
					o, reason, ra, tt.outcome, tt.reason, tt.retryAfter, err)
			}
			var apiErr *sendgrid.APIError
			if errors.As(err, &apiErr) {
				if apiErr.StatusCode != tt.status {
					t.Errorf("status %d, want %d", apiErr.StatusCode, tt.status)
				}
				if apiErr.Message == "" {
					t.Errorf("no SendGrid message in %v", err)
				}
			} else if tt.status != 0 {
				t.Errorf("%v is not an *APIError", err)
			}
			if !strings.Contains(err.Error(), m.DeliveryID.String()) {
				t.Errorf("error %q does not name the delivery", err)
			}
			checkSecrets(t, err)
			if strings.Contains(err.Error(), m.To) {
				t.Errorf("error %q contains the address", err)
			}
			if len(f.Messages()) != 0 {
				t.Error("the fake accepted the message")
			}
		})
	}
}

func TestRejectionNamesTheField(t *testing.T) {
	_, s := setup(t, sendgrid.Config{})
	m := message()
	m.To = "not-an-address"
	_, err := s.Send(ctx(t), m)
	if err == nil || !strings.Contains(err.Error(), "personalizations.0.to.0.email") {
		t.Fatalf("error %v does not name the field", err)
	}
	if strings.Contains(err.Error(), m.To) {
		t.Errorf("error %q contains the address", err)
	}
}

func TestErrorsRedactAddressesSendGridQuotes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"errors":[{"message":"Each unique email address in the personalizations array should only be included once. You have included ` +
			to + ` more than once.","field":"personalizations.0.to","help":null},` +
			`{"message":"also <someone.else@example.org>","field":null,"help":null}]}`))
	}))
	defer srv.Close()
	s, err := sendgrid.New(sendgrid.Config{APIKey: key, BaseURL: srv.URL, From: from})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if err == nil {
		t.Fatal("Send succeeded")
	}
	checkSecrets(t, err)
	if strings.Contains(err.Error(), "someone.else@example.org") {
		t.Errorf("error %q contains an address", err)
	}
	if !strings.Contains(err.Error(), "field personalizations.0.to: Each unique email address") {
		t.Errorf("error %q lost SendGrid's message", err)
	}
}

func TestUnexpectedBodyIsLeftOut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>upstream echoed " + to + "</html>"))
	}))
	defer srv.Close()
	s, err := sendgrid.New(sendgrid.Config{APIKey: key, BaseURL: srv.URL, From: from})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v for %v", o, err)
	}
	if !strings.Contains(err.Error(), "502") {
		t.Errorf("error %q lacks the status", err)
	}
	checkSecrets(t, err)
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := sendgrid.New(sendgrid.Config{APIKey: key, BaseURL: "http://" + addr, From: from})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v for %v", o, err)
	}
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Errorf("%v is not a *TransientError", err)
	}
	checkSecrets(t, err)
}

func TestContextCanceled(t *testing.T) {
	f, s := setup(t, sendgrid.Config{})
	f.SetDelay(time.Minute)
	c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Send(c, message())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v", o)
	}
}

func TestRecoversAfterTransientFailures(t *testing.T) {
	f, s := setup(t, sendgrid.Config{})
	f.Fail(503, 2)
	m := message()
	for i := range 2 {
		if _, err := s.Send(ctx(t), m); err == nil {
			t.Fatalf("attempt %d succeeded", i+1)
		}
	}
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	if n := f.Count(m.DeliveryID.String()); n != 1 {
		t.Errorf("accepted %d times, want once", n)
	}
}

func TestInvalidContentIsNotSent(t *testing.T) {
	f, s := setup(t, sendgrid.Config{})
	noSubject, noBody, sms := message(), message(), message()
	noSubject.Content.Subject = ""
	noBody.Content.Text, noBody.Content.HTML = "", ""
	sms.Channel = delivery.SMS
	for _, m := range []*workers.Message{noSubject, noBody, sms} {
		_, err := s.Send(ctx(t), m)
		if o, _, _ := workers.Classify(err); o != workers.OutcomeFailed {
			t.Errorf("outcome %v for %v", o, err)
		}
	}
	if f.Requests() != 0 {
		t.Errorf("%d requests reached SendGrid", f.Requests())
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  sendgrid.Config
	}{
		{"no key", sendgrid.Config{From: from}},
		{"no from", sendgrid.Config{APIKey: key}},
		{"from with name", sendgrid.Config{APIKey: key, From: "Herald <" + from + ">"}},
		{"bad base URL", sendgrid.Config{APIKey: key, From: from, BaseURL: "api.sendgrid.com"}},
		{"base URL with credentials", sendgrid.Config{APIKey: key, From: from, BaseURL: "https://u:p@api.sendgrid.com"}},
		{"bad reply-to", sendgrid.Config{APIKey: key, From: from, ReplyTo: "nobody"}},
		{"non-ASCII category", sendgrid.Config{APIKey: key, From: from, Categories: []string{"sécurité"}}},
		{"negative timeout", sendgrid.Config{APIKey: key, From: from, Timeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sendgrid.New(tt.cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
	if _, err := sendgrid.New(sendgrid.Config{APIKey: key, From: from}); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

func TestConcurrentSends(t *testing.T) {
	f, s := setup(t, sendgrid.Config{})
	const n = 50
	msgs := make([]*workers.Message, n)
	for i := range msgs {
		msgs[i] = message()
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i, m := range msgs {
		wg.Go(func() {
			res, err := s.Send(context.Background(), m)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = res.ProviderMessageID
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for i, m := range msgs {
		if c := f.Count(m.DeliveryID.String()); c != 1 {
			t.Errorf("delivery %d accepted %d times", i, c)
		}
		if ids[i] == "" || seen[ids[i]] {
			t.Errorf("delivery %d: message id %q missing or repeated", i, ids[i])
		}
		seen[ids[i]] = true
	}
}
