package twilio_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/twiliofake"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/twilio"
)

const (
	account = "AC5e3c9d2a7b1f4e8c6a0d9b3f7e2c1a4b"
	token   = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
	keySID  = "SK7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d"
	secret  = "keysecret0123456789"
	from    = "+15005550006"
	to      = "+14155550123"
	body    = "Your Herald code is 123456"
	service = "MG3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f"
)

func setup(t *testing.T, cfg twilio.Config) (*twiliofake.Fake, *twilio.Sender) {
	t.Helper()
	f := twiliofake.New(account, token)
	f.AddAPIKey(keySID, secret)
	u := f.Start()
	t.Cleanup(f.Close)
	if cfg.AccountSID == "" {
		cfg.AccountSID = account
	}
	if cfg.AuthToken == "" && cfg.APIKey == "" {
		cfg.AuthToken = token
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		cfg.From = from
	}
	cfg.BaseURL = u
	s, err := twilio.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return f, s
}

func message() *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.SMS,
		To:             to,
		Category:       "security",
		Priority:       delivery.High,
		Content:        delivery.Content{Body: body},
		Attempt:        1,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkSecrets fails the test if err mentions the number, the body or a credential.
func checkSecrets(t *testing.T, err error, m *workers.Message) {
	t.Helper()
	for _, s := range []string{m.To, strings.TrimPrefix(m.To, "+"), m.Content.Body, "123456", token, secret} {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
}

func TestSendBuildsTheMessage(t *testing.T) {
	f, s := setup(t, twilio.Config{StatusCallback: "https://herald.example/v1/twilio/status"})
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
	if res.ProviderMessageID == "" || res.ProviderMessageID != got.SID {
		t.Errorf("ProviderMessageID %q, fake answered %q", res.ProviderMessageID, got.SID)
	}
	if got.To != to || got.From != from || got.MessagingServiceSID != "" || got.Body != body ||
		got.AuthUser != account || got.StatusCallback != "https://herald.example/v1/twilio/status" ||
		got.ValidityPeriod != 0 {
		t.Errorf("sent %+v", got)
	}
	if f.Count(to, body) != 1 {
		t.Error("not counted once")
	}
	if s.Provider() != "twilio" {
		t.Errorf("Provider() = %q", s.Provider())
	}
}

func TestMessagingService(t *testing.T) {
	f, s := setup(t, twilio.Config{MessagingServiceSID: service})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if got := f.Messages()[0]; got.From != "" || got.MessagingServiceSID != service || got.Status != "accepted" {
		t.Errorf("sent %+v", got)
	}
}

func TestAPIKey(t *testing.T) {
	f, s := setup(t, twilio.Config{APIKey: keySID, APISecret: secret})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if got := f.Messages()[0]; got.AuthUser != keySID || got.AccountSID != account {
		t.Errorf("sent %+v", got)
	}
}

func TestValidityPeriodFollowsExpiry(t *testing.T) {
	f, s := setup(t, twilio.Config{})
	soon, later, past := message(), message(), message()
	soon.ExpiresAt = time.Now().Add(10 * time.Minute)
	later.ExpiresAt = time.Now().Add(delivery.DefaultTTL)
	past.ExpiresAt = time.Now().Add(-time.Second)
	for _, m := range []*workers.Message{soon, later} {
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.Messages()
	if v := msgs[0].ValidityPeriod; v < 595 || v > 600 {
		t.Errorf("validity period %d for 10 minutes left", v)
	}
	if v := msgs[1].ValidityPeriod; v != 0 {
		t.Errorf("validity period %d for a day left, want none (Twilio's maximum)", v)
	}
	_, err := s.Send(ctx(t), past)
	if o, reason, _ := workers.Classify(err); o != workers.OutcomeFailed || reason != "expired" {
		t.Errorf("expired delivery: %v %q (%v)", o, reason, err)
	}
	if f.Requests() != 2 {
		t.Errorf("%d requests, want 2: the expired delivery reached Twilio", f.Requests())
	}
}

// kind names the error class a row expects.
type kind int

const (
	permanent kind = iota + 1
	config
	transient
)

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		cfg        twilio.Config
		prepare    func(*twiliofake.Fake, *workers.Message)
		kind       kind
		reason     string // for permanent
		effect     workers.Effect
		retryAfter time.Duration
		status     int // the *twilio.APIError's, 0 for none
		code       int
	}{
		{
			name:    "21211 invalid number (Twilio's magic number)",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "+15005550001" },
			kind:    permanent, reason: "invalid_number", effect: workers.InvalidNumber, status: 400, code: 21211,
		},
		{
			name:    "21211 not in E.164",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "415 555 0123" },
			kind:    permanent, reason: "invalid_number", effect: workers.InvalidNumber, status: 400, code: 21211,
		},
		{
			name:    "21612 cannot route",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "+15005550002" },
			kind:    permanent, reason: "invalid_number", effect: workers.InvalidNumber, status: 400, code: 21612,
		},
		{
			name:    "21614 not a mobile number",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "+15005550009" },
			kind:    permanent, reason: "invalid_number", effect: workers.InvalidNumber, status: 400, code: 21614,
		},
		{
			name:    "21610 replied STOP",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "+15005550004" },
			kind:    permanent, reason: "opted_out", effect: workers.OptOut, status: 400, code: 21610,
		},
		{
			name:    "21610 for a scripted number",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.FailNumber(to, 21610) },
			kind:    permanent, reason: "opted_out", effect: workers.OptOut, status: 400, code: 21610,
		},
		{
			name:    "21617 body too long",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.Content.Body = strings.Repeat("123456 ", 229) },
			kind:    permanent, reason: "rejected", status: 400, code: 21617,
		},
		{
			name:    "21408 region not enabled",
			prepare: func(_ *twiliofake.Fake, m *workers.Message) { m.To = "+15005550003" },
			kind:    permanent, reason: "rejected", status: 400, code: 21408,
		},
		{
			name: "21606 from number not the account's",
			cfg:  twilio.Config{From: "+15005550007"},
			kind: permanent, reason: "rejected", status: 400, code: 21606,
		},
		{
			name:    "other 4xx",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(21624, 1) },
			kind:    permanent, reason: "rejected", status: 400, code: 21624,
		},
		{
			name: "20003 wrong auth token",
			cfg:  twilio.Config{AuthToken: "ffffffffffffffffffffffffffffffff"},
			kind: config, status: 401, code: 20003,
		},
		{
			name: "20003 wrong API secret",
			cfg:  twilio.Config{APIKey: keySID, APISecret: "wrongsecret"},
			kind: config, status: 401, code: 20003,
		},
		{
			name: "20003 another account",
			cfg:  twilio.Config{AccountSID: "ACffffffffffffffffffffffffffffffff"},
			kind: config, status: 401, code: 20003,
		},
		{
			name:    "403",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(403, 1) },
			kind:    config, status: 403, code: 20005,
		},
		{
			name:    "404",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(404, 1) },
			kind:    config, status: 404, code: 20404,
		},
		{
			name: "21212 invalid from",
			cfg:  twilio.Config{From: "+15005550001"},
			kind: config, status: 400, code: 21212,
		},
		{
			name:    "21701 messaging service does not exist",
			cfg:     twilio.Config{MessagingServiceSID: service},
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(21701, 1) },
			kind:    config, status: 400, code: 21701,
		},
		{
			name:    "21705 messaging service invalid",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(21705, 1) },
			kind:    config, status: 400, code: 21705,
		},
		{
			name:    "20429 without Retry-After",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(20429, 1) },
			kind:    transient, status: 429, code: 20429,
		},
		{
			name: "429 with Retry-After",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) {
				f.SetRetryAfter(7 * time.Second)
				f.Fail(429, 1)
			},
			kind: transient, retryAfter: 7 * time.Second, status: 429, code: 20429,
		},
		{
			name: "21611 from number's queue full",
			cfg:  twilio.Config{From: "+15005550008"},
			kind: transient, status: 400, code: 21611,
		},
		{
			name:    "408",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(408, 1) },
			kind:    transient, status: 408,
		},
		{
			name:    "500",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(500, 1) },
			kind:    transient, status: 500, code: 20500,
		},
		{
			name:    "503",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(503, 1) },
			kind:    transient, status: 503, code: 20503,
		},
		{
			name:    "502 HTML from the load balancer",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Fail(502, 1) },
			kind:    transient, status: 502,
		},
		{
			name:    "connection dropped",
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.Drop(1) },
			kind:    transient,
		},
		{
			name:    "timeout",
			cfg:     twilio.Config{Timeout: 100 * time.Millisecond},
			prepare: func(f *twiliofake.Fake, _ *workers.Message) { f.SetDelay(time.Minute) },
			kind:    transient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := setup(t, tt.cfg)
			m := message()
			if tt.prepare != nil {
				tt.prepare(f, m)
			}
			begin := time.Now()
			_, err := s.Send(ctx(t), m)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("Send took %v", d)
			}
			t.Log(err)
			var (
				perm *workers.PermanentError
				ce   *workers.ConfigError
				tr   *workers.TransientError
			)
			switch tt.kind {
			case permanent:
				if !errors.As(err, &perm) {
					t.Fatalf("%v is not a *workers.PermanentError", err)
				}
				if perm.Reason != tt.reason || perm.Effect != tt.effect || !perm.Since.IsZero() {
					t.Errorf("reason %q effect %q since %v, want %q %q", perm.Reason, perm.Effect, perm.Since, tt.reason, tt.effect)
				}
			case config:
				if !errors.As(err, &ce) {
					t.Fatalf("%v is not a *workers.ConfigError", err)
				}
			case transient:
				if !errors.As(err, &tr) {
					t.Fatalf("%v is not a *workers.TransientError", err)
				}
				if tr.RetryAfter != tt.retryAfter {
					t.Errorf("RetryAfter %v, want %v", tr.RetryAfter, tt.retryAfter)
				}
			}
			var apiErr *twilio.APIError
			if errors.As(err, &apiErr) {
				if apiErr.Status != tt.status || apiErr.Code != tt.code {
					t.Errorf("APIError status %d code %d, want %d %d", apiErr.Status, apiErr.Code, tt.status, tt.code)
				}
				if tt.code != 0 && apiErr.Message == "" {
					t.Errorf("no Twilio message in %v", err)
				}
			} else if tt.status != 0 {
				t.Errorf("%v is not an *APIError", err)
			}
			if !strings.Contains(err.Error(), m.DeliveryID.String()) {
				t.Errorf("error %q does not name the delivery", err)
			}
			checkSecrets(t, err, m)
			if len(f.Messages()) != 0 {
				t.Error("the fake accepted the message")
			}
		})
	}
}

func TestErrorsKeepTwiliosMessageWithoutTheNumber(t *testing.T) {
	_, s := setup(t, twilio.Config{})
	m := message()
	m.To = "+15005550001"
	_, err := s.Send(ctx(t), m)
	if err == nil || !strings.Contains(err.Error(), "The 'To' number [number] is not a valid phone number.") {
		t.Errorf("error %v", err)
	}
	checkSecrets(t, err, m)
}

func TestRedirectIsMisconfiguration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/", http.StatusMovedPermanently)
	}))
	defer srv.Close()
	s, err := twilio.New(twilio.Config{AccountSID: account, AuthToken: token, From: from, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	var ce *workers.ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("%v is not a *workers.ConfigError", err)
	}
}

func TestAcceptedWithAnUnreadableAnswerIsSent(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"sid": "SM0123`))
	}))
	defer srv.Close()
	s, err := twilio.New(twilio.Config{AccountSID: account, AuthToken: token, From: from, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Send(ctx(t), message())
	if err != nil {
		t.Fatalf("Send: %v; Twilio accepted the message, so a retry would send it twice", err)
	}
	if res.ProviderMessageID != "" || calls.Load() != 1 {
		t.Errorf("result %+v after %d calls", res, calls.Load())
	}
}

// TestErrorAnswersKeepTheConnection checks that the Sender reads error answers to the end:
// twilio-go does not close them, which would cost a new connection per failure.
func TestErrorAnswersKeepTheConnection(t *testing.T) {
	f := twiliofake.New(account, token)
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(f.Handler())
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	s, err := twilio.New(twilio.Config{AccountSID: account, AuthToken: token, From: from, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, number := range []string{"+15005550001", "+15005550004", "+15005550009", to, "+15005550002", to} {
		m := message()
		m.To = number
		s.Send(ctx(t), m)
	}
	f.Fail(503, 2)
	for range 3 {
		s.Send(ctx(t), message())
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 9 sequential sends, want 1", n)
	}
	if f.CountTo(to) != 3 {
		t.Errorf("accepted %d", f.CountTo(to))
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := twilio.New(twilio.Config{AccountSID: account, AuthToken: token, From: from, BaseURL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	_, err = s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Errorf("%v is not a *TransientError", err)
	}
	if strings.Contains(err.Error(), account) {
		t.Errorf("error %q names the account (the URL was not dropped)", err)
	}
	checkSecrets(t, err, m)
}

func TestContextCanceled(t *testing.T) {
	f, s := setup(t, twilio.Config{})
	f.SetDelay(time.Minute)
	c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := s.Send(c, message())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Send took %v after its context ended", d)
	}
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v", o)
	}

	c, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := s.Send(c, message()); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want one wrapping context.Canceled", err)
	}
}

func TestRecoversAfterTransientFailures(t *testing.T) {
	f, s := setup(t, twilio.Config{})
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
	if n := f.Count(to, body); n != 1 {
		t.Errorf("accepted %d times, want once", n)
	}
}

func TestInvalidDeliveriesAreNotSent(t *testing.T) {
	f, s := setup(t, twilio.Config{})
	noNumber, noBody, email := message(), message(), message()
	noNumber.To = ""
	noBody.Content.Body = ""
	email.Channel = delivery.Email
	for _, m := range []*workers.Message{noNumber, noBody, email} {
		_, err := s.Send(ctx(t), m)
		if o, _, _ := workers.Classify(err); o != workers.OutcomeFailed {
			t.Errorf("outcome %v for %v", o, err)
		}
	}
	if f.Requests() != 0 {
		t.Errorf("%d requests reached Twilio", f.Requests())
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ok := twilio.Config{AccountSID: account, AuthToken: token, From: from}
	tests := []struct {
		name   string
		change func(*twilio.Config)
	}{
		{"no account", func(c *twilio.Config) { c.AccountSID = "" }},
		{"bad account", func(c *twilio.Config) { c.AccountSID = "AC123" }},
		{"no token", func(c *twilio.Config) { c.AuthToken = "" }},
		{"token with symbols", func(c *twilio.Config) { c.AuthToken = "abc/def+ghi=" }},
		{"token and key", func(c *twilio.Config) { c.APIKey, c.APISecret = keySID, secret }},
		{"bad key", func(c *twilio.Config) { c.AuthToken, c.APIKey, c.APISecret = "", "SK1", secret }},
		{"key without secret", func(c *twilio.Config) { c.AuthToken, c.APIKey = "", keySID }},
		{"secret without key", func(c *twilio.Config) { c.AuthToken, c.APISecret = "", secret }},
		{"no sender", func(c *twilio.Config) { c.From = "" }},
		{"from and service", func(c *twilio.Config) { c.MessagingServiceSID = service }},
		{"bad service", func(c *twilio.Config) { c.From, c.MessagingServiceSID = "", "MG1" }},
		{"relative callback", func(c *twilio.Config) { c.StatusCallback = "/twilio/status" }},
		{"base URL with path", func(c *twilio.Config) { c.BaseURL = "https://api.twilio.com/2010-04-01" }},
		{"base URL with credentials", func(c *twilio.Config) { c.BaseURL = "https://u:p@api.twilio.com" }},
		{"base URL without scheme", func(c *twilio.Config) { c.BaseURL = "api.twilio.com" }},
		{"bad region", func(c *twilio.Config) { c.Region = "IE1.evil.example/" }},
		{"negative timeout", func(c *twilio.Config) { c.Timeout = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			_, err := twilio.New(cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			for _, s := range []string{token, secret, "abc/def+ghi="} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains a secret", err)
				}
			}
		})
	}
	for _, cfg := range []twilio.Config{
		ok,
		{AccountSID: account, APIKey: keySID, APISecret: secret, MessagingServiceSID: service},
		{AccountSID: account, AuthToken: token, From: "Herald", BaseURL: twilio.DefaultBaseURL, Region: "ie1", Edge: "dublin"},
	} {
		if _, err := twilio.New(cfg); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

func TestConcurrentSends(t *testing.T) {
	f, s := setup(t, twilio.Config{})
	f.Fail(503, 5)
	const n = 50
	msgs := make([]*workers.Message, n)
	for i := range msgs {
		msgs[i] = message()
		msgs[i].To = fmt.Sprintf("+1415555%04d", i)
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i, m := range msgs {
		wg.Go(func() {
			for {
				res, err := s.Send(context.Background(), m)
				var tr *workers.TransientError
				if errors.As(err, &tr) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = res.ProviderMessageID
				return
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for i, m := range msgs {
		if c := f.Count(m.To, body); c != 1 {
			t.Errorf("message %d accepted %d times", i, c)
		}
		if ids[i] == "" || seen[ids[i]] {
			t.Errorf("message %d: SID %q missing or repeated", i, ids[i])
		}
		seen[ids[i]] = true
	}
	if r := f.Requests(); r != n+5 {
		t.Errorf("%d requests, want %d", r, n+5)
	}
}
