package fcm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/oauth2"
)

// maxAnswerBytes bounds how much of an FCM answer is read; FCM's are a few hundred bytes.
const maxAnswerBytes = 1 << 20

// errAnswered cancels a call's context once its one request has been answered (or has failed),
// which ends the SDK's retry loop at its first wait.
var errAnswered = errors.New("fcm: answered")

// errSecondRequest is what the SDK gets if it tries a second request in one call anyway.
var errSecondRequest = errors.New("fcm: one request per send")

type callKey struct{}

// call is one Send's exchange with FCM, as the transport saw it.
type call struct {
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	requests int
	answer   *answer
	err      error
}

// startCall returns a call and the context to give the SDK for it.
func startCall(ctx context.Context) (*call, context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	c := &call{cancel: cancel}
	return c, context.WithValue(ctx, callKey{}, c)
}

// end releases the call's context.
func (c *call) end() { c.cancel(nil) }

// begin reports whether a request may go out: only the call's first.
func (c *call) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	return c.requests == 1
}

func (c *call) finish(a *answer, err error) {
	c.mu.Lock()
	c.answer, c.err = a, err
	c.mu.Unlock()
	c.cancel(errAnswered)
}

func (c *call) exchange() exchange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return exchange{answer: c.answer, err: c.err}
}

// oneShot lets each call make one request, and records its answer or error for Send to
// classify. The SDK retries network errors and 503s on its own (see the package documentation);
// once the answer is recorded and buffered, oneShot cancels the call's context, so the SDK's
// wait before a retry ends at once and it returns.
type oneShot struct {
	next http.RoundTripper
}

func (t *oneShot) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callKey{}).(*call)
	if c == nil {
		return t.next.RoundTrip(req)
	}
	if !c.begin() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errSecondRequest
	}
	res, err := t.next.RoundTrip(req)
	if err != nil {
		c.finish(nil, err)
		return nil, err
	}
	// Read the whole answer before the context is canceled, which would cut the body short.
	body, readErr := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	c.finish(parseAnswer(res.StatusCode, res.Header, body, readErr), nil)
	return res, nil
}

// authTransport adds an access token to each request.
type authTransport struct {
	tokens *tokenSource
	next   http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.tokens.token(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context()) // a RoundTripper must not change the request it is given
	tok.SetAuthHeader(r)
	return t.next.RoundTrip(r)
}

// tokenError is a failure to get an access token, as opposed to a failure to reach FCM.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return "access token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// tokenSource hands out access tokens: the cached one while it is valid, otherwise one fetched
// by a ReuseTokenSource, which lets one fetch run at a time. A caller whose context ends stops
// waiting; the fetch goes on for the next caller.
type tokenSource struct {
	base   oauth2.TokenSource
	cached atomic.Pointer[oauth2.Token]

	mu    sync.Mutex // held to replace reuse, and to cache a token it fetched
	reuse atomic.Pointer[oauth2.TokenSource]
}

func newTokenSource(base oauth2.TokenSource) *tokenSource {
	s := &tokenSource{base: base}
	s.invalidate()
	return s
}

// invalidate forgets the cached token, so that the next caller fetches another.
func (s *tokenSource) invalidate() {
	ts := oauth2.ReuseTokenSource(nil, s.base)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reuse.Store(&ts)
	s.cached.Store(nil)
}

func (s *tokenSource) token(ctx context.Context) (*oauth2.Token, error) {
	if t := s.cached.Load(); t.Valid() {
		return t, nil
	}
	type fetched struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan fetched, 1)
	reuse := s.reuse.Load()
	go func() {
		tok, err := (*reuse).Token()
		ch <- fetched{tok, err}
	}()
	select {
	case f := <-ch:
		if f.err != nil {
			return nil, &tokenError{f.err}
		}
		if !f.tok.Valid() {
			return nil, &tokenError{errors.New("the token source returned an empty or expired token")}
		}
		s.mu.Lock()
		if s.reuse.Load() == reuse { // not a token that was invalidated meanwhile
			s.cached.Store(f.tok)
		}
		s.mu.Unlock()
		return f.tok, nil
	case <-ctx.Done():
		return nil, &tokenError{ctx.Err()}
	}
}
