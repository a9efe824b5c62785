//lint:file-ignore SA1019 apns2's clients come with x/net's (deprecated) http2.Transport; the tests reach into it for RootCAs.

package apnsfake_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/google/uuid"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/heraldhq/herald/internal/fakes/apnsfake"
)

const (
	topic  = "com.example.herald"
	teamID = "TEAM123456"
	keyID  = "KEY1234567"
	device = "6a1f3c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
)

// env is a started fake with one trusted provider key.
type env struct {
	f   *apnsfake.Fake
	url string
	key *ecdsa.PrivateKey
	tok *token.Token
}

func start(t *testing.T) *env {
	t.Helper()
	f := apnsfake.New(topic)
	url := f.Start()
	t.Cleanup(f.Close)
	_, key, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	f.TrustKey(teamID, keyID, &key.PublicKey)
	tok := &token.Token{AuthKey: key, KeyID: keyID, TeamID: teamID}
	if _, err := tok.Generate(); err != nil {
		t.Fatal(err)
	}
	return &env{f: f, url: url, key: key, tok: tok}
}

// tokenClient is an apns2 client with token auth pointed at the fake.
func (e *env) tokenClient() *apns2.Client {
	c := apns2.NewTokenClient(e.tok)
	c.Host = e.url
	c.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: e.f.RootCAs()}
	return c
}

// certClient is an apns2 client with certificate auth pointed at the fake.
func (e *env) certClient(cert tls.Certificate) *apns2.Client {
	c := apns2.NewClient(cert)
	c.Host = e.url
	c.HTTPClient.Transport.(*http2.Transport).TLSClientConfig.RootCAs = e.f.RootCAs()
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func notification() *apns2.Notification {
	return &apns2.Notification{
		DeviceToken: device,
		Topic:       topic,
		ApnsID:      uuid.NewString(),
		Priority:    apns2.PriorityHigh,
		Payload:     payload.NewPayload().AlertTitle("Hello").AlertBody("World").Sound("default"),
	}
}

func push(t *testing.T, c *apns2.Client, n *apns2.Notification) *apns2.Response {
	t.Helper()
	res, err := c.PushWithContext(ctx(t), n)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAcceptsApns2WithTokenAuth(t *testing.T) {
	e := start(t)
	n := notification()
	n.Expiration = time.Unix(2_000_000_000, 0)
	n.CollapseID = "news"
	res := push(t, e.tokenClient(), n)
	if !res.Sent() || res.ApnsID != n.ApnsID || res.Reason != "" {
		t.Fatalf("response %+v", res)
	}
	got := e.f.Notifications()
	if len(got) != 1 {
		t.Fatalf("recorded %d notifications", len(got))
	}
	g := got[0]
	if g.Token != device || g.Topic != topic || g.ApnsID != n.ApnsID || g.PushType != "alert" ||
		g.Priority != 10 || g.CollapseID != "news" || !g.Expiration.Equal(n.Expiration) ||
		g.Auth != "token" || g.KeyID != keyID {
		t.Errorf("recorded %+v", g)
	}
	if g.Header.Get("Authorization") != "" {
		t.Error("the provider token was recorded")
	}
	var p struct {
		Aps struct {
			Alert struct{ Title, Body string }
			Sound string
		}
	}
	if err := json.Unmarshal(g.Payload, &p); err != nil || p.Aps.Alert.Title != "Hello" ||
		p.Aps.Alert.Body != "World" || p.Aps.Sound != "default" {
		t.Errorf("payload %s (%v)", g.Payload, err)
	}
	if e.f.Count(n.ApnsID) != 1 || e.f.Count(strings.ToUpper(n.ApnsID)) != 1 {
		t.Error("not counted once")
	}
}

func TestGeneratesApnsIDWhenLeftOut(t *testing.T) {
	e := start(t)
	n := notification()
	n.ApnsID = ""
	res := push(t, e.tokenClient(), n)
	if _, err := uuid.Parse(res.ApnsID); !res.Sent() || err != nil {
		t.Fatalf("response %+v", res)
	}
	if e.f.Count(res.ApnsID) != 1 {
		t.Error("not counted under the generated id")
	}
}

func TestCertificateAuth(t *testing.T) {
	e := start(t)
	cc, err := e.f.CA().Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	c := e.certClient(cc.Certificate)
	if res := push(t, c, notification()); !res.Sent() {
		t.Fatalf("response %+v", res)
	}
	// A single-topic certificate lets the client leave the topic out.
	n := notification()
	n.Topic = ""
	if res := push(t, c, n); !res.Sent() {
		t.Fatalf("without topic: response %+v", res)
	}
	got := e.f.Notifications()
	if len(got) != 2 || got[0].Auth != "certificate" || got[1].Topic != topic {
		t.Errorf("recorded %+v", got)
	}
}

func TestCertificateAuthRefusals(t *testing.T) {
	e := start(t)
	other, err := e.f.CA().Issue("com.example.other", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	noTopic, err := e.f.CA().Issue("", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res := push(t, e.certClient(other.Certificate), notification()); res.Reason != apns2.ReasonTopicDisallowed {
		t.Errorf("certificate for another app: %+v", res)
	}
	if res := push(t, e.certClient(noTopic.Certificate), notification()); res.StatusCode != 403 ||
		res.Reason != apns2.ReasonBadCertificate {
		t.Errorf("certificate without topic: %+v", res)
	}

	// Certificates from a CA the fake does not trust, or expired ones, fail the TLS handshake,
	// as they do with APNs.
	foreign, err := apnsfake.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := foreign.Issue(topic, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.certClient(stranger.Certificate).PushWithContext(ctx(t), notification()); err == nil {
		t.Errorf("foreign certificate: %+v", res)
	}
	expired, err := e.f.CA().Issue(topic, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.certClient(expired.Certificate).PushWithContext(ctx(t), notification()); err == nil {
		t.Errorf("expired certificate: %+v", res)
	}
	if len(e.f.Notifications()) != 0 {
		t.Error("a refused notification was recorded")
	}
}

// signed returns a provider token signed by key with the given header and claims.
func signed(t *testing.T, key *ecdsa.PrivateKey, kid, iss string, iat time.Time) string {
	t.Helper()
	j := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": iss, "iat": iat.Unix()})
	j.Header["kid"] = kid
	s, err := j.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestProviderTokens(t *testing.T) {
	e := start(t)
	_, otherKey, err := apnsfake.NewAuthKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name, auth, reason string
	}{
		{"valid", "bearer " + signed(t, e.key, keyID, teamID, now), ""},
		{"scheme is case-insensitive", "Bearer " + signed(t, e.key, keyID, teamID, now), ""},
		{"59 minutes old", "bearer " + signed(t, e.key, keyID, teamID, now.Add(-59*time.Minute)), ""},
		{"missing", "", "MissingProviderToken"},
		{"not a JWT", "bearer abc.def", "InvalidProviderToken"},
		{"no scheme", signed(t, e.key, keyID, teamID, now), "InvalidProviderToken"},
		{"other key", "bearer " + signed(t, otherKey, keyID, teamID, now), "InvalidProviderToken"},
		{"unknown key id", "bearer " + signed(t, e.key, "UNKNOWN123", teamID, now), "InvalidProviderToken"},
		{"other team", "bearer " + signed(t, e.key, keyID, "OTHERTEAM1", now), "InvalidProviderToken"},
		{"issued in the future", "bearer " + signed(t, e.key, keyID, teamID, now.Add(time.Hour)), "InvalidProviderToken"},
		{"older than an hour", "bearer " + signed(t, e.key, keyID, teamID, now.Add(-61*time.Minute)), "ExpiredProviderToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := headers()
			if tt.auth == "" {
				delete(h, "Authorization")
			} else {
				h["Authorization"] = tt.auth
			}
			st, reason, _ := do(t, e.url, e.f, http.MethodPost, apnsfake.DevicePath+device, h, validPayload)
			if tt.reason == "" {
				if st != 200 {
					t.Fatalf("status %d %s", st, reason)
				}
				return
			}
			if st != 403 || reason != tt.reason {
				t.Errorf("got %d %s, want 403 %s", st, reason, tt.reason)
			}
		})
	}

	// An HS256 token with the "same" key material is refused: only ES256 is APNs's.
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": teamID, "iat": now.Unix()})
	hs.Header["kid"] = keyID
	s, _ := hs.SignedString([]byte("secret"))
	h := headers()
	h["Authorization"] = "bearer " + s
	if st, reason, _ := do(t, e.url, e.f, http.MethodPost, apnsfake.DevicePath+device, h, validPayload); reason != "InvalidProviderToken" {
		t.Errorf("HS256: %d %s", st, reason)
	}
}

func TestExpireProviderTokens(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	if res := push(t, c, notification()); !res.Sent() {
		t.Fatalf("response %+v", res)
	}
	e.f.ExpireProviderTokens()
	if res := push(t, c, notification()); res.StatusCode != 403 || res.Reason != apns2.ReasonExpiredProviderToken {
		t.Fatalf("after ExpireProviderTokens: %+v", res)
	}
	e.tok.Lock()
	_, err := e.tok.Generate()
	e.tok.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if res := push(t, c, notification()); !res.Sent() {
		t.Fatalf("with a new token: %+v", res)
	}
	if n := e.f.ProviderTokens(); n != 2 {
		t.Errorf("ProviderTokens() = %d, want 2", n)
	}
}

const validPayload = `{"aps":{"alert":{"title":"t","body":"b"}},"data":{"k":"v"}}`

// headers returns the headers of a valid request, with a fresh provider token.
func headers() map[string]string {
	return map[string]string{
		"apns-topic":     topic,
		"apns-push-type": "alert",
		"apns-priority":  "10",
		"Authorization":  "",
	}
}

// do sends one raw HTTP/2 request to the fake and returns the status and reason. An empty
// Authorization header is filled with a valid provider token.
func do(t *testing.T, url string, f *apnsfake.Fake, method, path string, hdr map[string]string, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), method, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if v, ok := hdr["Authorization"]; ok && v == "" {
		_, key, err := apnsfake.NewAuthKey()
		if err != nil {
			t.Fatal(err)
		}
		f.TrustKey(teamID, "RAWKEY0001", &key.PublicKey)
		req.Header.Set("Authorization", "bearer "+signed(t, key, "RAWKEY0001", teamID, time.Now()))
	}
	res, err := h2Client(f).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("answered over %s", res.Proto)
	}
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode == 200 {
		if len(raw) != 0 {
			t.Errorf("200 with body %q", raw)
		}
		return 200, "", res.Header
	}
	var eb struct {
		Reason    string `json:"reason"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(raw, &eb); err != nil {
		t.Fatalf("answer %d is not APNs JSON: %q", res.StatusCode, raw)
	}
	if res.Header.Get("apns-id") == "" {
		t.Errorf("answer %d without apns-id", res.StatusCode)
	}
	if (eb.Timestamp != nil) != (res.StatusCode == 410) {
		t.Errorf("answer %d: timestamp %v", res.StatusCode, eb.Timestamp)
	}
	return res.StatusCode, eb.Reason, res.Header
}

func h2Client(f *apnsfake.Fake) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.RootCAs()}}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}

func TestRequestChecks(t *testing.T) {
	e := start(t)
	with := func(k, v string) map[string]string {
		h := headers()
		if v == "-" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	big := `{"aps":{"alert":"` + strings.Repeat("x", apnsfake.MaxPayload) + `"}}`
	voip := `{"aps":{},"call":"` + strings.Repeat("x", apnsfake.MaxPayload) + `"}`
	voipHeaders := with("apns-push-type", "voip")
	voipHeaders["apns-topic"] = topic + ".voip"
	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   string
		status int
		reason string
	}{
		{"valid", "", "", nil, "", 200, ""},
		{"uppercase hex token", "", apnsfake.DevicePath + strings.ToUpper(device), nil, "", 200, ""},
		{"no push type", "", "", with("apns-push-type", "-"), "", 200, ""},
		{"no priority", "", "", with("apns-priority", "-"), "", 200, ""},
		{"priority 5", "", "", with("apns-priority", "5"), "", 200, ""},
		{"background at 5", "", "", map[string]string{"apns-topic": topic, "apns-push-type": "background", "apns-priority": "5", "Authorization": ""},
			`{"aps":{"content-available":1}}`, 200, ""},
		{"voip may be larger", "", "", voipHeaders, voip, 200, ""},
		{"expiration 0", "", "", with("apns-expiration", "0"), "", 200, ""},
		{"GET", http.MethodGet, "", nil, "", 405, "MethodNotAllowed"},
		{"other path", "", "/3/devices/" + device, nil, "", 404, "BadPath"},
		{"nested path", "", apnsfake.DevicePath + device + "/x", nil, "", 404, "BadPath"},
		{"no device token", "", apnsfake.DevicePath, nil, "", 400, "MissingDeviceToken"},
		{"token not hex", "", apnsfake.DevicePath + "not-a-token", nil, "", 400, "BadDeviceToken"},
		{"token too short", "", apnsfake.DevicePath + "abcd", nil, "", 400, "BadDeviceToken"},
		{"odd-length token", "", apnsfake.DevicePath + device + "a", nil, "", 400, "BadDeviceToken"},
		{"no topic", "", "", with("apns-topic", "-"), "", 400, "MissingTopic"},
		{"malformed topic", "", "", with("apns-topic", "com example"), "", 400, "BadTopic"},
		{"other app", "", "", with("apns-topic", "com.example.other"), "", 400, "TopicDisallowed"},
		{"voip topic for alert", "", "", with("apns-topic", topic+".voip"), "", 400, "TopicDisallowed"},
		{"unknown push type", "", "", with("apns-push-type", "shout"), "", 400, "InvalidPushType"},
		{"priority 7", "", "", with("apns-priority", "7"), "", 400, "BadPriority"},
		{"priority not a number", "", "", with("apns-priority", "high"), "", 400, "BadPriority"},
		{"background at 10", "", "", with("apns-push-type", "background"), `{"aps":{"content-available":1}}`, 400, "BadPriority"},
		{"expiration not a number", "", "", with("apns-expiration", "tomorrow"), "", 400, "BadExpirationDate"},
		{"negative expiration", "", "", with("apns-expiration", "-1"), "", 400, "BadExpirationDate"},
		{"apns-id not a UUID", "", "", with("apns-id", "delivery-1"), "", 400, "BadMessageId"},
		{"collapse id over 64 bytes", "", "", with("apns-collapse-id", strings.Repeat("c", 65)), "", 400, "BadCollapseId"},
		{"empty payload", "", "", nil, "-", 400, "PayloadEmpty"},
		{"payload over 4096 bytes", "", "", nil, big, 413, "PayloadTooLarge"},
		{"payload not JSON", "", "", nil, "{", 400, "BadPayload"},
		{"payload without aps", "", "", nil, `{"data":{}}`, 400, "BadPayload"},
		{"aps not a dictionary", "", "", nil, `{"aps":"x"}`, 400, "BadPayload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, hdr, body := tt.method, tt.path, tt.hdr, tt.body
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = apnsfake.DevicePath + device
			}
			if hdr == nil {
				hdr = headers()
			}
			switch body {
			case "":
				body = validPayload
			case "-":
				body = ""
			}
			before := len(e.f.Notifications())
			st, reason, h := do(t, e.url, e.f, method, path, hdr, body)
			if st != tt.status || reason != tt.reason {
				t.Fatalf("got %d %q, want %d %q", st, reason, tt.status, tt.reason)
			}
			if st == 200 && h.Get("apns-id") == "" {
				t.Error("200 without apns-id")
			}
			if recorded := len(e.f.Notifications()) - before; recorded != map[bool]int{true: 1, false: 0}[st == 200] {
				t.Errorf("recorded %d notifications", recorded)
			}
		})
	}
}

func TestDuplicateHeaders(t *testing.T) {
	e := start(t)
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, e.url+apnsfake.DevicePath+device, strings.NewReader(validPayload))
	req.Header.Set("Authorization", "bearer "+e.tok.Bearer)
	req.Header.Add("apns-topic", topic)
	req.Header.Add("apns-topic", topic)
	res, err := h2Client(e.f).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var eb struct{ Reason string }
	_ = json.NewDecoder(res.Body).Decode(&eb)
	if res.StatusCode != 400 || eb.Reason != "DuplicateHeaders" {
		t.Errorf("got %d %q", res.StatusCode, eb.Reason)
	}
}

func TestEchoesApnsID(t *testing.T) {
	e := start(t)
	id := strings.ToUpper(uuid.NewString())
	h := headers()
	h["apns-id"] = id
	st, _, hdr := do(t, e.url, e.f, http.MethodPost, apnsfake.DevicePath+device, h, validPayload)
	if st != 200 || hdr.Get("apns-id") != id {
		t.Errorf("status %d apns-id %q, want %q", st, hdr.Get("apns-id"), id)
	}
}

func TestEveryReasonReachesApns2(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	for reason, status := range apnsfake.Reasons {
		e.f.Fail(apnsfake.ErrorFor(reason), 1)
		n := notification()
		res := push(t, c, n)
		if res.StatusCode != status || res.Reason != reason || res.ApnsID != n.ApnsID {
			t.Errorf("%s: response %+v", reason, res)
		}
		if status == 410 && time.Since(res.Timestamp.Time) > time.Minute {
			t.Errorf("%s: timestamp %v", reason, res.Timestamp)
		}
	}
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after the failures: %+v", res)
	}
	if len(e.f.Notifications()) != 1 {
		t.Errorf("recorded %d notifications, want 1", len(e.f.Notifications()))
	}
}

func TestErrorForPanicsOnUnknownReason(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	apnsfake.ErrorFor("NoSuchReason")
}

func TestFailAlwaysAndStop(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	e.f.Fail(apnsfake.ErrorFor("ServiceUnavailable"), apnsfake.Always)
	for range 3 {
		if res := push(t, c, notification()); res.StatusCode != 503 {
			t.Fatalf("response %+v", res)
		}
	}
	e.f.Fail(apnsfake.Error{}, 0)
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after Fail(Error{}, 0): %+v", res)
	}
	if e.f.Requests() != 4 {
		t.Errorf("requests %d", e.f.Requests())
	}
}

func TestFailTokenAndUnregister(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	gone := strings.Repeat("ab", 32)
	since := time.UnixMilli(1_700_000_000_123)
	e.f.Unregister(gone, since)
	e.f.FailToken(device, apnsfake.ErrorFor("DeviceTokenNotForTopic"))

	n := notification()
	n.DeviceToken = gone
	res := push(t, c, n)
	if res.StatusCode != 410 || res.Reason != apns2.ReasonUnregistered || !res.Timestamp.Equal(since.Truncate(time.Second)) {
		t.Errorf("unregistered: %+v", res)
	}
	if res := push(t, c, notification()); res.Reason != apns2.ReasonDeviceTokenNotForTopic {
		t.Errorf("failed token: %+v", res)
	}
	// The timestamp is in milliseconds, as APNs sends it.
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, e.url+apnsfake.DevicePath+gone, strings.NewReader(validPayload))
	req.Header.Set("Authorization", "bearer "+e.tok.Bearer)
	req.Header.Set("apns-topic", topic)
	r, err := h2Client(e.f).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if want := fmt.Sprintf(`{"reason":"Unregistered","timestamp":%d}`, since.UnixMilli()); strings.TrimSpace(string(raw)) != want {
		t.Errorf("body %s, want %s", raw, want)
	}

	e.f.FailToken(device, apnsfake.Error{})
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after clearing: %+v", res)
	}
	// A scripted token still has to be a well-formed, authenticated request.
	e.f.FailToken("zz", apnsfake.ErrorFor("Unregistered"))
	n = notification()
	n.DeviceToken = "zz"
	if res := push(t, c, n); res.Reason != apns2.ReasonBadDeviceToken {
		t.Errorf("malformed scripted token: %+v", res)
	}
}

func TestDrop(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	e.f.Drop(1)
	if _, err := c.PushWithContext(ctx(t), notification()); err == nil {
		t.Fatal("dropped request answered")
	}
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after the drop: %+v", res)
	}
	if e.f.Connections() != 2 {
		t.Errorf("%d connections, want 2 (the drop closes the first)", e.f.Connections())
	}
	if len(e.f.Notifications()) != 1 || e.f.Requests() != 2 {
		t.Errorf("recorded %d, requests %d", len(e.f.Notifications()), e.f.Requests())
	}
}

func TestDelay(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	e.f.SetDelay(time.Minute)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.PushWithContext(short, notification()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	e.f.SetDelay(0)
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after SetDelay(0): %+v", res)
	}
}

func TestRefusesHTTP1(t *testing.T) {
	e := start(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.f.RootCAs()}}
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, e.url+apnsfake.DevicePath+device, strings.NewReader(validPayload))
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Errorf("HTTP/1.1 answered %d", res.StatusCode)
		}
	}
	if len(e.f.Notifications()) != 0 {
		t.Error("an HTTP/1.1 request was recorded")
	}
}

func TestReset(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	push(t, c, notification())
	e.f.ExpireProviderTokens()
	e.f.Fail(apnsfake.ErrorFor("InternalServerError"), apnsfake.Always)
	e.f.FailToken(device, apnsfake.ErrorFor("BadDeviceToken"))
	e.f.Reset()
	if len(e.f.Notifications()) != 0 || e.f.Requests() != 0 || e.f.Connections() != 0 {
		t.Fatal("Reset kept records")
	}
	if res := push(t, c, notification()); !res.Sent() {
		t.Errorf("after Reset: %+v", res)
	}
}

func TestRootCAsBeforeStartPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	apnsfake.New(topic).RootCAs()
}

func TestConcurrentPushesShareOneConnection(t *testing.T) {
	e := start(t)
	c := e.tokenClient()
	e.f.Fail(apnsfake.ErrorFor("ServiceUnavailable"), 10)
	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			note := notification()
			ids[i] = note.ApnsID
			for {
				res, err := c.PushWithContext(context.Background(), note)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Sent() {
					return
				}
				if res.StatusCode != 503 {
					t.Errorf("response %+v", res)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, id := range ids {
		if got := e.f.Count(id); got != 1 {
			t.Errorf("notification %d accepted %d times", i, got)
		}
	}
	if r := e.f.Requests(); r != n+10 {
		t.Errorf("requests %d, want %d", r, n+10)
	}
	if conns := e.f.Connections(); conns != 1 {
		t.Errorf("%d connections, want 1", conns)
	}
}

func TestCountOnly(t *testing.T) {
	e := start(t)
	var mu sync.Mutex
	var got []string
	e.f.CountOnly(func(id string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			t.Error("zero receive time")
		}
		got = append(got, id)
	})
	c := e.tokenClient()
	n := notification()
	n.ApnsID = strings.ToUpper(n.ApnsID)
	if res := push(t, c, n); !res.Sent() {
		t.Fatalf("response %+v", res)
	}
	bad := notification()
	bad.DeviceToken = "not-hex"
	if res := push(t, c, bad); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad token: status %d, want 400 in CountOnly too", res.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != strings.ToLower(n.ApnsID) {
		t.Errorf("onAccept saw %q, want [%s] in lower case", got, n.ApnsID)
	}
	if len(e.f.Notifications()) != 0 || e.f.Count(n.ApnsID) != 0 {
		t.Errorf("%d notifications kept in CountOnly", len(e.f.Notifications()))
	}
	if e.f.Accepted() != 1 || e.f.Requests() != 2 {
		t.Errorf("Accepted %d, Requests %d; want 1 and 2", e.f.Accepted(), e.f.Requests())
	}
}

func TestCertificatePEMIsWhatItServes(t *testing.T) {
	e := start(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.f.CertificatePEM()) {
		t.Fatal("CertificatePEM holds no certificate")
	}
	c := apns2.NewTokenClient(e.tok)
	c.Host = e.url
	c.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	if res := push(t, c, notification()); !res.Sent() {
		t.Fatalf("response %+v", res)
	}
}
