package fcm_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/fcm"
)

const (
	project     = "herald-test"
	accessToken = "ya29.herald-test-access-token"
	token       = "dHeraldTestDevice0123456789:APA91bFsecretTokenTail_-0123456789"
	title       = "Your sign-in code"
	text        = "Use 482913 to sign in"
	secretValue = "482913-secret-data"
)

// secrets are the strings no error may contain.
var secrets = []string{token, title, text, secretValue, "482913", accessToken, "PRIVATE KEY"}

// loopbackOnly returns a transport that dials loopback addresses only; any other dial fails
// the test. Every Sender in these tests uses it, for FCM and token requests alike.
func loopbackOnly(t *testing.T) http.RoundTripper {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("a test dialled %s, off loopback", address)
			return errors.New("off loopback")
		}
		return nil
	}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = d.DialContext
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// newSender builds a Sender with the loopback guard; the SDK must never probe the metadata
// server, and if it tried it would find a closed loopback port.
func newSender(t *testing.T, cfg fcm.Config, opts ...fcm.Option) *fcm.Sender {
	t.Helper()
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	s, err := fcm.New(cfg, append([]fcm.Option{fcm.WithTransport(loopbackOnly(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setup starts a fake and a Sender that authenticates with the fake's service-account key
// file. edit, if not nil, changes the configuration first.
func setup(t *testing.T, edit func(*fcm.Config), opts ...fcm.Option) (*fcmfake.Fake, *fcm.Sender) {
	t.Helper()
	f := fcmfake.New(project, accessToken)
	f.Start()
	t.Cleanup(f.Close)
	cfg := fcm.Config{ProjectID: project, CredentialsJSON: f.ServiceAccountJSON(), Endpoint: f.Endpoint()}
	if edit != nil {
		edit(&cfg)
	}
	return f, newSender(t, cfg, opts...)
}

// static returns a token source that always gives tok.
func static(tok string) oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, TokenType: "Bearer"})
}

func message() *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.Android,
		To:             token,
		Category:       "security",
		Priority:       delivery.High,
		Content: delivery.Content{Title: title, Body: text, Data: map[string]any{
			"code": secretValue, "n": 3.0, "ok": true, "obj": map[string]any{"a": []any{1.0, "<b>"}}, "none": nil,
		}},
		Attempt:   1,
		ExpiresAt: time.Now().Add(time.Hour),
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkSecrets fails the test if err mentions the token, the content or a credential.
func checkSecrets(t *testing.T, err error) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
}

func TestSendBuildsTheMessage(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f, s := setup(t, nil, fcm.WithClock(func() time.Time { return now }))
	m := message()
	m.ExpiresAt = now.Add(time.Hour + 900*time.Millisecond)
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("fake recorded %d messages", len(msgs))
	}
	got := msgs[0]
	if res.ProviderMessageID == "" || res.ProviderMessageID != got.Name {
		t.Errorf("ProviderMessageID %q, fake answered %q", res.ProviderMessageID, got.Name)
	}
	if got.Token != token || got.Notification == nil || got.Notification.Title != title || got.Notification.Body != text {
		t.Errorf("sent %+v", got)
	}
	want := map[string]string{
		"code": secretValue, "n": "3", "ok": "true", "obj": `{"a":[1,"<b>"]}`, "none": "null",
		fcm.DeliveryIDKey: m.DeliveryID.String(),
	}
	if !mapsEqual(got.Data, want) {
		t.Errorf("data %v, want %v", got.Data, want)
	}
	if got.Android == nil || got.Android.Priority != "high" || got.Android.TTL == nil || *got.Android.TTL != time.Hour {
		t.Errorf("android %+v", got.Android)
	}
	if f.Count(m.DeliveryID.String()) != 1 {
		t.Error("not counted once")
	}
	if s.Provider() != "fcm" {
		t.Errorf("Provider() = %q", s.Provider())
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPriorityAndTTL(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f, s := setup(t, nil, fcm.WithClock(func() time.Time { return now }))
	ttl := func(d time.Duration) *time.Duration { return &d }
	tests := []struct {
		name     string
		priority delivery.Priority
		expires  time.Time
		wantPrio string
		wantTTL  *time.Duration
	}{
		{"high", delivery.High, now.Add(time.Minute), "high", ttl(time.Minute)},
		{"normal", delivery.Normal, now.Add(time.Minute), "normal", ttl(time.Minute)},
		{"low", delivery.Low, now.Add(time.Minute), "normal", ttl(time.Minute)},
		{"unset", "", now.Add(time.Minute), "normal", ttl(time.Minute)},
		{"no expiry", delivery.Normal, time.Time{}, "normal", nil},
		{"already expired", delivery.Normal, now.Add(-time.Hour), "normal", ttl(0)},
		{"less than a second", delivery.Normal, now.Add(300 * time.Millisecond), "normal", ttl(0)},
		{"beyond four weeks", delivery.Normal, now.Add(60 * 24 * time.Hour), "normal", ttl(fcm.MaxTTL)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.Reset()
			m := message()
			m.Priority, m.ExpiresAt = tt.priority, tt.expires
			if _, err := s.Send(ctx(t), m); err != nil {
				t.Fatal(err)
			}
			a := f.Messages()[0].Android
			if a == nil || a.Priority != tt.wantPrio {
				t.Fatalf("android %+v, want priority %q", a, tt.wantPrio)
			}
			if (a.TTL == nil) != (tt.wantTTL == nil) || a.TTL != nil && *a.TTL != *tt.wantTTL {
				t.Errorf("ttl %v, want %v", a.TTL, tt.wantTTL)
			}
		})
	}
}

func TestDataOnlyMessage(t *testing.T) {
	f, s := setup(t, nil)
	m := message()
	m.Content.Title, m.Content.Body, m.Content.Data = "", "", nil
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	got := f.Messages()[0]
	if got.Notification != nil || len(got.Data) != 1 || got.Data[fcm.DeliveryIDKey] != m.DeliveryID.String() {
		t.Errorf("sent %+v", got)
	}
}

func TestAccessTokenIsFetchedOnceAndReused(t *testing.T) {
	f, s := setup(t, nil)
	for range 3 {
		if _, err := s.Send(ctx(t), message()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.TokenRequests(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

func TestCredentialsFile(t *testing.T) {
	f := fcmfake.New(project, accessToken)
	f.Start()
	defer f.Close()
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, f.ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	// No ProjectID: the key file's project_id is the default.
	s := newSender(t, fcm.Config{CredentialsFile: path, Endpoint: f.Endpoint()})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if len(f.Messages()) != 1 {
		t.Error("not sent")
	}
}

// server starts a stand-in for FCM that answers every send with status, header and body, for
// answers the fake does not give because FCM does not (or not in that form).
func server(t *testing.T, status int, header map[string]string, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

// googleError is Google's error body with an optional FcmError code and field violation.
func googleError(code int, status, msg, fcmCode, field string) string {
	var details []any
	if fcmCode != "" {
		details = append(details, map[string]string{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcmCode})
	}
	if field != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{{"field": field, "description": msg}}})
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status, "details": details}})
	return string(b)
}

func TestOutcomeTable(t *testing.T) {
	type env struct {
		f *fcmfake.Fake
		m *workers.Message
	}
	tests := []struct {
		row  string // the outcome table row the case exercises
		name string
		// cfg edits the configuration; endpoint, when set, replaces the fake with a stand-in
		// (authenticated with a static token).
		cfg      func(*fcm.Config)
		endpoint func(t *testing.T) string
		opts     []fcm.Option
		prepare  func(env)

		outcome    workers.Outcome
		reason     string
		effect     workers.Effect
		config     bool // a *workers.ConfigError
		retryAfter time.Duration
		status     int // the *fcm.APIError's, 0 for none
		deadline   bool
		noID       bool // sent without a provider message id
	}{
		{row: "2xx", name: "accepted", outcome: workers.OutcomeSent},
		{row: "2xx", name: "accepted with an answer the SDK cannot read",
			endpoint: func(t *testing.T) string { return server(t, 200, nil, "OK") },
			outcome:  workers.OutcomeSent, noID: true},
		{row: "UNREGISTERED", name: "UNREGISTERED",
			prepare: func(e env) { e.f.FailToken(token, fcmfake.Unregistered) },
			outcome: workers.OutcomeFailed, reason: "unregistered", effect: workers.DeactivateToken, status: 404},
		{row: "INVALID_ARGUMENT about message.token", name: "INVALID_ARGUMENT on message.token",
			prepare: func(e env) { e.f.FailToken(token, fcmfake.InvalidToken) },
			outcome: workers.OutcomeFailed, reason: "bad_token", effect: workers.DeactivateToken, status: 400},
		{row: "INVALID_ARGUMENT about message.token", name: "malformed token",
			prepare: func(e env) { e.m.To = "not-a-registration-token" },
			outcome: workers.OutcomeFailed, reason: "bad_token", effect: workers.DeactivateToken, status: 400},
		{row: "INVALID_ARGUMENT about message.token", name: "FCM's sentence without field violations",
			endpoint: func(t *testing.T) string {
				return server(t, 400, nil, googleError(400, "INVALID_ARGUMENT",
					"The registration token is not a valid FCM registration token", "INVALID_ARGUMENT", ""))
			},
			outcome: workers.OutcomeFailed, reason: "bad_token", effect: workers.DeactivateToken, status: 400},
		{row: "INVALID_ARGUMENT", name: "INVALID_ARGUMENT in the payload",
			prepare: func(e env) { e.f.FailToken(token, fcmfake.InvalidArgument) },
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400},
		{row: "INVALID_ARGUMENT", name: "payload too big",
			prepare: func(e env) { e.m.Content.Data["big"] = strings.Repeat("x", 5000) },
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400},
		{row: "INVALID_ARGUMENT", name: "front end refuses a field other than the token",
			endpoint: func(t *testing.T) string {
				return server(t, 400, nil, googleError(400, "INVALID_ARGUMENT",
					"Invalid value at 'message.data[0].value' (TYPE_STRING), 1", "", "message.data[0].value"))
			},
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400},
		{row: "INVALID_ARGUMENT", name: "token mentioned, but not as the field at fault",
			endpoint: func(t *testing.T) string {
				return server(t, 400, nil, googleError(400, "INVALID_ARGUMENT",
					"The registration token is not a valid FCM registration token", "INVALID_ARGUMENT", "message.android.ttl"))
			},
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400},
		{row: "SENDER_ID_MISMATCH", name: "SENDER_ID_MISMATCH",
			prepare: func(e env) { e.f.FailToken(token, fcmfake.SenderIDMismatch) },
			outcome: workers.OutcomeFailed, reason: "sender_id_mismatch", effect: workers.DeactivateToken, status: 403},
		{row: "QUOTA_EXCEEDED", name: "QUOTA_EXCEEDED",
			prepare: func(e env) { e.f.SetRetryAfter(7 * time.Second); e.f.Fail(fcmfake.QuotaExceeded, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", retryAfter: 7 * time.Second, status: 429},
		{row: "UNAVAILABLE", name: "UNAVAILABLE",
			prepare: func(e env) { e.f.SetRetryAfter(30 * time.Second); e.f.Fail(fcmfake.Unavailable, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", retryAfter: 30 * time.Second, status: 503},
		{row: "INTERNAL", name: "INTERNAL",
			prepare: func(e env) { e.f.Fail(fcmfake.Internal, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 500},
		{row: "THIRD_PARTY_AUTH_ERROR", name: "THIRD_PARTY_AUTH_ERROR",
			prepare: func(e env) { e.f.Fail(fcmfake.ThirdPartyAuthError, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 401},
		{row: "THIRD_PARTY_AUTH_ERROR", name: "APNS_AUTH_ERROR",
			endpoint: func(t *testing.T) string {
				return server(t, 401, nil, googleError(401, "UNAUTHENTICATED", "Auth error from APNS", "APNS_AUTH_ERROR", ""))
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 401},
		{row: "401 or 403 otherwise", name: "access token refused",
			opts:    []fcm.Option{fcm.WithTokenSource(static("ya29.wrong"))},
			cfg:     func(c *fcm.Config) { c.CredentialsJSON = nil },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 401},
		{row: "401 or 403 otherwise", name: "another project",
			cfg:     func(c *fcm.Config) { c.ProjectID = "someone-elses-project" },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 403},
		{row: "401 or 403 otherwise", name: "PERMISSION_DENIED",
			prepare: func(e env) { e.f.Fail(fcmfake.PermissionDenied, 1) },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 403},
		{row: "404 otherwise", name: "endpoint without /v1",
			cfg:     func(c *fcm.Config) { c.Endpoint = strings.TrimSuffix(c.Endpoint, "/v1") },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 404},
		{row: "408, 429 or 5xx otherwise", name: "502 from a proxy",
			endpoint: func(t *testing.T) string {
				return server(t, 502, map[string]string{"Content-Type": "text/html"}, "<html>bad gateway for "+token+"</html>")
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 502},
		{row: "408, 429 or 5xx otherwise", name: "429 without an FCM code",
			endpoint: func(t *testing.T) string {
				return server(t, 429, map[string]string{"Retry-After": "12"},
					googleError(429, "RESOURCE_EXHAUSTED", "Too many requests.", "", ""))
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", retryAfter: 12 * time.Second, status: 429},
		{row: "other 4xx", name: "413",
			endpoint: func(t *testing.T) string {
				return server(t, 413, nil, googleError(413, "", "Request payload size exceeds the limit.", "", ""))
			},
			outcome: workers.OutcomeFailed, reason: "rejected", status: 413},
		{row: "other status", name: "redirect",
			endpoint: func(t *testing.T) string {
				return server(t, 302, map[string]string{"Location": "http://127.0.0.1:9/elsewhere"}, "")
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 302},
		{row: "token endpoint refuses the credentials", name: "key deleted",
			prepare: func(e env) { e.f.RevokeKey() },
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true},
		{row: "token endpoint fails otherwise", name: "token endpoint 503",
			prepare: func(e env) { e.f.FailTokenRequests(503, fcmfake.Always) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable"},
		{row: "network error, dropped connection, timeout", name: "connection dropped",
			prepare: func(e env) { e.f.Drop(1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable"},
		{row: "network error, dropped connection, timeout", name: "connection dropped after FCM took the message",
			prepare: func(e env) { e.f.DropAccepted(1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable"},
		{row: "network error, dropped connection, timeout", name: "timeout",
			cfg:     func(c *fcm.Config) { c.Timeout = 200 * time.Millisecond },
			prepare: func(e env) { e.f.SetDelay(time.Minute) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", deadline: true},
		{row: "network error, dropped connection, timeout", name: "connection refused",
			endpoint: func(t *testing.T) string {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := l.Addr().String()
				l.Close()
				return "http://" + addr + "/v1"
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable"},
	}

	covered := make(map[string]bool)
	for _, tt := range tests {
		covered[tt.row] = true
		t.Run(tt.name, func(t *testing.T) {
			var f *fcmfake.Fake
			var s *fcm.Sender
			if tt.endpoint != nil {
				s = newSender(t, fcm.Config{ProjectID: project, Endpoint: tt.endpoint(t)},
					append([]fcm.Option{fcm.WithTokenSource(static(accessToken))}, tt.opts...)...)
			} else {
				f, s = setup(t, tt.cfg, tt.opts...)
			}
			m := message()
			if tt.prepare != nil {
				tt.prepare(env{f, m})
			}
			start := time.Now()
			res, err := s.Send(ctx(t), m)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Send took %v", d)
			}
			if f != nil && f.Requests() > 1 {
				t.Errorf("%d requests reached FCM: the SDK retried", f.Requests())
			}
			if f != nil && f.TokenRequests() > 1 {
				t.Errorf("%d token requests: the SDK retried", f.TokenRequests())
			}
			if tt.outcome == workers.OutcomeSent {
				if err != nil || (res.ProviderMessageID == "") != tt.noID {
					t.Fatalf("Send = %+v, %v", res, err)
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded")
			}
			t.Log(err)
			o, reason, ra := workers.Classify(err)
			if o != tt.outcome || reason != tt.reason || ra != tt.retryAfter {
				t.Errorf("Classify = %v, %q, %v; want %v, %q, %v", o, reason, ra, tt.outcome, tt.reason, tt.retryAfter)
			}
			var perm *workers.PermanentError
			if errors.As(err, &perm) && perm.Effect != tt.effect {
				t.Errorf("effect %q, want %q", perm.Effect, tt.effect)
			}
			var ce *workers.ConfigError
			if errors.As(err, &ce) != tt.config {
				t.Errorf("ConfigError: %v, want %v", ce != nil, tt.config)
			}
			var apiErr *fcm.APIError
			if errors.As(err, &apiErr) {
				if apiErr.StatusCode != tt.status {
					t.Errorf("status %d, want %d", apiErr.StatusCode, tt.status)
				}
			} else if tt.status != 0 {
				t.Errorf("%v is not an *APIError", err)
			}
			if tt.deadline && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%v does not wrap context.DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), m.DeliveryID.String()) {
				t.Errorf("error %q does not name the delivery", err)
			}
			checkSecrets(t, err)
			if strings.Contains(err.Error(), m.To) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
	for _, row := range fcm.OutcomeRows() {
		if !covered[row] {
			t.Errorf("no case for the outcome table's row %q", row)
		}
	}
	for row := range covered {
		if !slices.Contains(fcm.OutcomeRows(), row) {
			t.Errorf("case for %q, which is not a row of the outcome table", row)
		}
	}
}

// TestNoSecondSendAfterALostAnswer: when the connection drops after FCM took the message, the
// SDK would send it again on its own; Sender leaves the retry to the worker, which counts it.
func TestNoSecondSendAfterALostAnswer(t *testing.T) {
	f, s := setup(t, nil)
	f.DropAccepted(1)
	m := message()
	if _, err := s.Send(ctx(t), m); err == nil {
		t.Fatal("Send succeeded without an answer")
	}
	if n := f.Count(m.DeliveryID.String()); n != 1 {
		t.Errorf("FCM took the message %d times during one Send", n)
	}
}

// TestUnavailableIsNotRetriedInsideSend: the SDK would wait the minute Retry-After asks for and
// try again; Send returns FCM's answer, wait included, for the worker to honour.
func TestUnavailableIsNotRetriedInsideSend(t *testing.T) {
	f, s := setup(t, nil)
	f.SetRetryAfter(time.Minute)
	f.Fail(fcmfake.Unavailable, fcmfake.Always)
	for range 3 {
		_, err := s.Send(ctx(t), message())
		if o, _, ra := workers.Classify(err); o != workers.OutcomeRetry || ra != time.Minute {
			t.Errorf("Classify = %v, %v for %v", o, ra, err)
		}
	}
	if f.Requests() != 3 {
		t.Errorf("%d requests for 3 sends", f.Requests())
	}
}

func TestRecoversAfterTransientFailures(t *testing.T) {
	f, s := setup(t, nil)
	f.Fail(fcmfake.Internal, 2)
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

// sequence is a token source that gives its tokens in turn, counting calls.
type sequence struct {
	calls  atomic.Int32
	tokens []string
}

func (s *sequence) Token() (*oauth2.Token, error) {
	i := int(s.calls.Add(1)) - 1
	return &oauth2.Token{AccessToken: s.tokens[min(i, len(s.tokens)-1)], Expiry: time.Now().Add(time.Hour)}, nil
}

func TestRefusedAccessTokenIsReplaced(t *testing.T) {
	src := &sequence{tokens: []string{"ya29.revoked", accessToken}}
	_, s := setup(t, func(c *fcm.Config) { c.CredentialsJSON = nil }, fcm.WithTokenSource(src))
	_, err := s.Send(ctx(t), message())
	var ce *workers.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("first send: %v, want a ConfigError", err)
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatalf("third send: %v", err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d tokens fetched, want 2", n)
	}
}

// TestRevokedAccessTokenIsReplaced does the same with service-account credentials: the token
// FCM refused is not reused, the next Send fetches another.
func TestRevokedAccessTokenIsReplaced(t *testing.T) {
	f, s := setup(t, nil)
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	f.SetAccessToken("ya29.rotated")
	_, err := s.Send(ctx(t), message())
	var ce *workers.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("send with the revoked token: %v, want a ConfigError", err)
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatalf("send after: %v", err)
	}
	if n := f.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestContextDeadline(t *testing.T) {
	f, s := setup(t, nil)
	f.SetDelay(time.Minute)
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Send(c, message())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v", o)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send took %v", d)
	}
}

// TestTokenFetchHonoursTheDeadline: a token endpoint that hangs holds up no Send past its
// deadline, and the fetch it started serves the next Send.
func TestTokenFetchHonoursTheDeadline(t *testing.T) {
	f := fcmfake.New(project, accessToken)
	f.Start()
	defer f.Close()
	release := make(chan struct{})
	var fetches atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		<-release
		f.Handler().ServeHTTP(w, r)
	}))
	defer slow.Close()
	defer close(release)
	// The key file's token_uri points at the slow server, which passes requests on to the fake;
	// the JWT's audience is the slow server's token URL, which the fake checks against the Host
	// the request came with, so it matches.
	var key map[string]any
	json.Unmarshal(f.ServiceAccountJSON(), &key)
	key["token_uri"] = slow.URL + "/token"
	creds, _ := json.Marshal(key)
	s := newSender(t, fcm.Config{ProjectID: project, CredentialsJSON: creds, Endpoint: f.Endpoint()})

	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Send(c, message())
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send took %v", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v", o)
	}
	release <- struct{}{}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d token fetches, want the first one only", n)
	}
}

func TestInvalidDeliveriesAreNotSent(t *testing.T) {
	f, s := setup(t, nil)
	tests := []struct {
		name   string
		edit   func(*workers.Message)
		reason string
	}{
		{"other channel", func(m *workers.Message) { m.Channel = delivery.IOS }, "wrong_channel"},
		{"no token", func(m *workers.Message) { m.To = "" }, "bad_token"},
		{"reserved key from", func(m *workers.Message) { m.Content.Data["from"] = "x" }, "rejected"},
		{"reserved key google.", func(m *workers.Message) { m.Content.Data["google.sent_time"] = "x" }, "rejected"},
		{"reserved key gcm.", func(m *workers.Message) { m.Content.Data["gcm.notification"] = "x" }, "rejected"},
		{"value JSON cannot encode", func(m *workers.Message) { m.Content.Data["nan"] = math.NaN() }, "rejected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message()
			tt.edit(m)
			_, err := s.Send(ctx(t), m)
			var perm *workers.PermanentError
			if !errors.As(err, &perm) || perm.Reason != tt.reason || perm.Effect != workers.NoEffect {
				t.Errorf("error %v, want permanent %q without effect", err, tt.reason)
			}
			checkSecrets(t, err)
		})
	}
	if f.Requests() != 0 || f.TokenRequests() != 0 {
		t.Errorf("%d requests and %d token requests went out", f.Requests(), f.TokenRequests())
	}
}

func TestErrorsRedactWhatFCMQuotes(t *testing.T) {
	msg := `Invalid value at 'message.data[0].value' (TYPE_STRING), "` + secretValue + `" for token ` + token +
		`; title "` + title + `" and body "` + text + `"`
	endpoint := server(t, 400, nil, googleError(400, "INVALID_ARGUMENT", msg, "", "message.data[0].value"))
	s := newSender(t, fcm.Config{ProjectID: project, Endpoint: endpoint}, fcm.WithTokenSource(static(accessToken)))
	_, err := s.Send(ctx(t), message())
	if err == nil {
		t.Fatal("Send succeeded")
	}
	checkSecrets(t, err)
	if !strings.Contains(err.Error(), "400 INVALID_ARGUMENT on message.data[0].value: Invalid value at 'message.data[0].value' (TYPE_STRING)") {
		t.Errorf("error %q lost FCM's message", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	f := fcmfake.New(project, accessToken)
	f.Start()
	defer f.Close()
	key := f.ServiceAccountJSON()
	edit := func(change func(map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(key, &m)
		change(m)
		b, _ := json.Marshal(m)
		return b
	}
	noProject := edit(func(m map[string]any) { delete(m, "project_id") })
	tests := []struct {
		name string
		cfg  fcm.Config
		opts []fcm.Option
	}{
		{"no credentials", fcm.Config{ProjectID: project}, nil},
		{"file and JSON", fcm.Config{ProjectID: project, CredentialsFile: "/nonexistent", CredentialsJSON: key}, nil},
		{"JSON and a token source", fcm.Config{ProjectID: project, CredentialsJSON: key}, []fcm.Option{fcm.WithTokenSource(static(accessToken))}},
		{"missing file", fcm.Config{ProjectID: project, CredentialsFile: filepath.Join(t.TempDir(), "none.json")}, nil},
		{"not JSON", fcm.Config{ProjectID: project, CredentialsJSON: []byte("-----BEGIN PRIVATE KEY-----")}, nil},
		{"not a service account", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) { m["type"] = "authorized_user" })}, nil},
		{"external account", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) { m["type"] = "external_account" })}, nil},
		{"no client email", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) { delete(m, "client_email") })}, nil},
		{"bad token URI", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) { m["token_uri"] = "oauth2.googleapis.com/token" })}, nil},
		{"private key not PEM", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) { m["private_key"] = "MIIEvQIBADANBg" })}, nil},
		{"private key garbled", fcm.Config{ProjectID: project, CredentialsJSON: edit(func(m map[string]any) {
			m["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		})}, nil},
		{"no project anywhere", fcm.Config{CredentialsJSON: noProject}, nil},
		{"token source without project", fcm.Config{}, []fcm.Option{fcm.WithTokenSource(static(accessToken))}},
		{"project with a slash", fcm.Config{ProjectID: "a/b", CredentialsJSON: key}, nil},
		{"negative timeout", fcm.Config{ProjectID: project, CredentialsJSON: key, Timeout: -time.Second}, nil},
		{"endpoint without scheme", fcm.Config{ProjectID: project, CredentialsJSON: key, Endpoint: "fcm.googleapis.com/v1"}, nil},
		{"endpoint with credentials", fcm.Config{ProjectID: project, CredentialsJSON: key, Endpoint: "https://u:p@fcm.googleapis.com/v1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fcm.New(tt.cfg, tt.opts...)
			if err == nil {
				t.Fatal("New accepted it")
			}
			t.Log(err)
			checkSecrets(t, err)
			if strings.Contains(err.Error(), "MII") {
				t.Errorf("error %q contains key material", err)
			}
		})
	}
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	for _, cfg := range []fcm.Config{
		{ProjectID: project, CredentialsJSON: key},
		{CredentialsJSON: key},
		{ProjectID: "other-project", CredentialsJSON: noProject, Endpoint: "https://fcm.googleapis.com/v1/", Timeout: time.Second},
	} {
		if _, err := fcm.New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg.ProjectID, err)
		}
	}
}

func TestConcurrentSends(t *testing.T) {
	f, s := setup(t, nil)
	f.Fail(fcmfake.Unavailable, 10)
	const n = 50
	msgs := make([]*workers.Message, n)
	for i := range msgs {
		msgs[i] = message()
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i, m := range msgs {
		wg.Go(func() {
			for {
				res, err := s.Send(context.Background(), m)
				if err == nil {
					ids[i] = res.ProviderMessageID
					return
				}
				if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
					t.Error(err)
					return
				}
			}
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
	if r := f.Requests(); r != n+10 {
		t.Errorf("%d requests, want %d", r, n+10)
	}
	if tr := f.TokenRequests(); tr != 1 {
		t.Errorf("%d token requests, want 1", tr)
	}
}
