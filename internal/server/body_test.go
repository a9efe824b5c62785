package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBodyDeadline: a body that stops arriving fails the handler's read once the deadline
// passes, and the deadline ends with the body, so that a call running past it, or a request
// without a body (a live feed), keeps its context.
func TestBodyDeadline(t *testing.T) {
	const timeout = 100 * time.Millisecond
	got := make(chan error, 3) // a slot per subtest, so no handler blocks when one fails
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err == nil {
			// A long call: well past the deadline, its context must still be live.
			select {
			case <-r.Context().Done():
				err = fmt.Errorf("the context ended after the body was read: %w", r.Context().Err())
			case <-time.After(5 * timeout):
			}
		}
		got <- err
		w.Write([]byte("done"))
	}))
	srv.Config = httpServer(srv.Config.Handler, timeout)
	srv.Start()
	defer srv.Close()
	result := func() error {
		select {
		case err := <-got:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("the handler is still waiting 10 s later")
		}
	}
	// raw writes req as it is on a connection of its own, closed when the subtest ends.
	raw := func(t *testing.T, req string) net.Conn {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprint(conn, req)
		return conn
	}

	t.Run("stalled body", func(t *testing.T) {
		// Ten bytes promised, two sent, and then nothing.
		raw(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
		if err := result(); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a body that never arrived: %v", err)
		}
	})
	t.Run("long call", func(t *testing.T) {
		res, err := http.Post(srv.URL, "text/plain", strings.NewReader("the whole body"))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if err := result(); err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(res.Body); string(b) != "done" {
			t.Fatalf("answer %q", b)
		}
	})
	t.Run("no body", func(t *testing.T) {
		// A GET (a live feed) gets no deadline at all: its context outlives the timeout.
		conn := raw(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if err := result(); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("answer %v, %v", res, err)
		}
	})
}
