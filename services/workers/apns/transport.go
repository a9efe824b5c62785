//lint:file-ignore SA1019 x/net's http2.Transport is deprecated in favour of net/http's; see httpClient for why apns keeps it.

package apns

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sideshow/apns2"
	"golang.org/x/net/http2"
)

// dialFunc opens a TCP connection.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// httpClient returns the client that carries pushes to APNs: HTTP/2 over TLS with tlsConf,
// connections opened by dial, each call bounded by timeout.
//
// Herald builds it instead of taking the one apns2.NewClient or NewTokenClient builds: their
// dialer ignores the request's context, their timeout is a package-wide 60 s, and there is no
// way to give them RootCAs short of replacing the client (which drops the client certificate
// unless, as here, tlsConf carries it). The transport is the x/net HTTP/2 one apns2 uses, not
// net/http's, which does not coalesce the first dials to a host: here one connection serves all
// sends, is opened once however many sends start together, and a second one opens only at
// APNs's stream limit. APNs treats rapid connecting and disconnecting as an attack.
func httpClient(tlsConf *tls.Config, dial dialFunc, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: boundedAnswers{&http2.Transport{
			TLSClientConfig: tlsConf,
			DialTLSContext:  dialTLS(dial),
			// A ping after this long without a frame finds connections that died quietly.
			ReadIdleTimeout: apns2.ReadIdleTimeout,
		}},
		Timeout: timeout,
		// APNs never redirects; following a redirect would carry the provider token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// maxAnswerBytes bounds how much of an answer is read: APNs's are a few dozen bytes of JSON, and
// apns2 decodes the body with no bound of its own.
const maxAnswerBytes = 64 << 10

// boundedAnswers is the HTTP/2 transport with the answers' bodies made safe for apns2 to decode.
// A refusal's body is cut at maxAnswerBytes: a longer one fails to read, and the push is retried
// like any other answer that cannot be read. An acceptance's body is dropped: APNs sends none,
// and one apns2 could not decode would turn an accepted push into a retry, which pushes it
// twice. It keeps the transport's CloseIdleConnections, which apns2's Client calls.
type boundedAnswers struct{ *http2.Transport }

func (t boundedAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.Transport.RoundTrip(req)
	switch {
	case err != nil:
	case res.StatusCode == http.StatusOK:
		res.Body.Close()
		res.Body = http.NoBody
	default:
		res.Body = http.MaxBytesReader(nil, res.Body, maxAnswerBytes)
	}
	return res, err
}

// dialTLS opens a TLS connection with dial for the HTTP/2 transport, and returns it once the
// server has sent its first bytes. The dial, the handshake and that wait are all bounded by ctx,
// which carries the send's deadline: http.Client puts Timeout on the request's context, and the
// transport dials with the context of the request that needed the connection.
//
// Waiting for the server's first bytes is what makes a refused client certificate a dial error.
// With TLS 1.3 the client's handshake is over before APNs has checked the client certificate,
// so APNs's alert (certificate expired, revoked, not Apple's) only arrives on the first read.
// Were that read the transport's, its reader would close the new connection, and the request
// racing it would fail with x/net's "client conn could not be established", which drops the
// alert: the send would be retried as transient instead of pausing the channel. Reading here,
// before the transport owns the connection, surfaces the alert every time, as the
// *net.OpError tlsRefused recognises. Recording the reader's errors and mending RoundTrip's
// answer afterwards would need the unexported error matched by its text and the failed request
// tied back to its connection.
//
// An HTTP/2 server's first frame is its SETTINGS, which servers send as soon as the handshake is
// done rather than after the client's preface (Go's, nginx's and nghttp2's do); one that waited
// would have every send time out here. The wait costs one round trip per connection, and
// connections to APNs are long-lived. A server that did not
// negotiate h2 owes no such frame, so it is refused before the wait, as x/net's own dialer
// does. The bytes read are replayed to the transport by primedConn.
func dialTLS(dial dialFunc) func(context.Context, string, string, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			_ = conn.Close()
			return nil, fmt.Errorf("%s negotiated protocol %q, not %q", addr, p, http2.NextProtoTLS)
		}
		first, err := readFirst(ctx, conn)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		return &primedConn{Conn: conn, r: io.MultiReader(bytes.NewReader(first), conn)}, nil
	}
}

// readFirst reads what the server sent first on conn, waiting at most until ctx is done.
func readFirst(ctx context.Context, conn *tls.Conn) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if !stop() {
		// The deadline is set, or about to be: conn cannot be handed on.
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// primedConn is a TLS connection whose first bytes readFirst has already read; Read replays
// them before reading on. It keeps the rest of *tls.Conn, ConnectionState among it.
type primedConn struct {
	*tls.Conn
	r io.Reader
}

func (c *primedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close closes the connection, sending close_notify for at most closeNotifyWait before
// closing the TCP connection under it. x/net bounds this itself for a *tls.Conn, which
// primedConn is not; tls.Conn's own bound is 5 s, too long for Sender.Close.
func (c *primedConn) Close() error {
	t := time.AfterFunc(closeNotifyWait, func() { _ = c.NetConn().Close() })
	defer t.Stop()
	return c.Conn.Close()
}

// closeNotifyWait is x/net's wait for close_notify on a *tls.Conn.
const closeNotifyWait = 250 * time.Millisecond
