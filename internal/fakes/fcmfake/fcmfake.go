// Package fcmfake is a protocol-faithful stand-in for Firebase Cloud Messaging's HTTP v1 API and
// Google's OAuth2 token endpoint, for tests that drive the real firebase.google.com/go/v4 SDK
// over loopback.
//
// The send endpoint, POST /v1/projects/{project}/messages:send, checks the bearer access token
// and decodes the request as strictly as FCM does: unknown fields, a target other than exactly
// one of token, topic and condition, non-string data values, reserved data keys, a malformed
// registration token, an Android priority other than NORMAL or HIGH, a ttl that is not a
// protobuf Duration ("3600s") of at most four weeks, and more than 4096 bytes of payload (data
// keys and values plus the notification's title and body) are refused with FCM's status codes
// and Google's error body: {"error":{"code","message","status","details":[FcmError,
// BadRequest]}}. Accepted messages are answered with {"name":"projects/{p}/messages/{id}"} and
// recorded.
//
// The token endpoint, POST /token, takes the JWT-bearer grant that service-account credentials
// make, verifies its RS256 signature against the fake's service-account key and its claims, and
// issues the fake's access token. ServiceAccountJSON returns a key file whose token_uri points at
// the fake, so the SDK can be run with real service-account credentials.
//
// Every FCM error answer can be scripted, for the next requests (Fail) or for one registration
// token (FailToken), as can delays, dropped connections and token endpoint failures. Error
// message texts follow FCM's where they are known and approximate them elsewhere; status
// codes, statuses, FCM error codes and field violations are FCM's.
package fcmfake

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/fakes/faults"
)

// DeliveryIDKey is the data key that Count counts messages by. Herald's FCM sender sets it to
// the delivery id.
const DeliveryIDKey = "herald_delivery_id"

// Always, passed as a count to Fail, Drop, DropAccepted or FailTokenRequests, makes the
// misbehaviour permanent until it is cleared or Reset.
const Always = faults.Always

// maxRequestBytes bounds a send request body. FCM's own limit is on the payload (4096 bytes),
// checked after decoding; this only stops a runaway client.
const maxRequestBytes = 1 << 20

// Failure is an error answer of FCM's that the fake can be told to give.
type Failure int

// The failures, each as FCM answers it.
const (
	// NoFailure clears a FailToken.
	NoFailure Failure = iota
	// Unregistered: 404 NOT_FOUND, FCM error code UNREGISTERED (the app was uninstalled or the
	// token expired).
	Unregistered
	// InvalidToken: 400 INVALID_ARGUMENT, FCM error code INVALID_ARGUMENT, with a BadRequest
	// field violation on message.token.
	InvalidToken
	// InvalidArgument: 400 INVALID_ARGUMENT, FCM error code INVALID_ARGUMENT, with no field
	// violation on the token (something in the payload).
	InvalidArgument
	// SenderIDMismatch: 403 PERMISSION_DENIED, FCM error code SENDER_ID_MISMATCH (the token
	// belongs to another Firebase project).
	SenderIDMismatch
	// QuotaExceeded: 429 RESOURCE_EXHAUSTED, FCM error code QUOTA_EXCEEDED, with Retry-After.
	QuotaExceeded
	// Unavailable: 503 UNAVAILABLE, FCM error code UNAVAILABLE, with Retry-After.
	Unavailable
	// Internal: 500 INTERNAL, FCM error code INTERNAL.
	Internal
	// ThirdPartyAuthError: 401 UNAUTHENTICATED, FCM error code THIRD_PARTY_AUTH_ERROR (FCM's
	// credentials for APNs or Web Push were refused).
	ThirdPartyAuthError
	// Unauthenticated: 401 UNAUTHENTICATED without an FCM error code: the caller's access token
	// is missing, invalid or expired.
	Unauthenticated
	// PermissionDenied: 403 PERMISSION_DENIED without an FCM error code: the caller may not
	// send for the project.
	PermissionDenied
)

var failureNames = [...]string{
	NoFailure:           "NoFailure",
	Unregistered:        "Unregistered",
	InvalidToken:        "InvalidToken",
	InvalidArgument:     "InvalidArgument",
	SenderIDMismatch:    "SenderIDMismatch",
	QuotaExceeded:       "QuotaExceeded",
	Unavailable:         "Unavailable",
	Internal:            "Internal",
	ThirdPartyAuthError: "ThirdPartyAuthError",
	Unauthenticated:     "Unauthenticated",
	PermissionDenied:    "PermissionDenied",
}

func (f Failure) String() string {
	if f >= 0 && int(f) < len(failureNames) {
		return failureNames[f]
	}
	return "Failure(" + strconv.Itoa(int(f)) + ")"
}

// Message is one accepted message.
type Message struct {
	// Name is the name the fake answered, projects/{project}/messages/{id}.
	Name string
	// Exactly one of Token, Topic and Condition is set.
	Token, Topic, Condition string
	// Notification is nil when the message had none.
	Notification *Notification
	Data         map[string]string
	// Android is nil when the message had no android block.
	Android    *Android
	ReceivedAt time.Time
}

// Notification is a message's basic notification.
type Notification struct {
	Title, Body, Image string
}

// Android is a message's android block, the fields the fake decodes.
type Android struct {
	CollapseKey string
	// Priority is as sent: "NORMAL", "HIGH" or their lower-case forms, or empty.
	Priority string
	// TTL is nil when the message had no ttl.
	TTL                   *time.Duration
	RestrictedPackageName string
	Data                  map[string]string
}

// Fake is an FCM HTTP v1 server with its OAuth2 token endpoint. It is safe for concurrent use.
//
// Its Faults script the send endpoint, before authentication: Fail(fl, n) answers fl, whatever
// the request carries; QuotaExceeded and Unavailable answers ask to wait one second, or what
// SetRetryAfter says (zero leaves Retry-After out). Requests counts the requests that reached
// the send endpoint, whatever their answer.
//
// In its Tally's count-only mode, the id given to onAccept is data[DeliveryIDKey] ("" when
// missing).
type Fake struct {
	*faults.Faults[Failure]
	faults.Tally
	project     string
	accessToken string
	account     *serviceAccount
	token       *faults.Faults[int] // the token endpoint's: a failure is an HTTP status

	mu           sync.Mutex
	srv          *httptest.Server
	messages     []Message
	counts       map[string]int // data[DeliveryIDKey] -> accepted count
	tokenFail    map[string]Failure
	dropAccepted faults.Countdown
	revoked      bool
}

// New returns a fake for the Firebase project projectID that accepts accessToken, and issues it
// from its token endpoint. It does not listen until Start; Handler serves it elsewhere.
func New(projectID, accessToken string) *Fake {
	if projectID == "" || accessToken == "" {
		panic("fcmfake: New needs a project id and an access token")
	}
	return &Fake{
		Faults:      faults.New[Failure](time.Second),
		project:     projectID,
		accessToken: accessToken,
		account:     newServiceAccount(projectID),
		token:       faults.New[int](0),
		counts:      make(map[string]int),
		tokenFail:   make(map[string]Failure),
	}
}

// Start serves the fake on a loopback port and returns its base URL (scheme and host, no path).
// It panics if called twice.
func (f *Fake) Start() (baseURL string) {
	srv := httptest.NewServer(f.Handler())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		srv.Close()
		panic("fcmfake: Start called twice")
	}
	f.srv = srv
	return srv.URL
}

// Close stops the server started by Start, if any, and waits for its requests to finish.
func (f *Fake) Close() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// URL returns the base URL of the server started by Start. It panics before Start.
func (f *Fake) URL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv == nil {
		panic("fcmfake: not started")
	}
	return f.srv.URL
}

// Endpoint returns the messaging endpoint for the SDK's option.WithEndpoint: URL() + "/v1".
func (f *Fake) Endpoint() string { return f.URL() + "/v1" }

// ProjectID returns the project the fake serves.
func (f *Fake) ProjectID() string { return f.project }

// AccessToken returns the only access token the send endpoint accepts.
func (f *Fake) AccessToken() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accessToken
}

// SetAccessToken replaces the access token: the send endpoint refuses the old one with 401, as
// FCM refuses a revoked token, and the token endpoint issues the new one.
func (f *Fake) SetAccessToken(token string) {
	if token == "" {
		panic("fcmfake: empty access token")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accessToken = token
}

// ServiceAccountJSON returns a service-account key file for the fake's project whose token_uri
// is the fake's token endpoint. It panics before Start.
func (f *Fake) ServiceAccountJSON() []byte { return f.account.keyFile(f.URL() + "/token") }

// Handler returns the fake as an http.Handler serving /v1/projects/ and /token.
func (f *Fake) Handler() http.Handler {
	send := faults.Handler(f.Faults, maxRequestBytes, func(w http.ResponseWriter, _ *http.Request, a faults.Action[Failure]) {
		writeFailure(w, a.Fail, a.RetryAfter)
	}, http.HandlerFunc(f.serveSend))
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/projects/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := sendPath(r.URL.Path); !ok {
			writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "")
			return
		}
		if r.Method != http.MethodPost {
			writeGoogleError(w, http.StatusMethodNotAllowed, "", "Method Not Allowed", "")
			return
		}
		send.ServeHTTP(w, r)
	})
	mux.HandleFunc("/token", f.serveToken)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "")
	})
	return mux
}

// FailToken makes every valid request to the registration token answer fl, until
// FailToken(token, NoFailure) or Reset.
func (f *Fake) FailToken(token string, fl Failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl == NoFailure {
		delete(f.tokenFail, token)
		return
	}
	f.tokenFail[token] = fl
}

// DropAccepted makes the next n valid send requests (or every one, if n is Always) be accepted
// and recorded, and then lose their connection before the answer: the case in which a client
// that retries sends a message twice.
func (f *Fake) DropAccepted(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropAccepted = faults.Countdown(n)
}

// RevokeKey makes the token endpoint refuse grants signed with the service-account key, as
// Google does once a key is deleted: 400 invalid_grant.
func (f *Fake) RevokeKey() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = true
}

// FailTokenRequests makes the next n token requests (or every one, if n is Always) answer
// status with an OAuth2 error body.
func (f *Fake) FailTokenRequests(status, n int) { f.token.Fail(status, n) }

// Reset clears every misbehaviour and everything recorded, and restores the key.
func (f *Fake) Reset() {
	f.Faults.Reset()
	f.token.Reset()
	f.Tally.Reset()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = nil
	f.counts = make(map[string]int)
	f.tokenFail = make(map[string]Failure)
	f.dropAccepted = 0
	f.revoked = false
}

// Messages returns a copy of the accepted messages, oldest first.
func (f *Fake) Messages() []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Message, len(f.messages))
	for i, m := range f.messages {
		m.Data = copyMap(m.Data)
		if m.Notification != nil {
			n := *m.Notification
			m.Notification = &n
		}
		if m.Android != nil {
			a := *m.Android
			if a.TTL != nil {
				ttl := *a.TTL
				a.TTL = &ttl
			}
			a.Data = copyMap(a.Data)
			m.Android = &a
		}
		out[i] = m
	}
	return out
}

// Count returns how many accepted messages carried data[DeliveryIDKey] == deliveryID.
func (f *Fake) Count(deliveryID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[deliveryID]
}

// TokenRequests returns how many requests reached the token endpoint.
func (f *Fake) TokenRequests() int { return f.token.Requests() }

// serveSend handles a POST to a send path that its Faults let through.
func (f *Fake) serveSend(w http.ResponseWriter, r *http.Request) {
	project, _ := sendPath(r.URL.Path)
	raw, readErr := io.ReadAll(r.Body)
	switch f.authorize(r.Header.Get("Authorization")) {
	case authMissing, authInvalid:
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
		writeFailure(w, Unauthenticated, 0)
		return
	case authNoScope:
		w.Header().Set("WWW-Authenticate",
			`Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="https://www.googleapis.com/auth/firebase.messaging"`)
		writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", "",
			errorInfo("ACCESS_TOKEN_SCOPE_INSUFFICIENT"))
		return
	}
	if project != f.project {
		writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", fmt.Sprintf(
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/%s' (or it may not exist).",
			project), "", errorInfo("IAM_PERMISSION_DENIED"))
		return
	}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			writeGoogleError(w, http.StatusRequestEntityTooLarge, "", "Request payload size exceeds the limit.", "")
			return
		}
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			"Invalid JSON payload received. Content-Type must be application/json.", "")
		return
	}

	req, verr := decodeSend(raw)
	if verr != nil {
		verr.write(w)
		return
	}
	if req.validateOnly {
		writeJSON(w, http.StatusOK, map[string]string{"name": "projects/" + project + "/messages/fake_message_id"})
		return
	}
	if req.msg.Token != "" {
		f.mu.Lock()
		fl := f.tokenFail[req.msg.Token]
		f.mu.Unlock()
		if fl != NoFailure {
			writeFailure(w, fl, f.RetryAfter())
			return
		}
	}

	name := "projects/" + project + "/messages/" + newMessageID()
	dropAfter := f.record(req.msg, name)
	if dropAfter {
		faults.DropConnection(w, r)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": name})
}

// sendPath returns the project of /v1/projects/{project}/messages:send.
func sendPath(p string) (project string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v1/projects/")
	if !ok {
		return "", false
	}
	project, ok = strings.CutSuffix(rest, "/messages:send")
	return project, ok && project != "" && !strings.Contains(project, "/")
}

type auth int

const (
	authOK auth = iota
	authMissing
	authInvalid
	authNoScope
)

func (f *Fake) authorize(header string) auth {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return authMissing
	}
	switch current := f.AccessToken(); tok {
	case current:
		return authOK
	case current + noScopeSuffix:
		return authNoScope
	}
	return authInvalid
}

// record stores an accepted message and reports whether its answer is to be dropped.
func (f *Fake) record(m Message, name string) (drop bool) {
	m.Name = name
	m.ReceivedAt = time.Now()
	keep, report := f.Accept(1)
	f.mu.Lock()
	if keep {
		f.messages = append(f.messages, m)
		if d, ok := m.Data[DeliveryIDKey]; ok {
			f.counts[d]++
		}
	}
	drop = f.dropAccepted.Take()
	f.mu.Unlock()
	if report != nil {
		report(m.Data[DeliveryIDKey], m.ReceivedAt)
	}
	return drop
}

// writeFailure answers fl the way FCM does.
func writeFailure(w http.ResponseWriter, fl Failure, retryAfter time.Duration) {
	setRetryAfter := func() {
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(faults.Seconds(retryAfter), 10))
		}
	}
	switch fl {
	case Unregistered:
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
	case InvalidToken:
		const msg = "The registration token is not a valid FCM registration token"
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", msg, "INVALID_ARGUMENT",
			badRequest(violation{"message.token", msg}))
	case InvalidArgument:
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
	case SenderIDMismatch:
		writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
	case QuotaExceeded:
		setRetryAfter()
		writeGoogleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
			"Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com'.",
			"QUOTA_EXCEEDED")
	case Unavailable:
		setRetryAfter()
		writeGoogleError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
	case Internal:
		writeGoogleError(w, http.StatusInternalServerError, "INTERNAL", "Internal error encountered.", "INTERNAL")
	case ThirdPartyAuthError:
		writeGoogleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR")
	case Unauthenticated:
		writeGoogleError(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
			"", errorInfo("ACCESS_TOKEN_TYPE_UNSUPPORTED"))
	case PermissionDenied:
		writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/unknown' (or it may not exist).",
			"", errorInfo("IAM_PERMISSION_DENIED"))
	default:
		panic(fmt.Sprintf("fcmfake: unknown failure %v", fl))
	}
}

// violation is one google.rpc.BadRequest field violation.
type violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

type detail map[string]any

func badRequest(vs ...violation) detail {
	return detail{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": vs}
}

func errorInfo(reason string) detail {
	return detail{
		"@type":    "type.googleapis.com/google.rpc.ErrorInfo",
		"reason":   reason,
		"domain":   "googleapis.com",
		"metadata": map[string]string{"service": "fcm.googleapis.com", "method": "google.firebase.fcm.v1.FcmService.SendMessage"},
	}
}

// writeGoogleError writes Google's error body. fcmCode, when set, adds the FcmError detail
// first, as FCM does.
func writeGoogleError(w http.ResponseWriter, code int, status, msg, fcmCode string, extra ...detail) {
	type body struct {
		Code    int      `json:"code"`
		Message string   `json:"message"`
		Status  string   `json:"status,omitempty"`
		Details []detail `json:"details,omitempty"`
	}
	b := body{Code: code, Message: msg, Status: status}
	if fcmCode != "" {
		b.Details = append(b.Details, detail{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcmCode})
	}
	b.Details = append(b.Details, extra...)
	writeJSON(w, code, map[string]body{"error": b})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// newMessageID returns an id shaped like FCM's: "0:<micros>%<16 hex digits>".
func newMessageID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("0:%d%%%s", time.Now().UnixMicro(), hex.EncodeToString(b[:]))
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
