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

	"github.com/heraldhq/herald/internal/fakes/faults"
)

// SendPath is the path of the Mail Send endpoint.
const SendPath = "/v3/mail/send"

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until Reset.
const Always = faults.Always

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
//
// Its Faults script the send endpoint, before authentication: Fail(status, n) answers status
// with a SendGrid error body, a 429 with Retry-After (one second until SetRetryAfter) and the
// X-RateLimit headers. Requests counts the requests that reached it, whatever their answer.
//
// Its Tally counts personalizations, each a message; in count-only mode, the id given to
// onAccept is the message's custom_args["delivery_id"] ("" when missing).
type Fake struct {
	*faults.Faults[int]
	faults.Tally
	apiKey string

	mu       sync.Mutex
	srv      *httptest.Server
	messages []Message
	counts   map[string]int // custom_args["delivery_id"] -> accepted count
	refused  map[string]bool
}

// New returns a fake that accepts requests authorized with apiKey. It does not listen until
// Start; Handler serves it elsewhere.
func New(apiKey string) *Fake {
	return &Fake{Faults: faults.New[int](time.Second), apiKey: apiKey, counts: make(map[string]int)}
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
	send := faults.Handler(f.Faults, maxBodyBytes, writeFailure, http.HandlerFunc(f.serveSend))
	mux := http.NewServeMux()
	mux.HandleFunc(SendPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeErrors(w, http.StatusMethodNotAllowed, apiError{Message: "method not allowed"})
			return
		}
		send.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErrors(w, http.StatusNotFound, apiError{Message: "not found"})
	})
	return mux
}

// Reset clears every misbehaviour and everything recorded.
func (f *Fake) Reset() {
	f.Faults.Reset()
	f.Tally.Reset()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = nil
	f.counts = make(map[string]int)
	f.refused = nil
}

// RefuseAddress makes the fake refuse for good every request to email (compared without case),
// until Reset: 400 with SendGrid's error for a recipient it will not send to, naming the
// field. Nothing is recorded for such a request.
func (f *Fake) RefuseAddress(email string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refused == nil {
		f.refused = map[string]bool{}
	}
	f.refused[strings.ToLower(email)] = true
}

// refusal returns the error for the first refused recipient of req, if any.
func (f *Fake) refusal(req *mailRequest) (apiError, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range req.Personalizations {
		for j, to := range p.To {
			if f.refused[strings.ToLower(to.Email)] {
				return fieldError(fmt.Sprintf("personalizations.%d.to.%d.email", i, j),
					"Does not contain a valid address."), true
			}
		}
	}
	return apiError{}, false
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

// serveSend handles a POST that its Faults let through.
func (f *Fake) serveSend(w http.ResponseWriter, r *http.Request) {
	raw, readErr := io.ReadAll(r.Body)
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
	if e, refused := f.refusal(&req); refused {
		writeErrors(w, http.StatusBadRequest, e)
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

// writeFailure answers a scripted failure.
func writeFailure(w http.ResponseWriter, _ *http.Request, a faults.Action[int]) {
	msg := strings.ToLower(http.StatusText(a.Fail))
	switch a.Fail {
	case http.StatusUnauthorized:
		msg = "The provided authorization grant is invalid, expired, or revoked"
	case http.StatusForbidden:
		msg = "access forbidden"
	case http.StatusRequestEntityTooLarge:
		msg = "The JSON payload you have included in your request is too large."
	case http.StatusTooManyRequests:
		secs := faults.Seconds(a.RetryAfter)
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
	writeErrors(w, a.Fail, apiError{Message: msg})
}

func (f *Fake) record(req *mailRequest, id string) {
	now := time.Now()
	keep, report := f.Accept(len(req.Personalizations))
	if report != nil {
		for _, p := range req.Personalizations {
			d, ok := p.CustomArgs["delivery_id"]
			if !ok {
				d = req.CustomArgs["delivery_id"]
			}
			report(d, now)
		}
	}
	if !keep {
		return
	}
	f.mu.Lock()
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
