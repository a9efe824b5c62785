// Package sendgridfake is a protocol-faithful stand-in for SendGrid's v3 Mail Send API, for
// tests that drive the real sendgrid-go SDK over loopback. It checks the bearer key and the
// request body the way SendGrid does, answers with SendGrid's status codes, headers and error
// bodies, records what it accepted, and can be told to fail, stall or drop connections.
package sendgridfake

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
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
)

// SendPath is the path of the Mail Send endpoint.
const SendPath = "/v3/mail/send"

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until Reset.
const Always = -1

// maxBodyBytes is SendGrid's limit on a whole Mail Send request (30 MB).
const maxBodyBytes = 30 << 20

// Message is one accepted personalization: SendGrid sends one email per personalization.
type Message struct {
	To         []string
	From       string
	FromName   string
	Subject    string
	Text       string
	HTML       string
	Categories []string
	// CustomArgs merges the request's custom_args with the personalization's, which win.
	CustomArgs map[string]string
	// Headers merges the request's headers with the personalization's, which win.
	Headers map[string]string
	// MessageID is the X-Message-Id the fake answered for the request.
	MessageID  string
	ReceivedAt time.Time
}

// Fake is a SendGrid v3 Mail Send server. It is safe for concurrent use.
type Fake struct {
	apiKey string

	mu         sync.Mutex
	srv        *httptest.Server
	messages   []Message
	counts     map[string]int // custom_args["delivery_id"] -> accepted count
	requests   int
	failStatus int
	failLeft   int
	dropLeft   int
	delay      time.Duration
	retryAfter time.Duration
	accepted   int64
	countOnly  bool
	onAccept   func(deliveryID string, at time.Time)
}

// New returns a fake that accepts requests authorized with apiKey. It does not listen until
// Start; Handler serves it elsewhere.
func New(apiKey string) *Fake {
	return &Fake{apiKey: apiKey, counts: make(map[string]int), retryAfter: time.Second}
}

// Start serves the fake on a loopback port and returns its base URL (scheme and host, no path),
// the value to use in place of https://api.sendgrid.com. It panics if called twice.
func (f *Fake) Start() (baseURL string) {
	srv := httptest.NewServer(f.Handler())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		srv.Close()
		panic("sendgridfake: Start called twice")
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

// Handler returns the fake as an http.Handler serving SendPath.
func (f *Fake) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(SendPath, f.serveSend)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErrors(w, http.StatusNotFound, apiError{Message: "not found"})
	})
	return mux
}

// Fail makes the next n requests (or every request, if n is Always) answer status with a
// SendGrid error body instead of being processed. A 429 carries Retry-After and the
// X-RateLimit headers (see SetRetryAfter). Fail(0, 0) stops failing.
func (f *Fake) Fail(status, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStatus, f.failLeft = status, n
}

// Drop makes the next n requests (or every request, if n is Always) lose their connection after
// the fake has read them, without an answer and without accepting the message.
func (f *Fake) Drop(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLeft = n
}

// SetDelay makes every request wait d (or until the client gives up) before it is handled.
func (f *Fake) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// SetRetryAfter sets the wait that 429 answers ask for (default one second). It is sent in
// whole seconds, rounded up.
func (f *Fake) SetRetryAfter(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retryAfter = d
}

// CountOnly switches the fake to counting only, for load tests that send more messages than
// are worth keeping: from then on it records no message (Messages and Count see none of the
// new ones) and instead calls onAccept, when not nil, with the delivery id of each accepted
// message (custom_args["delivery_id"], "" when missing) and the time the fake received it.
// Accepted and Requests keep counting. onAccept is called from the request's goroutine, outside
// the fake's lock, and must be safe for concurrent use. Reset does not undo CountOnly.
func (f *Fake) CountOnly(onAccept func(deliveryID string, at time.Time)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.countOnly, f.onAccept = true, onAccept
}

// Accepted returns how many messages (personalizations) the fake accepted, in either mode.
func (f *Fake) Accepted() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted
}

// Reset clears every misbehaviour and everything recorded.
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = nil
	f.counts = make(map[string]int)
	f.requests, f.accepted = 0, 0
	f.failStatus, f.failLeft, f.dropLeft, f.delay = 0, 0, 0, 0
	f.retryAfter = time.Second
}

// Messages returns a copy of the accepted messages, oldest first.
func (f *Fake) Messages() []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Message, len(f.messages))
	for i, m := range f.messages {
		m.To = append([]string(nil), m.To...)
		m.Categories = append([]string(nil), m.Categories...)
		args := make(map[string]string, len(m.CustomArgs))
		for k, v := range m.CustomArgs {
			args[k] = v
		}
		m.CustomArgs = args
		out[i] = m
	}
	return out
}

// Count returns how many accepted messages carried custom_args["delivery_id"] == deliveryID.
func (f *Fake) Count(deliveryID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[deliveryID]
}

// Requests returns how many requests reached the send endpoint, whatever their answer.
func (f *Fake) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// apiError is one entry of SendGrid's error body. Field and Help are null when not set.
type apiError struct {
	Message string  `json:"message"`
	Field   *string `json:"field"`
	Help    *string `json:"help"`
}

func fieldError(field, msg string) apiError { return apiError{Message: msg, Field: &field} }

func writeErrors(w http.ResponseWriter, status int, errs ...apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []apiError `json:"errors"`
	}{errs})
}

// misbehaviour is what the fake was told to do with one request.
type misbehaviour struct {
	delay      time.Duration
	drop       bool
	failStatus int
	retryAfter time.Duration
}

// take counts the request and consumes one unit of any pending misbehaviour.
func (f *Fake) take() misbehaviour {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	mb := misbehaviour{delay: f.delay, retryAfter: f.retryAfter}
	if f.dropLeft != 0 {
		mb.drop = true
		if f.dropLeft > 0 {
			f.dropLeft--
		}
		return mb
	}
	if f.failLeft != 0 && f.failStatus != 0 {
		mb.failStatus = f.failStatus
		if f.failLeft > 0 {
			f.failLeft--
		}
	}
	return mb
}

func (f *Fake) serveSend(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeErrors(w, http.StatusMethodNotAllowed, apiError{Message: "method not allowed"})
		return
	}
	// Read the whole request first, as SendGrid does, so a dropped connection or a failure
	// answer comes after the client has sent everything.
	raw, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	mb := f.take()

	if mb.delay > 0 {
		t := time.NewTimer(mb.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if mb.drop {
		dropConnection(w)
		return
	}
	if mb.failStatus != 0 {
		f.writeFailure(w, mb)
		return
	}

	if !f.authorized(r.Header.Get("Authorization")) {
		writeErrors(w, http.StatusUnauthorized,
			apiError{Message: "The provided authorization grant is invalid, expired, or revoked"})
		return
	}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			writeErrors(w, http.StatusRequestEntityTooLarge,
				apiError{Message: "The JSON payload you have included in your request is too large."})
			return
		}
		writeErrors(w, http.StatusBadRequest, apiError{Message: "Bad Request"})
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeErrors(w, http.StatusUnsupportedMediaType,
			apiError{Message: "Content-Type should be application/json."})
		return
	}
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			raw, err = io.ReadAll(io.LimitReader(zr, maxBodyBytes+1))
		}
		if err != nil {
			writeErrors(w, http.StatusBadRequest, apiError{Message: "Bad Request"})
			return
		}
		if len(raw) > maxBodyBytes {
			writeErrors(w, http.StatusRequestEntityTooLarge,
				apiError{Message: "The JSON payload you have included in your request is too large."})
			return
		}
	default:
		writeErrors(w, http.StatusUnsupportedMediaType,
			apiError{Message: fmt.Sprintf("Content-Encoding %q is not supported.", enc)})
		return
	}

	var req mailRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErrors(w, http.StatusBadRequest, decodeError(err))
		return
	}
	if dec.More() {
		writeErrors(w, http.StatusBadRequest, apiError{Message: "Bad Request"})
		return
	}
	if errs := req.validate(); len(errs) > 0 {
		writeErrors(w, http.StatusBadRequest, errs...)
		return
	}

	id := newMessageID()
	f.record(&req, id)
	w.Header().Set("X-Message-Id", id)
	w.WriteHeader(http.StatusAccepted)
}

func (f *Fake) authorized(header string) bool {
	key, ok := strings.CutPrefix(header, "Bearer ")
	return ok && key != "" && key == f.apiKey
}

func (f *Fake) writeFailure(w http.ResponseWriter, mb misbehaviour) {
	msg := strings.ToLower(http.StatusText(mb.failStatus))
	switch mb.failStatus {
	case http.StatusUnauthorized:
		msg = "The provided authorization grant is invalid, expired, or revoked"
	case http.StatusForbidden:
		msg = "access forbidden"
	case http.StatusRequestEntityTooLarge:
		msg = "The JSON payload you have included in your request is too large."
	case http.StatusTooManyRequests:
		secs := int64((mb.retryAfter + time.Second - 1) / time.Second)
		h := w.Header()
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		h.Set("X-RateLimit-Limit", "600")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Unix()+secs, 10))
		msg = "too many requests"
	}
	if msg == "" {
		msg = "error"
	}
	writeErrors(w, mb.failStatus, apiError{Message: msg})
}

// dropConnection closes the client's connection without an answer. Servers that cannot hijack
// (HTTP/2) reset the stream instead.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func (f *Fake) record(req *mailRequest, id string) {
	now := time.Now()
	f.mu.Lock()
	f.accepted += int64(len(req.Personalizations))
	if f.countOnly {
		onAccept := f.onAccept
		f.mu.Unlock()
		if onAccept != nil {
			for _, p := range req.Personalizations {
				d, ok := p.CustomArgs["delivery_id"]
				if !ok {
					d = req.CustomArgs["delivery_id"]
				}
				onAccept(d, now)
			}
		}
		return
	}
	defer f.mu.Unlock()
	for _, p := range req.Personalizations {
		m := Message{
			From:       req.From.Email,
			FromName:   req.From.Name,
			Subject:    req.Subject,
			Categories: append([]string(nil), req.Categories...),
			CustomArgs: make(map[string]string),
			Headers:    make(map[string]string),
			MessageID:  id,
			ReceivedAt: now,
		}
		if p.From != nil {
			m.From, m.FromName = p.From.Email, p.From.Name
		}
		if p.Subject != "" {
			m.Subject = p.Subject
		}
		for _, to := range p.To {
			m.To = append(m.To, to.Email)
		}
		for _, c := range req.Content {
			switch c.Type {
			case "text/plain":
				m.Text = c.Value
			case "text/html":
				m.HTML = c.Value
			}
		}
		for k, v := range req.CustomArgs {
			m.CustomArgs[k] = v
		}
		for k, v := range p.CustomArgs {
			m.CustomArgs[k] = v
		}
		for k, v := range req.Headers {
			m.Headers[k] = v
		}
		for k, v := range p.Headers {
			m.Headers[k] = v
		}
		if d, ok := m.CustomArgs["delivery_id"]; ok {
			f.counts[d]++
		}
		f.messages = append(f.messages, m)
	}
}

func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// decodeError turns a JSON decoding error into SendGrid's answer, naming the field when the
// decoder knows it.
func decodeError(err error) apiError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fieldError(typeErr.Field, fmt.Sprintf("Invalid type. Expected: %s, given: %s.", typeErr.Type, typeErr.Value))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fieldError(strings.Trim(name, `"`), "Unknown field.")
	}
	return apiError{Message: "Bad Request"}
}
