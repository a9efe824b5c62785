package apns_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/apns"
)

const (
	topic  = "com.example.herald"
	teamID = "TEAM123456"
	keyID  = "KEY1234567"
	device = "6a1f3c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
	title  = "Sign-in from a new device"
	body   = "Your code is 735194"
	secret = "s3cr3t-data-value"
)

// loopbackOnly is the tests' dialer: it fails the test on any address but a loopback IP.
func loopbackOnly(t *testing.T) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("dial %s refused: tests stay on loopback", addr)
			return nil, fmt.Errorf("dial %s refused", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
}

// tokenSetup starts a fake that trusts a fresh provider key, and returns it with a Sender
// using that key. cfg's zero fields are filled in.
func tokenSetup(t *testing.T, cfg apns.Config) (*apnsfake.Fake, *apns.Sender) {
	t.Helper()
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	f.TrustKey(teamID, keyID, &key.PublicKey)
	if cfg.Topic == "" {
		cfg.Topic = topic
	}
	if cfg.KeyPEM == nil && cfg.KeyFile == "" {
		cfg.KeyPEM = p8
	}
	if cfg.KeyID == "" {
		cfg.KeyID = keyID
	}
	if cfg.TeamID == "" {
		cfg.TeamID = teamID
	}
	return f, newSender(t, f, url, cfg)
}

// certSetup starts a fake and returns it with a Sender using a certificate the fake's CA
// issued for certTopic.
func certSetup(t *testing.T, certTopic string) (*apnsfake.Fake, *apns.Sender) {
	t.Helper()
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	cc, err := f.CA().Issue(certTopic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return f, newSender(t, f, url, apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM})
}

func newSender(t *testing.T, f *apnsfake.Fake, url string, cfg apns.Config) *apns.Sender {
	t.Helper()
	cfg.Host = url
	if cfg.RootCAs == nil {
		cfg.RootCAs = f.RootCAs()
	}
	s, err := apns.New(apns.WithDial(cfg, loopbackOnly(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func message() *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.IOS,
		To:             device,
		Category:       "security",
		Priority:       delivery.High,
		Content: delivery.Content{Title: title, Body: body,
			Data: map[string]any{"aps": "not Apple's", "screen": "security", "ref": secret}},
		Attempt:   1,
		ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second),
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkSecrets fails the test if err mentions the device token or the payload.
func checkSecrets(t *testing.T, err error, m *workers.Message) {
	t.Helper()
	for _, s := range []string{m.To, device, title, body, "735194", secret} {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
}

type payloadJSON struct {
	Aps struct {
		Alert struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"alert"`
		Sound            string `json:"sound"`
		ContentAvailable int    `json:"content-available"`
	} `json:"aps"`
	Data map[string]any `json:"data"`
}

func TestSendWithTokenAuth(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	m := message()
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.ProviderMessageID != m.DeliveryID.String() {
		t.Errorf("ProviderMessageID %q, want the delivery id %s", res.ProviderMessageID, m.DeliveryID)
	}
	got := f.Notifications()
	if len(got) != 1 {
		t.Fatalf("fake recorded %d notifications", len(got))
	}
	n := got[0]
	if n.Token != device || n.Topic != topic || n.ApnsID != m.DeliveryID.String() || n.PushType != "alert" ||
		n.Priority != 10 || !n.Expiration.Equal(m.ExpiresAt) || n.CollapseID != "" || n.Auth != "token" ||
		n.KeyID != keyID {
		t.Errorf("recorded %+v", n)
	}
	var p payloadJSON
	if err := json.Unmarshal(n.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.Aps.Alert.Title != title || p.Aps.Alert.Body != body || p.Aps.Sound != "default" ||
		p.Aps.ContentAvailable != 0 {
		t.Errorf("aps %+v", p.Aps)
	}
	if p.Data["aps"] != "not Apple's" || p.Data["screen"] != "security" || p.Data["ref"] != secret {
		t.Errorf("data %v", p.Data)
	}
	if f.Count(m.DeliveryID.String()) != 1 {
		t.Error("not counted once")
	}
	if s.Provider() != "apns" {
		t.Errorf("Provider() = %q", s.Provider())
	}
}

func TestSendWithCertificateAuth(t *testing.T) {
	f, s := certSetup(t, topic)
	m := message()
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	if got := f.Notifications(); len(got) != 1 || got[0].Auth != "certificate" || got[0].Topic != topic {
		t.Fatalf("recorded %+v", got)
	}
}

func TestCertificateFromFiles(t *testing.T) {
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	cc, err := f.CA().Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	combined := filepath.Join(dir, "push.pem")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, b := range map[string][]byte{
		combined: append(append([]byte(nil), cc.KeyPEM...), cc.CertPEM...),
		certFile: cc.CertPEM,
		keyFile:  cc.KeyPEM,
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, cfg := range map[string]apns.Config{
		"combined PEM":          {Topic: topic, CertFile: combined},
		"certificate and key":   {Topic: topic, CertFile: certFile, KeyFile: keyFile},
		"certificate file, key": {Topic: topic, CertFile: certFile, KeyPEM: cc.KeyPEM},
	} {
		t.Run(name, func(t *testing.T) {
			s := newSender(t, f, url, cfg)
			if _, err := s.Send(ctx(t), message()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCertificateFromP12(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed; it builds the PKCS #12 file")
	}
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	cc, err := f.CA().Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, p12File := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "push.p12")
	if err := os.WriteFile(certFile, cc.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, cc.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The algorithms Keychain exports, and the only ones x/crypto/pkcs12 (apns2's) reads.
	out, err := exec.Command(openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile,
		"-out", p12File, "-passout", "pass:hunter2", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
		"-macalg", "sha1").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v: %s", err, out)
	}
	s := newSender(t, f, url, apns.Config{Topic: topic, P12File: p12File, Password: "hunter2"})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if _, err := apns.New(apns.Config{Topic: topic, P12File: p12File, Password: "wrong"}); err == nil ||
		strings.Contains(err.Error(), "hunter2") {
		t.Errorf("wrong password: %v", err)
	}
}

func TestKeyFromFile(t *testing.T) {
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "AuthKey_"+keyID+".p8")
	if err := os.WriteFile(file, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	f.TrustKey(teamID, keyID, &key.PublicKey)
	s := newSender(t, f, url, apns.Config{Topic: topic, KeyFile: file, KeyID: keyID, TeamID: teamID})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
}

func TestPriorityAndPushType(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	low, normal, dataOnly, noExpiry := message(), message(), message(), message()
	low.Priority = delivery.Low
	normal.Priority = delivery.Normal
	dataOnly.Content.Title, dataOnly.Content.Body = "", ""
	noExpiry.ExpiresAt = time.Time{}
	noExpiry.Content.Data = nil
	for _, m := range []*workers.Message{low, normal, dataOnly, noExpiry} {
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	got := f.Notifications()
	if got[0].Priority != 5 || got[0].PushType != "alert" {
		t.Errorf("low: priority %d push type %s", got[0].Priority, got[0].PushType)
	}
	if got[1].Priority != 10 {
		t.Errorf("normal: priority %d", got[1].Priority)
	}
	var p payloadJSON
	if err := json.Unmarshal(got[2].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if got[2].PushType != "background" || got[2].Priority != 5 || p.Aps.ContentAvailable != 1 ||
		p.Aps.Sound != "" || p.Aps.Alert.Title != "" || p.Data["ref"] != secret {
		t.Errorf("data only: %+v, payload %s", got[2], got[2].Payload)
	}
	if _, ok := got[3].Header["Apns-Expiration"]; ok || !got[3].Expiration.IsZero() {
		t.Errorf("no expiry: apns-expiration %q sent", got[3].Header.Get("apns-expiration"))
	}
	if strings.Contains(string(got[3].Payload), `"data"`) {
		t.Errorf("no data: payload %s", got[3].Payload)
	}
}

// row is one row of the outcome table, as seen through workers.Classify.
type row struct {
	name    string
	reasons []string // the APNs reasons this row covers
	cfg     func(*testing.T, *apnsfake.Fake, string) *apns.Sender
	prepare func(*apnsfake.Fake, *workers.Message)
	// want
	outcome  workers.Outcome
	reason   string
	config   bool // a *workers.ConfigError
	effect   workers.Effect
	since    time.Time // for DeactivateToken; zero means "about now"
	status   int       // the *apns.APIError's; 0 for none
	requests int       // requests the fake saw; 0 means 1
}

func fail(reason string) func(*apnsfake.Fake, *workers.Message) {
	return func(f *apnsfake.Fake, _ *workers.Message) { f.Fail(apnsfake.ErrorFor(reason), 1) }
}

func permanent(name, reason string, status int, apnsReasons ...string) row {
	return row{name: name, reasons: apnsReasons, prepare: fail(apnsReasons[0]),
		outcome: workers.OutcomeFailed, reason: reason, status: status}
}

func misconfigured(name string, status int, apnsReasons ...string) row {
	return row{name: name, reasons: apnsReasons, prepare: fail(apnsReasons[0]),
		outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: status}
}

func transient(name string, status int, apnsReasons ...string) row {
	return row{name: name, reasons: apnsReasons, prepare: fail(apnsReasons[0]),
		outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: status}
}

func TestOutcomeTable(t *testing.T) {
	unregisteredAt := time.UnixMilli(1_750_000_000_999)
	rows := []row{
		{
			name: "410 Unregistered", reasons: []string{"Unregistered"},
			prepare: func(f *apnsfake.Fake, m *workers.Message) { f.Unregister(m.To, unregisteredAt) },
			outcome: workers.OutcomeFailed, reason: "unregistered", effect: workers.DeactivateToken,
			since: unregisteredAt.Truncate(time.Second), status: 410,
		},
		{
			name: "410 ExpiredToken", reasons: []string{"ExpiredToken"}, prepare: fail("ExpiredToken"),
			outcome: workers.OutcomeFailed, reason: "unregistered", effect: workers.DeactivateToken, status: 410,
		},
		{
			name: "410 without a reason", prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.Error{Status: 410}, 1)
			},
			outcome: workers.OutcomeFailed, reason: "unregistered", effect: workers.DeactivateToken, status: 410,
		},
		{
			name: "400 BadDeviceToken from APNs", reasons: []string{"BadDeviceToken"},
			prepare: func(_ *apnsfake.Fake, m *workers.Message) { m.To = "abcd" }, // hex, but too short for APNs
			outcome: workers.OutcomeFailed, reason: "bad_token", status: 400,
		},
		permanent("400 MissingDeviceToken", "bad_token", 400, "MissingDeviceToken"),
		{
			name: "400 DeviceTokenNotForTopic", reasons: []string{"DeviceTokenNotForTopic"},
			prepare: func(f *apnsfake.Fake, m *workers.Message) {
				f.FailToken(m.To, apnsfake.ErrorFor("DeviceTokenNotForTopic"))
			},
			outcome: workers.OutcomeFailed, reason: "token_not_for_topic", status: 400,
		},
		{
			name: "400 BadTopic", reasons: []string{"BadTopic"},
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				return tokenSender(t, f, url, apns.Config{Topic: "com.example.herald!"})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 400,
		},
		{
			name: "400 TopicDisallowed", reasons: []string{"TopicDisallowed"},
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				return tokenSender(t, f, url, apns.Config{Topic: "com.example.other"})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 400,
		},
		misconfigured("400 MissingTopic", 400, "MissingTopic"),
		transient("400 IdleTimeout", 400, "IdleTimeout"),
		permanent("400 BadCollapseId", "rejected", 400, "BadCollapseId"),
		permanent("400 BadExpirationDate", "rejected", 400, "BadExpirationDate"),
		permanent("400 BadMessageId", "rejected", 400, "BadMessageId"),
		permanent("400 BadPriority", "rejected", 400, "BadPriority"),
		permanent("400 DuplicateHeaders", "rejected", 400, "DuplicateHeaders"),
		permanent("400 InvalidPushType", "rejected", 400, "InvalidPushType"),
		permanent("400 PayloadEmpty", "rejected", 400, "PayloadEmpty"),
		{
			name: "400 with an undocumented reason", prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.Error{Status: 400, Reason: "SomethingNew"}, 1)
			},
			outcome: workers.OutcomeFailed, reason: "rejected", status: 400,
		},
		{
			name: "403 ExpiredProviderToken twice", reasons: []string{"ExpiredProviderToken"},
			prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.ErrorFor("ExpiredProviderToken"), apnsfake.Always)
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 403, requests: 2,
		},
		{
			name: "403 InvalidProviderToken", reasons: []string{"InvalidProviderToken"},
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				untrusted, _, err := apnsfake.NewAuthKey()
				if err != nil {
					t.Fatal(err)
				}
				return tokenSender(t, f, url, apns.Config{KeyPEM: untrusted})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 403,
		},
		misconfigured("403 MissingProviderToken", 403, "MissingProviderToken"),
		{
			name: "403 BadCertificate", reasons: []string{"BadCertificate"},
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				cc, err := f.CA().Issue("", time.Time{}) // no topic in the subject
				if err != nil {
					t.Fatal(err)
				}
				return newSender(t, f, url, apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 403,
		},
		misconfigured("403 BadCertificateEnvironment", 403, "BadCertificateEnvironment"),
		misconfigured("403 Forbidden", 403, "Forbidden"),
		misconfigured("403 UnrelatedKeyIdInToken", 403, "UnrelatedKeyIdInToken"),
		{
			name: "403 with an undocumented reason", prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.Error{Status: 403, Reason: "SomethingNew"}, 1)
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, status: 403,
		},
		misconfigured("404 BadPath", 404, "BadPath"),
		misconfigured("405 MethodNotAllowed", 405, "MethodNotAllowed"),
		permanent("413 PayloadTooLarge", "payload_too_large", 413, "PayloadTooLarge"),
		transient("429 TooManyRequests", 429, "TooManyRequests"),
		transient("429 TooManyProviderTokenUpdates", 429, "TooManyProviderTokenUpdates"),
		transient("500 InternalServerError", 500, "InternalServerError"),
		transient("503 ServiceUnavailable", 503, "ServiceUnavailable"),
		transient("503 Shutdown", 503, "Shutdown"),
		{
			name: "502 without a reason", prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.Error{Status: 502}, 1)
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 502,
		},
		{
			name: "a reason with an unexpected status goes by the status",
			prepare: func(f *apnsfake.Fake, _ *workers.Message) {
				f.Fail(apnsfake.Error{Status: 500, Reason: "BadDeviceToken"}, 1)
			},
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", status: 500,
		},
		{
			name:    "connection dropped",
			prepare: func(f *apnsfake.Fake, _ *workers.Message) { f.Drop(1) },
			outcome: workers.OutcomeRetry, reason: "provider_unavailable",
		},
		{
			name: "timeout",
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				return tokenSender(t, f, url, apns.Config{Timeout: 100 * time.Millisecond})
			},
			prepare: func(f *apnsfake.Fake, _ *workers.Message) { f.SetDelay(time.Minute) },
			// The 100 ms can run out while the connection is still being set up (the race
			// detector slows the handshake) or after the fake has the request: no count.
			outcome: workers.OutcomeRetry, reason: "provider_unavailable", requests: -1,
		},
		{
			name: "client certificate refused in the TLS handshake",
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				foreign, err := apnsfake.NewCA()
				if err != nil {
					t.Fatal(err)
				}
				cc, err := foreign.Issue(topic, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				return newSender(t, f, url, apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, requests: -1,
		},
		{
			name: "APNs's certificate not trusted",
			cfg: func(t *testing.T, f *apnsfake.Fake, url string) *apns.Sender {
				return tokenSender(t, f, url, apns.Config{RootCAs: x509.NewCertPool()})
			},
			outcome: workers.OutcomeRetry, reason: "provider_config", config: true, requests: -1,
		},
	}

	covered := make(map[string]bool)
	for _, r := range rows {
		for _, reason := range r.reasons {
			covered[reason] = true
		}
	}
	for reason := range apnsfake.Reasons {
		if !covered[reason] {
			t.Errorf("no row for APNs reason %s", reason)
		}
	}

	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			f := apnsfake.New(topic)
			url := f.Start()
			t.Cleanup(f.Close)
			var s *apns.Sender
			if r.cfg != nil {
				s = r.cfg(t, f, url)
			} else {
				s = tokenSender(t, f, url, apns.Config{})
			}
			m := message()
			if r.prepare != nil {
				r.prepare(f, m)
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
			o, reason, retryAfter := workers.Classify(err)
			if o != r.outcome || reason != r.reason || retryAfter != 0 {
				t.Errorf("Classify = %v, %q, %v; want %v, %q, 0", o, reason, retryAfter, r.outcome, r.reason)
			}
			var ce *workers.ConfigError
			if errors.As(err, &ce) != r.config {
				t.Errorf("ConfigError: %v, want %v", !r.config, r.config)
			}
			var pe *workers.PermanentError
			if errors.As(err, &pe) {
				if pe.Effect != r.effect {
					t.Errorf("effect %q, want %q", pe.Effect, r.effect)
				}
				switch {
				case r.effect == "":
				case !r.since.IsZero() && !pe.Since.Equal(r.since):
					t.Errorf("since %v, want %v", pe.Since, r.since)
				case r.since.IsZero() && time.Since(pe.Since) > time.Minute:
					t.Errorf("since %v, want about now", pe.Since)
				}
			} else if r.outcome == workers.OutcomeFailed {
				t.Errorf("%v is not a *PermanentError", err)
			}
			var apiErr *apns.APIError
			if errors.As(err, &apiErr) {
				if apiErr.StatusCode != r.status {
					t.Errorf("status %d, want %d", apiErr.StatusCode, r.status)
				}
				if len(r.reasons) > 0 && apiErr.Reason != r.reasons[0] {
					t.Errorf("reason %q, want %q", apiErr.Reason, r.reasons[0])
				}
			} else if r.status != 0 {
				t.Errorf("%v is not an *APIError", err)
			}
			if !strings.Contains(err.Error(), m.DeliveryID.String()) {
				t.Errorf("error %q does not name the delivery", err)
			}
			checkSecrets(t, err, m)
			if len(f.Notifications()) != 0 {
				t.Error("the fake accepted the notification")
			}
			want := r.requests
			if want == 0 {
				want = 1
			}
			if want > 0 && f.Requests() != want {
				t.Errorf("%d requests, want %d", f.Requests(), want)
			}
		})
	}
}

// tokenSender returns a Sender with token auth for a started fake, trusting a fresh key unless
// cfg brings its own.
func tokenSender(t *testing.T, f *apnsfake.Fake, url string, cfg apns.Config) *apns.Sender {
	t.Helper()
	if cfg.KeyPEM == nil {
		p8, key, err := apnsfake.NewAuthKey()
		if err != nil {
			t.Fatal(err)
		}
		f.TrustKey(teamID, keyID, &key.PublicKey)
		cfg.KeyPEM = p8
	}
	if cfg.Topic == "" {
		cfg.Topic = topic
	}
	cfg.KeyID, cfg.TeamID = keyID, teamID
	return newSender(t, f, url, cfg)
}

func TestExpiredProviderTokenIsRenewedAndResent(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	f.ExpireProviderTokens()
	m := message()
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatalf("Send after the token expired: %v", err)
	}
	if res.ProviderMessageID != m.DeliveryID.String() || f.Count(m.DeliveryID.String()) != 1 {
		t.Errorf("result %+v, count %d", res, f.Count(m.DeliveryID.String()))
	}
	if f.Requests() != 3 {
		t.Errorf("%d requests, want 3 (sent, expired, resent)", f.Requests())
	}
	// The renewed token stays in use.
	if _, err := s.Send(ctx(t), message()); err != nil || f.Requests() != 4 {
		t.Errorf("next Send: %v, %d requests", err, f.Requests())
	}
	if f.ProviderTokens() != 2 {
		t.Errorf("the fake saw %d provider tokens, want 2", f.ProviderTokens())
	}
}

func TestForcedRenewalsAreSpacedOut(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	f.Fail(apnsfake.ErrorFor("ExpiredProviderToken"), apnsfake.Always)
	for i, wantRequests := range []int{2, 3} {
		_, err := s.Send(ctx(t), message())
		if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
			t.Fatalf("send %d: %v", i+1, err)
		}
		if f.Requests() != wantRequests {
			t.Errorf("send %d: %d requests, want %d (renewals at most every %v)", i+1, f.Requests(), wantRequests, apns.MinRenewal)
		}
	}
}

func TestConcurrentSendsRenewTheTokenOnce(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	f.ExpireProviderTokens()
	// Every send below may meet the expired token; only one of them renews it (renewals are
	// spaced out), and the others resend with the renewed one.
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.Send(context.Background(), message()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := len(f.Notifications()); got != n+1 {
		t.Errorf("%d accepted, want %d", got, n+1)
	}
	if got := f.ProviderTokens(); got != 2 {
		t.Errorf("the fake saw %d provider tokens, want 2 (the first and one renewal)", got)
	}
}

func TestConcurrentSendsShareOneConnection(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
	const n = 50
	msgs := make([]*workers.Message, n)
	for i := range msgs {
		msgs[i] = message()
	}
	ids := make([]string, n)
	var wg sync.WaitGroup
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
	for i, m := range msgs {
		if c := f.Count(m.DeliveryID.String()); c != 1 {
			t.Errorf("delivery %d accepted %d times", i, c)
		}
		if ids[i] != m.DeliveryID.String() {
			t.Errorf("delivery %d: message id %q", i, ids[i])
		}
	}
	if c := f.Connections(); c != 1 {
		t.Errorf("%d connections, want 1", c)
	}
}

func TestRejectedBeforeSending(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(*workers.Message)
		reason  string
	}{
		{"token not hex", func(m *workers.Message) { m.To = "not-a-device-token" }, "bad_token"},
		{"token that would change the URL", func(m *workers.Message) { m.To = "../../3/device/" + device }, "bad_token"},
		{"token with a query", func(m *workers.Message) { m.To = device + "?x=1" }, "bad_token"},
		{"empty token", func(m *workers.Message) { m.To = "" }, "bad_token"},
		{"odd-length token", func(m *workers.Message) { m.To = device + "a" }, "bad_token"},
		{"payload over 4096 bytes", func(m *workers.Message) { m.Content.Body = strings.Repeat("x", 4096) }, "payload_too_large"},
		{"data over 4096 bytes", func(m *workers.Message) { m.Content.Data["big"] = strings.Repeat("y", 4000) }, "payload_too_large"},
		{"data JSON cannot encode", func(m *workers.Message) { m.Content.Data["n"] = math.NaN() }, "rejected"},
		{"nothing to show or deliver", func(m *workers.Message) { m.Content = delivery.Content{} }, "rejected"},
		{"another channel", func(m *workers.Message) { m.Channel = delivery.Android }, "wrong_channel"},
	}
	f, s := tokenSetup(t, apns.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message()
			tt.prepare(m)
			_, err := s.Send(ctx(t), m)
			o, reason, _ := workers.Classify(err)
			if o != workers.OutcomeFailed || reason != tt.reason {
				t.Errorf("Classify = %v, %q for %v; want failed, %q", o, reason, err, tt.reason)
			}
			checkSecrets(t, err, m)
		})
	}
	if f.Requests() != 0 {
		t.Errorf("%d requests reached APNs", f.Requests())
	}
	// Exactly at the limit is fine.
	m := message()
	m.Content = delivery.Content{Title: "t"}
	overhead := len(`{"aps":{"alert":{"title":"t","body":""},"sound":"default"}}`)
	m.Content.Body = strings.Repeat("z", apnsfake.MaxPayload-overhead)
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Errorf("payload of exactly %d bytes: %v", apnsfake.MaxPayload, err)
	}
}

func TestAnswerThatIsNotJSON(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>bad gateway for " + r.URL.Path + "</html>"))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p8, _, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := apns.New(apns.WithDial(apns.Config{Topic: topic, Host: srv.URL, RootCAs: roots,
		KeyPEM: p8, KeyID: keyID, TeamID: teamID}, loopbackOnly(t)))
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	_, err = s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Errorf("%v is not a *TransientError", err)
	}
	checkSecrets(t, err, m)
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p8, _, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := apns.New(apns.WithDial(apns.Config{Topic: topic, Host: "https://" + addr,
		KeyPEM: p8, KeyID: keyID, TeamID: teamID}, loopbackOnly(t)))
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	_, err = s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) || tr.RetryAfter != 0 {
		t.Errorf("%v is not a *TransientError without a wait", err)
	}
	checkSecrets(t, err, m)
}

// With TLS 1.3 APNs refuses a client certificate only after the client's handshake is over;
// every send that needed the connection must still see the refusal, not a dropped connection.
func TestRefusedCertificateFailsEveryConcurrentSend(t *testing.T) {
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	foreign, err := apnsfake.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := foreign.Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(t, f, url, apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			m := message()
			_, err := s.Send(ctx(t), m)
			var ce *workers.ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("%v is not a *ConfigError", err)
			}
			checkSecrets(t, err, m)
		})
	}
	wg.Wait()
	if f.Requests() != 0 {
		t.Errorf("%d requests reached the fake", f.Requests())
	}
}

// A server that does not negotiate h2 sends nothing until it gets a request: the Sender must
// refuse it at once rather than wait for an HTTP/2 preface that never comes.
func TestServerWithoutHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the server got a request")
	}))
	srv.TLS = &tls.Config{NextProtos: []string{}} // no ALPN at all, so the handshake succeeds
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p8, _, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := apns.New(apns.WithDial(apns.Config{Topic: topic, Host: srv.URL, RootCAs: roots,
		KeyPEM: p8, KeyID: keyID, TeamID: teamID}, loopbackOnly(t)))
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	_, err = s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"h2"`) {
		t.Errorf("%v is not a *TransientError about the protocol", err)
	}
	checkSecrets(t, err, m)
}

func TestContextCanceled(t *testing.T) {
	f, s := tokenSetup(t, apns.Config{})
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
	f, s := tokenSetup(t, apns.Config{})
	f.Fail(apnsfake.ErrorFor("ServiceUnavailable"), 1)
	f.Drop(1)
	m := message()
	for i := range 2 {
		if _, err := s.Send(ctx(t), m); err == nil {
			t.Fatalf("attempt %d succeeded", i+1)
		}
	}
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.ProviderMessageID != m.DeliveryID.String() || f.Count(m.DeliveryID.String()) != 1 {
		t.Errorf("result %+v, accepted %d times", res, f.Count(m.DeliveryID.String()))
	}
}

func TestDefaultsToProduction(t *testing.T) {
	p8, _, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	var dialed []string
	var mu sync.Mutex
	refuse := func(_ context.Context, _, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		return nil, errors.New("refused by the test")
	}
	s, err := apns.New(apns.WithDial(apns.Config{Topic: topic, KeyPEM: p8, KeyID: keyID, TeamID: teamID}, refuse))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(ctx(t), message())
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
		t.Errorf("outcome %v for %v", o, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialed) == 0 || dialed[0] != "api.push.apple.com:443" {
		t.Errorf("dialed %v, want api.push.apple.com:443", dialed)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	p8, _, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaP8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})
	ca, err := apnsfake.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ca.Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := ca.Issue(topic, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	token := apns.Config{Topic: topic, KeyPEM: p8, KeyID: keyID, TeamID: teamID}
	with := func(change func(*apns.Config)) apns.Config {
		c := token
		change(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  apns.Config
	}{
		{"no topic", with(func(c *apns.Config) { c.Topic = "" })},
		{"topic with a space", with(func(c *apns.Config) { c.Topic = "com.example herald" })},
		{"http host", with(func(c *apns.Config) { c.Host = "http://api.push.apple.com" })},
		{"host with a path", with(func(c *apns.Config) { c.Host = "https://api.push.apple.com/3/device" })},
		{"host without scheme", with(func(c *apns.Config) { c.Host = "api.push.apple.com" })},
		{"negative timeout", with(func(c *apns.Config) { c.Timeout = -time.Second })},
		{"no credentials", apns.Config{Topic: topic}},
		{"no key id", with(func(c *apns.Config) { c.KeyID = "" })},
		{"no team id", with(func(c *apns.Config) { c.TeamID = "" })},
		{"key not PEM", with(func(c *apns.Config) { c.KeyPEM = []byte("not a key") })},
		{"RSA key", with(func(c *apns.Config) { c.KeyPEM = rsaP8 })},
		{"key file missing", with(func(c *apns.Config) { c.KeyPEM, c.KeyFile = nil, "/nonexistent/AuthKey.p8" })},
		{"key file and PEM", with(func(c *apns.Config) { c.KeyFile = "/nonexistent/AuthKey.p8" })},
		{"certificate and key id", with(func(c *apns.Config) { c.CertPEM = cc.CertPEM })},
		{"certificate without key", apns.Config{Topic: topic, CertPEM: cc.CertPEM}},
		{"certificate with junk for a key", apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: []byte("junk")}},
		{"certificate with another's key", apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: expired.KeyPEM}},
		{"expired certificate", apns.Config{Topic: topic, CertPEM: expired.CertPEM, KeyPEM: expired.KeyPEM}},
		{"P12 and PEM", apns.Config{Topic: topic, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM, P12: []byte("x")}},
		{"P12 not PKCS #12", apns.Config{Topic: topic, P12: []byte("not a p12")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := apns.New(tt.cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			t.Log(err)
			for _, secret := range [][]byte{p8, rsaP8, cc.KeyPEM, expired.KeyPEM} {
				if strings.Contains(err.Error(), string(secret[30:60])) {
					t.Errorf("error %q contains key material", err)
				}
			}
		})
	}
	if _, err := apns.New(token); err != nil {
		t.Errorf("minimal token config: %v", err)
	}
	if _, err := apns.New(apns.Config{Topic: topic, Host: apns.HostDevelopment, CertPEM: cc.CertPEM, KeyPEM: cc.KeyPEM}); err != nil {
		t.Errorf("minimal certificate config: %v", err)
	}
}
