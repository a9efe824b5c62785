package fcmfake_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/heraldhq/herald/internal/fakes/fcmfake"
)

const (
	project     = "herald-test"
	accessToken = "ya29.test-access-token"
	token       = "fTestDeviceToken0123456789:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
	otherToken  = "fOtherDeviceToken0123456789:APA91bXun4MxP5egoKMwt2KZFBaFUH-2"
	fcmScope    = "https://www.googleapis.com/auth/firebase.messaging"
)

// offLoopback counts requests that tried to leave loopback through an HTTP proxy.
var offLoopback atomic.Int64

// TestMain keeps every test on loopback: HTTP clients that honour the proxy environment (the
// SDK's own, the auth library's) send anything not bound for loopback to a proxy that refuses
// and counts it, and the metadata probe, which ignores proxies, goes to a closed loopback port.
func TestMain(m *testing.M) {
	guard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offLoopback.Add(1)
		fmt.Fprintf(os.Stderr, "a test tried to reach %s %s off loopback\n", r.Method, r.Host)
		http.Error(w, "off loopback", http.StatusForbidden)
	}))
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		os.Setenv(k, guard.URL)
	}
	os.Unsetenv("NO_PROXY")
	os.Unsetenv("no_proxy")
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	code := m.Run()
	guard.Close()
	if n := offLoopback.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "%d requests tried to leave loopback\n", n)
		code = 1
	}
	os.Exit(code)
}

func start(t *testing.T) *fcmfake.Fake {
	t.Helper()
	f := fcmfake.New(project, accessToken)
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// sdk returns a messaging client that authenticates with the fake's service-account key file.
func sdk(t *testing.T, f *fcmfake.Fake) *messaging.Client {
	t.Helper()
	// The type-checked constructor: the untyped ones are deprecated, as a key file of another
	// type can make the library run commands or fetch arbitrary URLs.
	creds, err := google.CredentialsFromJSONWithType(context.Background(), f.ServiceAccountJSON(),
		google.ServiceAccount, "https://www.googleapis.com/auth/firebase.messaging")
	if err != nil {
		t.Fatal(err)
	}
	app, err := firebase.NewApp(ctx(t), &firebase.Config{ProjectID: project},
		option.WithCredentials(creds), option.WithEndpoint(f.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := app.Messaging(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type googleError struct {
	Error struct {
		Code    int
		Message string
		Status  string
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string
			Reason          string
			FieldViolations []struct{ Field, Description string }
		}
	}
}

func (g *googleError) fcmCode() string {
	for _, d := range g.Error.Details {
		if d.Type == "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
			return d.ErrorCode
		}
	}
	return ""
}

func (g *googleError) fields() []string {
	var fs []string
	for _, d := range g.Error.Details {
		if d.Type == "type.googleapis.com/google.rpc.BadRequest" {
			for _, v := range d.FieldViolations {
				fs = append(fs, v.Field)
			}
		}
	}
	return fs
}

type answer struct {
	status int
	header http.Header
	name   string
	err    googleError
}

// send posts body to the fake's send endpoint for project p with the bearer token bearer ("" for
// no Authorization header).
func send(url, p, bearer, body string) (answer, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/v1/projects/"+p+"/messages:send", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: res.StatusCode, header: res.Header}
	if res.StatusCode == http.StatusOK {
		var ok struct{ Name string }
		if err := json.Unmarshal(raw, &ok); err != nil {
			return a, fmt.Errorf("200 answer %q: %v", raw, err)
		}
		a.name = ok.Name
		return a, nil
	}
	if err := json.Unmarshal(raw, &a.err); err != nil || a.err.Error.Code != res.StatusCode {
		return a, fmt.Errorf("answer %d is not Google's error JSON: %q", res.StatusCode, raw)
	}
	return a, nil
}

func post(t *testing.T, f *fcmfake.Fake, body string) answer {
	t.Helper()
	a, err := send(f.URL(), project, accessToken, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func body(deliveryID string) string {
	return `{"message": {"token": "` + token + `", "notification": {"title": "Hi", "body": "there"},
		"data": {"herald_delivery_id": "` + deliveryID + `", "k": "v"},
		"android": {"priority": "HIGH", "ttl": "3600s"}}}`
}

func TestSDKSendsWithServiceAccountCredentials(t *testing.T) {
	f := start(t)
	c := sdk(t, f)
	ttl := 90 * time.Minute
	name, err := c.Send(ctx(t), &messaging.Message{
		Token:        token,
		Notification: &messaging.Notification{Title: "Your code", Body: "is 123456"},
		Data:         map[string]string{fcmfake.DeliveryIDKey: "d1", "n": "1"},
		Android:      &messaging.AndroidConfig{Priority: "high", TTL: &ttl, CollapseKey: "codes"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "projects/"+project+"/messages/0:") {
		t.Errorf("name %q", name)
	}
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("recorded %d messages", len(msgs))
	}
	m := msgs[0]
	if m.Name != name || m.Token != token || m.Notification == nil || m.Notification.Title != "Your code" ||
		m.Notification.Body != "is 123456" || m.Data["n"] != "1" || m.Android == nil ||
		m.Android.Priority != "high" || m.Android.TTL == nil || *m.Android.TTL != ttl || m.Android.CollapseKey != "codes" {
		t.Errorf("recorded %+v (android %+v)", m, m.Android)
	}
	if _, err := c.Send(ctx(t), &messaging.Message{Token: token, Data: map[string]string{fcmfake.DeliveryIDKey: "d1"}}); err != nil {
		t.Fatal(err)
	}
	if f.Count("d1") != 2 || f.Requests() != 2 {
		t.Errorf("count %d requests %d, want 2 and 2", f.Count("d1"), f.Requests())
	}
	if n := f.TokenRequests(); n != 1 {
		t.Errorf("%d token requests, want 1 (the token is reused)", n)
	}
}

func TestSDKDryRunIsNotRecorded(t *testing.T) {
	f := start(t)
	name, err := sdk(t, f).SendDryRun(ctx(t), &messaging.Message{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if name != "projects/"+project+"/messages/fake_message_id" {
		t.Errorf("name %q", name)
	}
	if len(f.Messages()) != 0 || f.Requests() != 1 {
		t.Errorf("dry run recorded %d messages in %d requests", len(f.Messages()), f.Requests())
	}
}

// TestSDKReadsEveryFailure checks that the SDK understands each scripted answer as FCM's: its
// error predicates and the HTTP response it exposes.
func TestSDKReadsEveryFailure(t *testing.T) {
	tests := []struct {
		fl     fcmfake.Failure
		status int
		is     func(error) bool
	}{
		{fcmfake.Unregistered, 404, messaging.IsUnregistered},
		{fcmfake.InvalidToken, 400, messaging.IsInvalidArgument},
		{fcmfake.InvalidArgument, 400, messaging.IsInvalidArgument},
		{fcmfake.SenderIDMismatch, 403, messaging.IsSenderIDMismatch},
		{fcmfake.QuotaExceeded, 429, messaging.IsQuotaExceeded},
		{fcmfake.Unavailable, 503, messaging.IsUnavailable},
		{fcmfake.Internal, 500, messaging.IsInternal},
		{fcmfake.ThirdPartyAuthError, 401, messaging.IsThirdPartyAuthError},
		{fcmfake.Unauthenticated, 401, errorutils.IsUnauthenticated},
		{fcmfake.PermissionDenied, 403, errorutils.IsPermissionDenied},
	}
	f := start(t)
	c := sdk(t, f)
	// The SDK retries a 503 unless Retry-After asks for more than two minutes.
	f.SetRetryAfter(3 * time.Minute)
	for _, tt := range tests {
		t.Run(tt.fl.String(), func(t *testing.T) {
			f.FailToken(token, tt.fl)
			defer f.FailToken(token, fcmfake.NoFailure)
			_, err := c.Send(ctx(t), &messaging.Message{Token: token})
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if !tt.is(err) {
				t.Errorf("the SDK does not recognise %v", err)
			}
			res := errorutils.HTTPResponse(err)
			if res == nil || res.StatusCode != tt.status {
				t.Fatalf("HTTP response %v, want status %d", res, tt.status)
			}
			if ra := res.Header.Get("Retry-After"); (ra != "") != (tt.fl == fcmfake.QuotaExceeded || tt.fl == fcmfake.Unavailable) {
				t.Errorf("Retry-After %q", ra)
			}
		})
	}
	if _, err := c.Send(ctx(t), &messaging.Message{Token: otherToken}); err != nil {
		t.Errorf("another token: %v", err)
	}
}

// TestSDKRetriesUnavailable documents the SDK's own retry: a 503 is sent again after the wait
// Retry-After asks for.
func TestSDKRetriesUnavailable(t *testing.T) {
	f := start(t)
	c := sdk(t, f)
	f.Fail(fcmfake.Unavailable, 1)
	start := time.Now()
	if _, err := c.Send(ctx(t), &messaging.Message{Token: token}); err != nil {
		t.Fatal(err)
	}
	if f.Requests() != 2 || time.Since(start) < time.Second {
		t.Errorf("%d requests in %v, want 2 after Retry-After's second", f.Requests(), time.Since(start))
	}
}

// TestSDKResendsAfterALostAnswer documents why Herald's sender cuts the SDK's retries: when the
// connection drops after FCM took the message, the SDK sends it again at once and reports one
// success for two notifications.
func TestSDKResendsAfterALostAnswer(t *testing.T) {
	f := start(t)
	f.DropAccepted(1)
	_, err := sdk(t, f).Send(ctx(t), &messaging.Message{Token: token, Data: map[string]string{fcmfake.DeliveryIDKey: "d1"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.Count("d1"); n != 2 {
		t.Errorf("FCM took the message %d times, want 2", n)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		fl         fcmfake.Failure
		status     int
		gstatus    string
		fcmCode    string
		fields     string
		retryAfter bool
	}{
		{fcmfake.Unregistered, 404, "NOT_FOUND", "UNREGISTERED", "", false},
		{fcmfake.InvalidToken, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token", false},
		{fcmfake.InvalidArgument, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "", false},
		{fcmfake.SenderIDMismatch, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "", false},
		{fcmfake.QuotaExceeded, 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "", true},
		{fcmfake.Unavailable, 503, "UNAVAILABLE", "UNAVAILABLE", "", true},
		{fcmfake.Internal, 500, "INTERNAL", "INTERNAL", "", false},
		{fcmfake.ThirdPartyAuthError, 401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "", false},
		{fcmfake.Unauthenticated, 401, "UNAUTHENTICATED", "", "", false},
		{fcmfake.PermissionDenied, 403, "PERMISSION_DENIED", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.fl.String(), func(t *testing.T) {
			f := start(t)
			f.SetRetryAfter(2500 * time.Millisecond)
			f.Fail(tt.fl, 1)
			a := post(t, f, body("d1"))
			if a.status != tt.status || a.err.Error.Status != tt.gstatus || a.err.fcmCode() != tt.fcmCode ||
				strings.Join(a.err.fields(), ",") != tt.fields {
				t.Errorf("answered %d %s %q fields %v, want %d %s %q %q", a.status, a.err.Error.Status,
					a.err.fcmCode(), a.err.fields(), tt.status, tt.gstatus, tt.fcmCode, tt.fields)
			}
			if ra := a.header.Get("Retry-After"); tt.retryAfter && ra != "3" || !tt.retryAfter && ra != "" {
				t.Errorf("Retry-After %q", ra)
			}
			if a := post(t, f, body("d1")); a.status != 200 {
				t.Errorf("second request answered %d", a.status)
			}
			if f.Count("d1") != 1 || f.Requests() != 2 {
				t.Errorf("count %d requests %d, want 1 and 2", f.Count("d1"), f.Requests())
			}
		})
	}
}

func TestFailAlwaysAndFailToken(t *testing.T) {
	f := start(t)
	f.Fail(fcmfake.Internal, fcmfake.Always)
	for i := range 3 {
		if a := post(t, f, body("d1")); a.status != 500 {
			t.Errorf("request %d answered %d", i, a.status)
		}
	}
	f.Fail(fcmfake.NoFailure, 0)
	f.FailToken(token, fcmfake.Unregistered)
	if a := post(t, f, body("d1")); a.status != 404 {
		t.Errorf("failed token answered %d", a.status)
	}
	other := strings.Replace(body("d2"), token, otherToken, 1)
	if a := post(t, f, other); a.status != 200 {
		t.Errorf("other token answered %d", a.status)
	}
	f.FailToken(token, fcmfake.NoFailure)
	if a := post(t, f, body("d1")); a.status != 200 {
		t.Errorf("cleared token answered %d", a.status)
	}
	// A malformed request is refused for what it is, before the token's scripted answer.
	f.FailToken(token, fcmfake.Unregistered)
	if a := post(t, f, `{"message": {"token": "`+token+`", "data": {"n": 1}}}`); a.status != 400 {
		t.Errorf("malformed request to a failing token answered %d", a.status)
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		status  int
		fcmCode string // "" when the front end refuses it before FCM sees it
		field   string // a field violation the answer must name; "" for none
	}{
		{"unknown top-level field", `{"mesage": {"token": "` + token + `"}}`, 400, "", ""},
		{"unknown message field", `{"message": {"token": "` + token + `", "priority": "high"}}`, 400, "", "message"},
		{"unknown android field", `{"message": {"token": "` + token + `", "android": {"ttl_seconds": 3}}}`, 400, "", "message.android"},
		{"no message", `{}`, 400, "INVALID_ARGUMENT", "message"},
		{"no target", `{"message": {"data": {"k": "v"}}}`, 400, "INVALID_ARGUMENT", "message"},
		{"two targets", `{"message": {"token": "` + token + `", "topic": "news"}}`, 400, "", "message"},
		{"malformed token", `{"message": {"token": "not a token"}}`, 400, "INVALID_ARGUMENT", "message.token"},
		{"short token", `{"message": {"token": "abc123"}}`, 400, "INVALID_ARGUMENT", "message.token"},
		{"number in data", `{"message": {"token": "` + token + `", "data": {"a": "x", "n": 1}}}`, 400, "", "message.data[1].value"},
		{"object in data", `{"message": {"token": "` + token + `", "data": {"o": {"x": "y"}}}}`, 400, "", "message.data[0].value"},
		{"null in data", `{"message": {"token": "` + token + `", "data": {"o": null}}}`, 400, "", "message.data[0].value"},
		{"data not an object", `{"message": {"token": "` + token + `", "data": ["x"]}}`, 400, "", "message.data"},
		{"reserved data key", `{"message": {"token": "` + token + `", "data": {"from": "x"}}}`, 400, "INVALID_ARGUMENT", "message.data"},
		{"google data key", `{"message": {"token": "` + token + `", "data": {"google.c.a": "x"}}}`, 400, "INVALID_ARGUMENT", "message.data"},
		{"number in android data", `{"message": {"token": "` + token + `", "android": {"data": {"n": 2}}}}`, 400, "", "message.android.data[0].value"},
		{"bad priority", `{"message": {"token": "` + token + `", "android": {"priority": "URGENT"}}}`, 400, "", "message.android.priority"},
		{"ttl not a duration", `{"message": {"token": "` + token + `", "android": {"ttl": "1h"}}}`, 400, "", "message.android.ttl"},
		{"ttl a number", `{"message": {"token": "` + token + `", "android": {"ttl": 3600}}}`, 400, "", "message.android.ttl"},
		{"negative ttl", `{"message": {"token": "` + token + `", "android": {"ttl": "-1s"}}}`, 400, "", "message.android.ttl"},
		{"ttl over four weeks", `{"message": {"token": "` + token + `", "android": {"ttl": "2419201s"}}}`, 400, "INVALID_ARGUMENT", "message.android.ttl"},
		{"title a number", `{"message": {"token": "` + token + `", "notification": {"title": 1}}}`, 400, "", "message.notification.title"},
		{"too big", `{"message": {"token": "` + token + `", "notification": {"title": "t"}, "data": {"k": "` + strings.Repeat("x", 4095) + `"}}}`, 400, "INVALID_ARGUMENT", ""},
		{"syntax error", `{"message": {"token": "` + token + `"`, 400, "", ""},
		{"trailing data", `{"message": {"token": "` + token + `"}} {}`, 400, "", ""},

		{"lower-case priority", `{"message": {"token": "` + token + `", "android": {"priority": "normal"}}}`, 200, "", ""},
		{"camelCase fields", `{"validateOnly": false, "message": {"token": "` + token + `", "android": {"collapseKey": "c", "directBootOk": true}}}`, 200, "", ""},
		{"fractional ttl", `{"message": {"token": "` + token + `", "android": {"ttl": "1.5s"}}}`, 200, "", ""},
		{"four weeks", `{"message": {"token": "` + token + `", "android": {"ttl": "2419200s"}}}`, 200, "", ""},
		{"exactly 4096 bytes", `{"message": {"token": "` + token + `", "data": {"k": "` + strings.Repeat("x", 4095) + `"}}}`, 200, "", ""},
		{"topic", `{"message": {"topic": "news", "data": {"k": "v"}}}`, 200, "", ""},
		{"condition", `{"message": {"condition": "'news' in topics", "notification": {"title": "t"}}}`, 200, "", ""},
		{"other platforms", `{"message": {"token": "` + token + `", "apns": {"headers": {"apns-priority": "10"}}, "webpush": {}, "fcm_options": {"analytics_label": "x"}}}`, 200, "", ""},
	}
	f := start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := post(t, f, tt.body)
			if a.status != tt.status {
				t.Fatalf("status %d (%s), want %d", a.status, a.err.Error.Message, tt.status)
			}
			if a.status == 200 {
				return
			}
			if a.err.Error.Status != "INVALID_ARGUMENT" || a.err.Error.Message == "" {
				t.Errorf("error %+v", a.err.Error)
			}
			if a.err.fcmCode() != tt.fcmCode {
				t.Errorf("FCM error code %q, want %q", a.err.fcmCode(), tt.fcmCode)
			}
			fields := a.err.fields()
			if tt.field == "" && len(fields) > 0 || tt.field != "" && (len(fields) != 1 || fields[0] != tt.field) {
				t.Errorf("field violations %v, want %q (%s)", fields, tt.field, a.err.Error.Message)
			}
		})
	}
	if n := len(f.Messages()); n != 8 {
		t.Errorf("recorded %d messages, want 8", n)
	}
}

func TestContentTypeMethodAndPath(t *testing.T) {
	f := start(t)
	req, _ := http.NewRequest(http.MethodPost, f.Endpoint()+"/projects/"+project+"/messages:send", strings.NewReader(body("d1")))
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "text/plain")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Errorf("text/plain: status %d", res.StatusCode)
	}
	res, err = http.Get(f.Endpoint() + "/projects/" + project + "/messages:send")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", res.StatusCode)
	}
	for _, p := range []string{"/projects/" + project + "/messages:send", "/v1/projects/" + project + "/messages"} {
		res, err := http.Post(f.URL()+p, "application/json", strings.NewReader(body("d1")))
		if err != nil {
			t.Fatal(err)
		}
		var g googleError
		json.NewDecoder(res.Body).Decode(&g)
		res.Body.Close()
		if res.StatusCode != 404 || g.Error.Status != "NOT_FOUND" || g.fcmCode() != "" {
			t.Errorf("%s: status %d %+v", p, res.StatusCode, g.Error)
		}
	}
}

func TestAccessTokenIsChecked(t *testing.T) {
	f := start(t)
	for _, bearer := range []string{"", "ya29.wrong"} {
		a, err := send(f.URL(), project, bearer, body("d1"))
		if err != nil {
			t.Fatal(err)
		}
		if a.status != 401 || a.err.Error.Status != "UNAUTHENTICATED" || a.err.fcmCode() != "" {
			t.Errorf("bearer %q: %d %+v", bearer, a.status, a.err.Error)
		}
		if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("bearer %q: no WWW-Authenticate", bearer)
		}
	}
	a, err := send(f.URL(), "someone-elses-project", accessToken, body("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.status != 403 || a.err.Error.Status != "PERMISSION_DENIED" || a.err.fcmCode() != "" {
		t.Errorf("other project: %d %+v", a.status, a.err.Error)
	}
	if len(f.Messages()) != 0 {
		t.Error("recorded a message")
	}
}

// keyFile is the part of a service-account key file a token request needs.
type keyFile struct {
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

func readKeyFile(t *testing.T, f *fcmfake.Fake) (keyFile, *rsa.PrivateKey) {
	t.Helper()
	var kf keyFile
	if err := json.Unmarshal(f.ServiceAccountJSON(), &kf); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("private_key is not a PKCS #8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return kf, k.(*rsa.PrivateKey)
}

// assertion signs a JWT-bearer assertion; edit changes the claims before signing.
func assertion(t *testing.T, kf keyFile, key *rsa.PrivateKey, edit func(h, c map[string]any)) string {
	t.Helper()
	now := time.Now()
	h := map[string]any{"alg": "RS256", "typ": "JWT", "kid": kf.PrivateKeyID}
	c := map[string]any{"iss": kf.ClientEmail, "scope": fcmScope, "aud": kf.TokenURI,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if edit != nil {
		edit(h, c)
	}
	seg := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := seg(h) + "." + seg(c)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

type tokenAnswer struct {
	status int
	body   struct {
		AccessToken      string `json:"access_token"`
		ExpiresIn        int    `json:"expires_in"`
		TokenType        string `json:"token_type"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
}

func tokenRequest(t *testing.T, tokenURI string, form url.Values) tokenAnswer {
	t.Helper()
	res, err := http.PostForm(tokenURI, form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	a := tokenAnswer{status: res.StatusCode}
	if err := json.NewDecoder(res.Body).Decode(&a.body); err != nil {
		t.Fatal(err)
	}
	return a
}

func grant(a string) url.Values {
	return url.Values{"grant_type": {fcmfake.JWTBearerGrant}, "assertion": {a}}
}

func TestTokenEndpoint(t *testing.T) {
	f := start(t)
	kf, key := readKeyFile(t, f)
	if kf.TokenURI != f.URL()+"/token" {
		t.Fatalf("token_uri %q", kf.TokenURI)
	}
	a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, nil)))
	if a.status != 200 || a.body.AccessToken != accessToken || a.body.ExpiresIn != 3600 || a.body.TokenType != "Bearer" {
		t.Fatalf("answer %d %+v", a.status, a.body)
	}

	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		form url.Values
		code string
	}{
		{"wrong grant type", url.Values{"grant_type": {"client_credentials"}, "assertion": {"x"}}, "unsupported_grant_type"},
		{"no assertion", url.Values{"grant_type": {fcmfake.JWTBearerGrant}}, "invalid_request"},
		{"not a JWT", grant("not.a.jwt"), "invalid_grant"},
		{"signed by another key", grant(assertion(t, kf, otherKey, nil)), "invalid_grant"},
		{"another key id", grant(assertion(t, kf, key, func(h, _ map[string]any) { h["kid"] = "0123" })), "invalid_grant"},
		{"HS256", grant(assertion(t, kf, key, func(h, _ map[string]any) { h["alg"] = "HS256" })), "invalid_grant"},
		{"another account", grant(assertion(t, kf, key, func(_, c map[string]any) { c["iss"] = "x@y.iam.gserviceaccount.com" })), "invalid_grant"},
		{"another audience", grant(assertion(t, kf, key, func(_, c map[string]any) { c["aud"] = "https://oauth2.googleapis.com/token" })), "invalid_grant"},
		{"expired", grant(assertion(t, kf, key, func(_, c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-3*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
		})), "invalid_grant"},
		{"too long-lived", grant(assertion(t, kf, key, func(_, c map[string]any) { c["exp"] = time.Now().Add(2 * time.Hour).Unix() })), "invalid_grant"},
		{"no scope", grant(assertion(t, kf, key, func(_, c map[string]any) { delete(c, "scope") })), "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tokenRequest(t, kf.TokenURI, tt.form)
			if a.status != 400 || a.body.Error != tt.code || a.body.ErrorDescription == "" || a.body.AccessToken != "" {
				t.Errorf("answer %d %+v, want 400 %s", a.status, a.body, tt.code)
			}
		})
	}
}

func TestTokenWithoutFCMScopeIsRefusedBySend(t *testing.T) {
	f := start(t)
	kf, key := readKeyFile(t, f)
	a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, func(_, c map[string]any) {
		c["scope"] = "https://www.googleapis.com/auth/datastore"
	})))
	if a.status != 200 {
		t.Fatalf("token answer %d %+v", a.status, a.body)
	}
	s, err := send(f.URL(), project, a.body.AccessToken, body("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if s.status != 403 || s.err.Error.Status != "PERMISSION_DENIED" || s.err.fcmCode() != "" {
		t.Errorf("send answered %d %+v", s.status, s.err.Error)
	}
}

func TestRevokeKeyAndFailTokenRequests(t *testing.T) {
	f := start(t)
	kf, key := readKeyFile(t, f)
	f.FailTokenRequests(http.StatusServiceUnavailable, 1)
	if a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, nil))); a.status != 503 || a.body.Error == "" {
		t.Errorf("failing token request answered %d %+v", a.status, a.body)
	}
	if a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, nil))); a.status != 200 {
		t.Errorf("second token request answered %d %+v", a.status, a.body)
	}
	f.RevokeKey()
	a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, nil)))
	if a.status != 400 || a.body.Error != "invalid_grant" {
		t.Errorf("revoked key answered %d %+v", a.status, a.body)
	}
	if f.TokenRequests() != 3 {
		t.Errorf("%d token requests, want 3", f.TokenRequests())
	}
	// The SDK takes the refusal for a network error and retries it (for seven seconds, with
	// five token requests) unless its context ends first; no request reaches the send endpoint.
	c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := sdk(t, f).Send(c, &messaging.Message{Token: token})
	if err == nil {
		t.Fatal("the SDK sent with a revoked key")
	}
	t.Log(err)
	if f.Requests() != 0 || f.TokenRequests() < 4 {
		t.Errorf("%d send requests, %d token requests", f.Requests(), f.TokenRequests())
	}
}

func TestSetAccessToken(t *testing.T) {
	f := start(t)
	f.SetAccessToken("ya29.rotated")
	if a := post(t, f, body("d1")); a.status != 401 {
		t.Errorf("old token: %d", a.status)
	}
	a, err := send(f.URL(), project, "ya29.rotated", body("d1"))
	if err != nil || a.status != 200 {
		t.Errorf("new token: %d %v", a.status, err)
	}
	kf, key := readKeyFile(t, f)
	if a := tokenRequest(t, kf.TokenURI, grant(assertion(t, kf, key, nil))); a.body.AccessToken != "ya29.rotated" {
		t.Errorf("token endpoint issued %q", a.body.AccessToken)
	}
}

func TestDrop(t *testing.T) {
	f := start(t)
	f.Drop(1)
	if _, err := send(f.URL(), project, accessToken, body("d1")); err == nil {
		t.Fatal("dropped request was answered")
	}
	if a := post(t, f, body("d1")); a.status != 200 {
		t.Errorf("after the drop: %d", a.status)
	}
	if f.Count("d1") != 1 || f.Requests() != 2 {
		t.Errorf("count %d requests %d, want 1 and 2", f.Count("d1"), f.Requests())
	}
}

func TestDropAccepted(t *testing.T) {
	f := start(t)
	f.DropAccepted(1)
	// Invalid requests do not use it up.
	if a := post(t, f, `{"message": {}}`); a.status != 400 {
		t.Errorf("invalid request answered %d", a.status)
	}
	if _, err := send(f.URL(), project, accessToken, body("d1")); err == nil {
		t.Fatal("dropped request was answered")
	}
	if f.Count("d1") != 1 {
		t.Errorf("count %d, want 1: the message was accepted before the drop", f.Count("d1"))
	}
	if a := post(t, f, body("d1")); a.status != 200 {
		t.Errorf("after the drop: %d", a.status)
	}
}

func TestDelay(t *testing.T) {
	f := start(t)
	f.SetDelay(time.Minute)
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodPost, f.Endpoint()+"/projects/"+project+"/messages:send", strings.NewReader(body("d1")))
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("delayed request answered")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	f.SetDelay(0)
	if a := post(t, f, body("d1")); a.status != 200 {
		t.Errorf("after SetDelay(0): %d", a.status)
	}
	if f.Count("d1") != 1 {
		t.Errorf("count %d, want 1", f.Count("d1"))
	}
}

func TestHandlerCanBeMounted(t *testing.T) {
	f := fcmfake.New(project, accessToken)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	a, err := send(srv.URL, project, accessToken, body("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.status != 200 || f.Count("d1") != 1 {
		t.Errorf("status %d count %d", a.status, f.Count("d1"))
	}
}

func TestReset(t *testing.T) {
	f := start(t)
	post(t, f, body("d1"))
	f.Fail(fcmfake.Internal, fcmfake.Always)
	f.FailToken(token, fcmfake.Unregistered)
	f.RevokeKey()
	f.Reset()
	if len(f.Messages()) != 0 || f.Count("d1") != 0 || f.Requests() != 0 || f.TokenRequests() != 0 {
		t.Fatal("Reset kept records")
	}
	if a := post(t, f, body("d1")); a.status != 200 {
		t.Errorf("after Reset: %d", a.status)
	}
	if _, err := sdk(t, f).Send(ctx(t), &messaging.Message{Token: token}); err != nil {
		t.Errorf("after Reset the key is still revoked: %v", err)
	}
}

func TestMessagesAreCopies(t *testing.T) {
	f := start(t)
	post(t, f, body("d1"))
	m := f.Messages()[0]
	m.Data["k"] = "changed"
	*m.Android.TTL = 0
	again := f.Messages()[0]
	if again.Data["k"] != "v" || *again.Android.TTL != time.Hour {
		t.Error("Messages shares its maps with the fake")
	}
}

func TestConcurrentSends(t *testing.T) {
	f := start(t)
	f.Fail(fcmfake.Unavailable, 10)
	c := sdkNoRetry(t, f)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("d%d", i)
			for {
				_, err := c.Send(context.Background(), &messaging.Message{Token: token, Data: map[string]string{fcmfake.DeliveryIDKey: id}})
				if err == nil {
					return
				}
				if !messaging.IsUnavailable(err) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if c := f.Count(fmt.Sprintf("d%d", i)); c != 1 {
			t.Errorf("d%d accepted %d times", i, c)
		}
	}
	if r := f.Requests(); r != n+10 {
		t.Errorf("requests %d, want %d", r, n+10)
	}
	if tr := f.TokenRequests(); tr < 1 || tr > n {
		t.Errorf("%d token requests", tr)
	}
}

// sdkNoRetry returns a messaging client whose 503s come back at once: Retry-After asks for
// more than the SDK's two-minute limit on waits.
func sdkNoRetry(t *testing.T, f *fcmfake.Fake) *messaging.Client {
	f.SetRetryAfter(3 * time.Minute)
	return sdk(t, f)
}

// TestDroppedConnectionLooksLikeOneToTheClient makes sure Drop closes the connection rather
// than answering: a raw read sees EOF.
func TestDroppedConnectionLooksLikeOneToTheClient(t *testing.T) {
	f := start(t)
	f.Drop(1)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := body("d1")
	fmt.Fprintf(conn, "POST /v1/projects/%s/messages:send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		project, accessToken, len(b), b)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Errorf("read %v, want EOF", err)
	}
}

func TestCountOnly(t *testing.T) {
	f := start(t)
	var mu sync.Mutex
	var got []string
	f.CountOnly(func(id string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() {
			t.Error("zero receive time")
		}
		got = append(got, id)
	})
	if a := post(t, f, body("d1")); a.status != http.StatusOK || a.name == "" {
		t.Fatalf("answer %+v", a)
	}
	if a := post(t, f, `{"message": {}}`); a.status != http.StatusBadRequest {
		t.Fatalf("message without a target: status %d, want 400 in CountOnly too", a.status)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "d1" {
		t.Errorf("onAccept saw %q, want [d1]", got)
	}
	if len(f.Messages()) != 0 || f.Count("d1") != 0 {
		t.Errorf("%d messages kept in CountOnly", len(f.Messages()))
	}
	if f.Accepted() != 1 || f.Requests() != 2 {
		t.Errorf("Accepted %d, Requests %d; want 1 and 2", f.Accepted(), f.Requests())
	}
}
