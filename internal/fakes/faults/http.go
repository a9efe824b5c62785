package faults

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
)

// Handler returns next behind f, for an HTTP fake. It reads the whole request body
// first (at most limit bytes), as a provider does before it answers, so that a dropped
// connection or a failure comes after the client has sent everything. Then it takes the
// request's Action: it waits the delay (or until the client gives up, when it answers nothing),
// drops the connection, or has fail write the scripted failure; otherwise it calls next. Both
// fail and next read the same body from r.Body again, ending in the same error, if any (an
// *http.MaxBytesError past limit).
func Handler[E comparable](f *Faults[E], limit int64, fail func(http.ResponseWriter, *http.Request, Action[E]), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		r.Body = replay(body, err)
		a := f.Take()
		var none E
		switch {
		case !Sleep(r.Context().Done(), a.Delay):
		case a.Drop:
			DropConnection(w, r)
		case a.Fail != none:
			fail(w, r, a)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// replay returns a body that reads b, then fails with err (when not nil).
func replay(b []byte, err error) io.ReadCloser {
	if err == nil {
		return io.NopCloser(bytes.NewReader(b))
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type connKey struct{}

// ConnContext is an http.Server's ConnContext for fakes served over HTTP/2, whose requests
// cannot hijack their connection: with it, a drop closes the TCP connection, and every stream
// on it fails, as they would with the provider.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// DropConnection closes the client's connection without an answer: hijacked over HTTP/1, from
// ConnContext's record over HTTP/2. Without either, it resets the stream. A handler returns
// right after it.
func DropConnection(w http.ResponseWriter, r *http.Request) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
		return
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		_ = c.Close()
	}
	panic(http.ErrAbortHandler)
}
