// Package apnsfake is a protocol-faithful stand-in for Apple's APNs provider API, for tests
// that drive a real APNs client (sideshow/apns2) over loopback. Like APNs it speaks only HTTP/2
// over TLS, takes POST /3/device/{token}, authenticates every request by an ES256 provider
// token (JWT) or by a TLS client certificate, checks the apns-* headers and the JSON payload,
// and answers with APNs's status codes and {"reason": ...} bodies. It records what it accepted
// and can be told to answer with any APNs error, to stall, or to drop connections.
//
// Where Apple does not say what it answers, the fake picks and says so: a payload that is not
// a JSON object with an "aps" dictionary gets 400 BadPayload, and a request that is not HTTP/2
// gets 505.
package apnsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/fakes/faults"
)

// DevicePath is the path prefix of the push endpoint; the device token follows it.
const DevicePath = "/3/device/"

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until Reset.
const Always = faults.Always

// Payload size limits, in bytes: VoIP pushes may be larger than all others.
const (
	MaxPayload     = 4096
	MaxVoIPPayload = 5120
)

// Reasons lists every reason APNs documents, with the status it comes with.
var Reasons = map[string]int{
	"BadCollapseId":               400,
	"BadDeviceToken":              400,
	"BadExpirationDate":           400,
	"BadMessageId":                400,
	"BadPriority":                 400,
	"BadTopic":                    400,
	"DeviceTokenNotForTopic":      400,
	"DuplicateHeaders":            400,
	"IdleTimeout":                 400,
	"InvalidPushType":             400,
	"MissingDeviceToken":          400,
	"MissingTopic":                400,
	"PayloadEmpty":                400,
	"TopicDisallowed":             400,
	"BadCertificate":              403,
	"BadCertificateEnvironment":   403,
	"ExpiredProviderToken":        403,
	"Forbidden":                   403,
	"InvalidProviderToken":        403,
	"MissingProviderToken":        403,
	"UnrelatedKeyIdInToken":       403,
	"BadPath":                     404,
	"MethodNotAllowed":            405,
	"ExpiredToken":                410,
	"Unregistered":                410,
	"PayloadTooLarge":             413,
	"TooManyProviderTokenUpdates": 429,
	"TooManyRequests":             429,
	"InternalServerError":         500,
	"ServiceUnavailable":          503,
	"Shutdown":                    503,
}

// Error is an APNs error answer: a status and a reason. Timestamp is sent with 410 answers only
// (in milliseconds since the epoch, as APNs does); zero means the time of the answer.
type Error struct {
	Status    int
	Reason    string
	Timestamp time.Time
}

// ErrorFor returns the Error APNs answers with reason, with the status Reasons gives it. It
// panics for a reason APNs does not document.
func ErrorFor(reason string) Error {
	st, ok := Reasons[reason]
	if !ok {
		panic(fmt.Sprintf("apnsfake: unknown reason %q", reason))
	}
	return Error{Status: st, Reason: reason}
}

// Notification is one accepted push.
type Notification struct {
	// Token is the device token from the path.
	Token string
	// Topic is the effective topic: apns-topic, or the certificate's topic when the header
	// was left out on a certificate connection.
	Topic string
	// ApnsID is the apns-id the fake answered: the request's, or one it generated.
	ApnsID     string
	PushType   string // apns-push-type as sent ("" when left out)
	Priority   int    // apns-priority, 10 when left out
	CollapseID string
	// Expiration is apns-expiration; zero when the header was left out.
	Expiration time.Time
	// Header holds the request's headers, authorization left out.
	Header  http.Header
	Payload json.RawMessage
	// Auth is "token" or "certificate"; KeyID is the provider token's key id.
	Auth       string
	KeyID      string
	ReceivedAt time.Time
}

// Fake is an APNs provider API server. It is safe for concurrent use.
//
// Its Faults script every request, before it is authenticated or checked: Fail(e, n) answers e
// (Fail(Error{}, 0) stops failing), and a drop closes the TCP connection, so that the other
// requests in flight on it fail with it, as they would with APNs. APNs sends no Retry-After:
// SetRetryAfter changes nothing. Requests counts the requests that reached the fake, whatever
// their answer.
//
// In its Tally's count-only mode, the id given to onAccept is the apns-id, in lower case.
type Fake struct {
	*faults.Faults[Error]
	faults.Tally
	topic string
	ca    *CA

	mu            sync.Mutex
	srv           *httptest.Server
	keys          map[string]trustedKey // key id -> key
	seenTokens    map[string]bool       // provider tokens accepted so far
	verified      map[string]verifiedToken
	expiredTokens map[string]bool // provider tokens now answered ExpiredProviderToken
	notifications []Notification
	counts        map[string]int // apns-id -> accepted count
	conns         int
	tokenErrors   map[string]Error // device token -> answer
}

// New returns a fake for the app whose bundle id is topic. It trusts no provider key until
// TrustKey, and client certificates issued by its CA. It does not listen until Start.
func New(topic string) *Fake {
	ca, err := NewCA()
	if err != nil {
		panic(fmt.Sprintf("apnsfake: %v", err))
	}
	return &Fake{
		Faults:        faults.New[Error](0),
		topic:         topic,
		ca:            ca,
		keys:          make(map[string]trustedKey),
		seenTokens:    make(map[string]bool),
		verified:      make(map[string]verifiedToken),
		expiredTokens: make(map[string]bool),
		counts:        make(map[string]int),
		tokenErrors:   make(map[string]Error),
	}
}

// Start serves the fake over TLS with HTTP/2 on a loopback port and returns its base URL
// (https://127.0.0.1:port), the value to use in place of apns2.HostProduction. Clients must
// trust RootCAs. It panics if called twice.
func (f *Fake) Start() string {
	push := faults.Handler(f.Faults, MaxVoIPPayload+1, func(w http.ResponseWriter, r *http.Request, a faults.Action[Error]) {
		writeError(w, apnsID(r), a.Fail)
	}, http.HandlerFunc(f.serve))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			// APNs speaks nothing but HTTP/2; it has no answer of its own for HTTP/1.
			http.Error(w, "APNs requires HTTP/2", http.StatusHTTPVersionNotSupported)
			return
		}
		push.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  f.ca.Pool(),
		MinVersion: tls.VersionTLS12,
	}
	srv.Config.ConnContext = faults.ConnContext
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
		}
	}
	srv.StartTLS()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		srv.Close()
		panic("apnsfake: Start called twice")
	}
	f.srv = srv
	return srv.URL
}

// RootCAs returns a pool holding the certificate the fake serves, for a client's
// tls.Config.RootCAs. It panics before Start.
func (f *Fake) RootCAs() *x509.CertPool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv == nil {
		panic("apnsfake: RootCAs called before Start")
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return pool
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

// CA returns the certificate authority whose client certificates the fake accepts for
// certificate-based authentication.
func (f *Fake) CA() *CA { return f.ca }

// Topic returns the app's bundle id the fake was made for.
func (f *Fake) Topic() string { return f.topic }

// TrustKey makes the fake accept provider tokens with header kid = keyID and claim iss =
// teamID, signed by the private half of key (a P-256 key, as Apple's are; it panics for
// another curve).
func (f *Fake) TrustKey(teamID, keyID string, key *ecdsa.PublicKey) {
	if key == nil || key.Curve != elliptic.P256() {
		panic("apnsfake: provider keys are P-256")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[keyID] = trustedKey{teamID: teamID, pub: key}
}

// ExpireProviderTokens makes every provider token the fake has accepted so far answer 403
// ExpiredProviderToken from now on, as APNs does for a token issued more than an hour ago.
// Tokens the client generates afterwards are accepted.
func (f *Fake) ExpireProviderTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for t := range f.seenTokens {
		f.expiredTokens[t] = true
	}
}

// FailToken makes every well-formed, authenticated request for the device token answer e,
// until FailToken(token, Error{}).
func (f *Fake) FailToken(token string, e Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Status == 0 {
		delete(f.tokenErrors, token)
		return
	}
	f.tokenErrors[token] = e
}

// Unregister makes the device token answer 410 Unregistered with the timestamp since, as APNs
// does for an app that was uninstalled at that time.
func (f *Fake) Unregister(token string, since time.Time) {
	f.FailToken(token, Error{Status: http.StatusGone, Reason: "Unregistered", Timestamp: since})
}

// CertificatePEM returns the certificate the fake serves, as PEM: a file for clients that
// take their trusted roots from a file (SSL_CERT_FILE for Go programs) rather than from
// RootCAs. It panics before Start.
func (f *Fake) CertificatePEM() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv == nil {
		panic("apnsfake: CertificatePEM called before Start")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

// Reset clears every misbehaviour, every expired provider token and everything recorded. Trusted
// keys stay.
func (f *Fake) Reset() {
	f.Faults.Reset()
	f.Tally.Reset()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifications = nil
	f.counts = make(map[string]int)
	f.conns = 0
	f.tokenErrors = make(map[string]Error)
	f.seenTokens = make(map[string]bool)
	f.verified = make(map[string]verifiedToken)
	f.expiredTokens = make(map[string]bool)
}

// Notifications returns a copy of the accepted notifications, oldest first.
func (f *Fake) Notifications() []Notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Notification, len(f.notifications))
	for i, n := range f.notifications {
		n.Header = n.Header.Clone()
		n.Payload = append(json.RawMessage(nil), n.Payload...)
		out[i] = n
	}
	return out
}

// Count returns how many notifications with the given apns-id the fake accepted.
func (f *Fake) Count(apnsID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[strings.ToLower(apnsID)]
}

// ProviderTokens returns how many distinct provider tokens the fake has accepted: APNs wants
// a provider to renew its token at most every 20 minutes.
func (f *Fake) ProviderTokens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seenTokens)
}

// Connections returns how many connections clients opened to the fake.
func (f *Fake) Connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// pushTypes maps each apns-push-type to the suffix its topic carries after the bundle id.
var pushTypes = map[string]string{
	"alert":        "",
	"background":   "",
	"location":     ".location-query",
	"voip":         ".voip",
	"complication": ".complication",
	"fileprovider": ".pushkit.fileprovider",
	"mdm":          "",
	"liveactivity": ".push-type.liveactivity",
	"pushtotalk":   ".voip-ptt",
	"widgets":      ".push-type.widgets",
}

var (
	canonicalUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	validTopic    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.\-_]*$`)
)

// apnsHeaders are the headers APNs refuses to see twice.
var apnsHeaders = []string{"Authorization", "Apns-Id", "Apns-Topic", "Apns-Push-Type",
	"Apns-Priority", "Apns-Expiration", "Apns-Collapse-Id"}

// apnsID returns the request's apns-id, or a new one when it has none that APNs would take.
func apnsID(r *http.Request) string {
	if id := r.Header.Get("apns-id"); canonicalUUID.MatchString(id) {
		return id
	}
	return uuid.NewString()
}

// serve handles an HTTP/2 request that its Faults let through.
func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	apnsID := apnsID(r)
	raw, readErr := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(readErr, &tooBig) {
		// raw holds more than any payload may: check answers PayloadTooLarge, in its turn.
		readErr = nil
	}
	token, ok := strings.CutPrefix(r.URL.Path, DevicePath)
	if !ok || strings.Contains(token, "/") {
		writeError(w, apnsID, ErrorFor("BadPath"))
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, apnsID, ErrorFor("MethodNotAllowed"))
		return
	}
	for _, h := range apnsHeaders {
		if len(r.Header.Values(h)) > 1 {
			writeError(w, apnsID, ErrorFor("DuplicateHeaders"))
			return
		}
	}
	a, reason := f.authenticate(r)
	if reason != "" {
		writeError(w, apnsID, ErrorFor(reason))
		return
	}
	if readErr != nil {
		writeError(w, apnsID, Error{Status: http.StatusBadRequest, Reason: "BadPayload"})
		return
	}
	n, e := f.check(r, token, a, raw)
	if e.Status != 0 {
		writeError(w, apnsID, e)
		return
	}
	n.ApnsID = apnsID

	f.mu.Lock()
	e, failed := f.tokenErrors[token]
	f.mu.Unlock()
	if failed {
		writeError(w, apnsID, e)
		return
	}
	if keep, report := f.Accept(1); keep {
		f.mu.Lock()
		f.notifications = append(f.notifications, n)
		f.counts[strings.ToLower(apnsID)]++
		f.mu.Unlock()
	} else if report != nil {
		report(strings.ToLower(apnsID), n.ReceivedAt)
	}
	w.Header().Set("apns-id", apnsID)
	w.WriteHeader(http.StatusOK)
}

// check validates the device token, the headers and the payload of an authenticated request,
// in APNs's terms, and returns the notification to record or the error to answer.
func (f *Fake) check(r *http.Request, token string, a auth, raw []byte) (Notification, Error) {
	n := Notification{
		Token:      token,
		Header:     r.Header.Clone(),
		Auth:       a.method,
		KeyID:      a.keyID,
		ReceivedAt: time.Now(),
		Priority:   10,
	}
	n.Header.Del("Authorization")
	if token == "" {
		return n, ErrorFor("MissingDeviceToken")
	}
	if b, err := hex.DecodeString(token); err != nil || len(b) < 32 || len(b) > 100 {
		return n, ErrorFor("BadDeviceToken")
	}

	n.PushType = r.Header.Get("apns-push-type")
	pt := n.PushType
	if pt == "" {
		pt = "alert"
	}
	suffix, ok := pushTypes[pt]
	if !ok {
		return n, ErrorFor("InvalidPushType")
	}

	topic, hasTopic := r.Header["Apns-Topic"]
	switch {
	case hasTopic:
		n.Topic = topic[0]
	case a.method == "certificate":
		// A single-topic certificate names its topic; APNs falls back to it.
		n.Topic = a.certTopic + suffix
	default:
		return n, ErrorFor("MissingTopic")
	}
	if !validTopic.MatchString(n.Topic) {
		return n, ErrorFor("BadTopic")
	}
	base := f.topic
	if a.method == "certificate" {
		base = a.certTopic
	}
	if n.Topic != base+suffix || base != f.topic {
		return n, ErrorFor("TopicDisallowed")
	}

	if v, ok := r.Header["Apns-Priority"]; ok {
		p, err := strconv.Atoi(v[0])
		if err != nil || (p != 1 && p != 5 && p != 10) {
			return n, ErrorFor("BadPriority")
		}
		n.Priority = p
	}
	if pt == "background" && n.Priority == 10 {
		// Apple: a background push must use priority 5 (or 1); 10 is an error.
		return n, ErrorFor("BadPriority")
	}
	if v, ok := r.Header["Apns-Expiration"]; ok {
		secs, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || secs < 0 || !allDigits(v[0]) {
			return n, ErrorFor("BadExpirationDate")
		}
		n.Expiration = time.Unix(secs, 0)
	}
	if v, ok := r.Header["Apns-Id"]; ok && !canonicalUUID.MatchString(v[0]) {
		return n, ErrorFor("BadMessageId")
	}
	if v, ok := r.Header["Apns-Collapse-Id"]; ok {
		if len(v[0]) > 64 {
			return n, ErrorFor("BadCollapseId")
		}
		n.CollapseID = v[0]
	}

	limit := MaxPayload
	if pt == "voip" {
		limit = MaxVoIPPayload
	}
	if len(raw) > limit {
		return n, ErrorFor("PayloadTooLarge")
	}
	if len(raw) == 0 {
		return n, ErrorFor("PayloadEmpty")
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		return n, Error{Status: http.StatusBadRequest, Reason: "BadPayload"}
	}
	var aps map[string]json.RawMessage
	if err := json.Unmarshal(body["aps"], &aps); err != nil || aps == nil {
		return n, Error{Status: http.StatusBadRequest, Reason: "BadPayload"}
	}
	n.Payload = append(json.RawMessage(nil), raw...)
	return n, Error{}
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// writeError answers e as APNs does: the apns-id header and a JSON body with the reason, plus
// the timestamp (milliseconds) for 410.
func writeError(w http.ResponseWriter, apnsID string, e Error) {
	body := struct {
		Reason    string `json:"reason"`
		Timestamp *int64 `json:"timestamp,omitempty"`
	}{Reason: e.Reason}
	if e.Status == http.StatusGone {
		ts := e.Timestamp
		if ts.IsZero() {
			ts = time.Now()
		}
		ms := ts.UnixMilli()
		body.Timestamp = &ms
	}
	w.Header().Set("apns-id", apnsID)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(body)
}
