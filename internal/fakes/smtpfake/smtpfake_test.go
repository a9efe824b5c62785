package smtpfake_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/heraldhq/herald/internal/fakes/smtpfake"
)

const (
	user = "herald"
	pass = "s3cret-pass"
	from = "noreply@herald.test"
	to   = "ada@example.com"
)

// loopbackOnly fails any dial that is not to a loopback address.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("test dialed %s, not loopback", address)
	}
	return nil
}

func start(t *testing.T, cfg smtpfake.Config) (*smtpfake.Fake, string) {
	t.Helper()
	f := smtpfake.New(cfg)
	addr := f.Start()
	t.Cleanup(f.Close)
	return f, addr
}

// dial connects a go-smtp client in the way mode asks; it returns the greeting's error.
func dial(t *testing.T, f *smtpfake.Fake, addr string, mode smtpfake.TLSMode) (*smtp.Client, error) {
	t.Helper()
	conn, err := (&net.Dialer{Timeout: 5 * time.Second, Control: loopbackOnly}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg := &tls.Config{RootCAs: f.CertPool(), ServerName: "127.0.0.1"}
	var c *smtp.Client
	switch mode {
	case smtpfake.StartTLS:
		c, err = smtp.NewClientStartTLS(conn, cfg)
	case smtpfake.ImplicitTLS:
		c = smtp.NewClient(tls.Client(conn, cfg))
		err = c.Hello("client.test")
	default:
		c = smtp.NewClient(conn)
		err = c.Hello("client.test")
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.CommandTimeout, c.SubmissionTimeout = 5*time.Second, 5*time.Second
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func mustDial(t *testing.T, f *smtpfake.Fake, addr string, mode smtpfake.TLSMode) *smtp.Client {
	t.Helper()
	c, err := dial(t, f, addr, mode)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const mimeMessage = "From: Herald <noreply@herald.test>\r\n" +
	"To: ada@example.com\r\n" +
	"Subject: =?UTF-8?q?Your_code_=E2=80=94_123?=\r\n" +
	"Message-ID: <d1@herald.test>\r\n" +
	"X-Herald-Delivery-Id: d1\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=b1\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"code =E2=80=94 123\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+Y29kZSA8Yj4x\r\nMjM8L2I+PC9wPg==\r\n" +
	"--b1--\r\n"

// send runs one transaction on c and returns the first error.
func send(c *smtp.Client, rcpt, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestStartTLSWithAuth(t *testing.T) {
	f, addr := start(t, smtpfake.Config{Username: user, Password: pass})
	c := mustDial(t, f, addr, smtpfake.StartTLS)
	if !c.SupportsAuth("PLAIN") || c.SupportsAuth("LOGIN") {
		t.Error("mechanisms: want PLAIN only")
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("recorded %d", len(msgs))
	}
	m := msgs[0]
	if m.From != from || len(m.To) != 1 || m.To[0] != to || !m.TLS || m.AuthUser != user {
		t.Errorf("envelope %+v", m)
	}
	if m.Subject != "Your code — 123" || m.MessageID != "<d1@herald.test>" || m.Header.Get("X-Herald-Delivery-Id") != "d1" {
		t.Errorf("headers: subject %q id %q", m.Subject, m.MessageID)
	}
	if m.Text != "code — 123" || m.HTML != "<p>code <b>123</b></p>" {
		t.Errorf("parts: text %q html %q", m.Text, m.HTML)
	}
	if !strings.HasPrefix(string(m.Raw), "From: Herald") {
		t.Errorf("raw %q", m.Raw)
	}
	if f.Count("X-Herald-Delivery-Id", "d1") != 1 || f.Count("X-Herald-Delivery-Id", "d2") != 0 {
		t.Error("Count")
	}
	if f.Connections() != 1 {
		t.Errorf("%d connections", f.Connections())
	}
}

func TestImplicitTLS(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLS: smtpfake.ImplicitTLS, Username: user, Password: pass})
	c := mustDial(t, f, addr, smtpfake.ImplicitTLS)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on an implicit TLS port")
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	if m := f.Messages()[0]; !m.TLS {
		t.Error("not recorded as TLS")
	}
}

func TestNoTLS(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLS: smtpfake.NoTLS, Username: user, Password: pass})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered")
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	if m := f.Messages()[0]; m.TLS || m.AuthUser != user {
		t.Errorf("recorded %+v", m)
	}
}

func TestTLSRequired(t *testing.T) {
	f, addr := start(t, smtpfake.Config{Username: user, Password: pass})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if c.SupportsAuth("PLAIN") {
		t.Error("AUTH offered before STARTTLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err == nil {
		t.Error("AUTH accepted before STARTTLS")
	}
	if err := c.Mail(from, nil); code(err) != 530 {
		t.Errorf("MAIL before STARTTLS: %v", err)
	}
	if len(f.Messages()) != 0 {
		t.Error("recorded")
	}
}

func TestTLSOptional(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	if len(f.Messages()) != 1 {
		t.Error("not recorded")
	}
}

func TestCertificateIsSelfSigned(t *testing.T) {
	f, addr := start(t, smtpfake.Config{})
	conn, err := (&net.Dialer{Control: loopbackOnly}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: "127.0.0.1"})
	if err == nil {
		err = c.Noop() // the handshake happens with the first command after STARTTLS
	}
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Errorf("STARTTLS without the fake's pool: %v", err)
	}
	if f.Certificate() == nil || !f.Certificate().IsCA {
		t.Error("no certificate")
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := f.Certificate().VerifyHostname(host); err != nil {
			t.Error(err)
		}
	}
}

func TestAuthentication(t *testing.T) {
	f, addr := start(t, smtpfake.Config{Username: user, Password: pass, Mechanisms: []string{"plain", "login"}})
	tests := []struct {
		name string
		auth sasl.Client
		code int
	}{
		{"plain", sasl.NewPlainClient("", user, pass), 0},
		{"plain with identity", sasl.NewPlainClient(user, user, pass), 0},
		{"login", sasl.NewLoginClient(user, pass), 0},
		{"wrong password", sasl.NewPlainClient("", user, "wrong"), 535},
		{"wrong user", sasl.NewPlainClient("", "root", pass), 535},
		{"other identity", sasl.NewPlainClient("root", user, pass), 535},
		{"login wrong password", sasl.NewLoginClient(user, "wrong"), 535},
		{"unknown mechanism", sasl.NewAnonymousClient("x"), 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustDial(t, f, addr, smtpfake.StartTLS)
			err := c.Auth(tt.auth)
			if code(err) != tt.code {
				t.Fatalf("AUTH: %v, want code %d", err, tt.code)
			}
			err = send(c, to, mimeMessage)
			if tt.code == 0 && err != nil {
				t.Errorf("send after AUTH: %v", err)
			}
			if tt.code != 0 && code(err) != 530 {
				t.Errorf("send without AUTH: %v, want 530", err)
			}
		})
	}
}

func TestNoAuthConfigured(t *testing.T) {
	f, addr := start(t, smtpfake.Config{})
	c := mustDial(t, f, addr, smtpfake.StartTLS)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered")
	}
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	if m := f.Messages()[0]; m.AuthUser != "" {
		t.Errorf("auth user %q", m.AuthUser)
	}
}

func TestFail(t *testing.T) {
	tests := []struct {
		phase    smtpfake.Phase
		code     int
		enhanced smtp.EnhancedCode
	}{
		{smtpfake.Auth, 535, smtp.EnhancedCode{5, 7, 8}},
		{smtpfake.Auth, 454, smtp.EnhancedCode{4, 7, 0}},
		{smtpfake.Mail, 451, smtp.EnhancedCode{4, 3, 0}},
		{smtpfake.Mail, 553, smtp.EnhancedCode{5, 1, 3}},
		{smtpfake.Rcpt, 550, smtp.EnhancedCode{5, 1, 1}},
		{smtpfake.Rcpt, 551, smtp.EnhancedCode{5, 1, 6}},
		{smtpfake.Rcpt, 450, smtp.EnhancedCode{4, 2, 1}},
		{smtpfake.Data, 554, smtp.EnhancedCode{5, 7, 1}},
		{smtpfake.Data, 552, smtp.EnhancedCode{5, 3, 4}},
		{smtpfake.Data, 451, smtp.EnhancedCode{4, 3, 0}},
		{smtpfake.Rcpt, 599, smtp.EnhancedCode{5, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %d", tt.phase, tt.code), func(t *testing.T) {
			f, addr := start(t, smtpfake.Config{Username: user, Password: pass})
			f.Fail(tt.phase, tt.code, 1)
			c := mustDial(t, f, addr, smtpfake.StartTLS)
			err := c.Auth(sasl.NewPlainClient("", user, pass))
			if err == nil {
				err = send(c, to, mimeMessage)
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tt.code || se.EnhancedCode != tt.enhanced {
				t.Fatalf("got %v, want %d %v", err, tt.code, tt.enhanced)
			}
			if len(f.Messages()) != 0 {
				t.Error("recorded a refused message")
			}
			// The failure was for one command only; the session goes on.
			if tt.phase == smtpfake.Auth {
				if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
					t.Fatalf("second AUTH: %v", err)
				}
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
			if err := send(c, to, mimeMessage); err != nil {
				t.Fatalf("second try: %v", err)
			}
		})
	}
}

func TestFailAlways(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	f.Fail(smtpfake.Mail, 451, smtpfake.Always)
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	for range 3 {
		if err := c.Mail(from, nil); code(err) != 451 {
			t.Fatalf("MAIL: %v", err)
		}
	}
	f.Fail(smtpfake.Mail, 0, 0)
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
}

func TestRejectedMailboxIsQuoted(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	f.RejectMailbox("Bob@Example.com", 550)
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	err := send(c, "bob@example.com", mimeMessage)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "<bob@example.com>") {
		t.Fatalf("got %v", err)
	}
	c.Reset()
	if err := send(c, to, mimeMessage); err != nil {
		t.Errorf("other mailbox: %v", err)
	}
	f.RejectMailbox("bob@example.com", 0)
	if err := send(c, "bob@example.com", mimeMessage); err != nil {
		t.Errorf("after clearing: %v", err)
	}
}

func TestConnectFailure(t *testing.T) {
	for _, mode := range []smtpfake.TLSMode{smtpfake.StartTLS, smtpfake.ImplicitTLS} {
		for _, c := range []int{421, 554} {
			t.Run(fmt.Sprintf("mode %d code %d", mode, c), func(t *testing.T) {
				f, addr := start(t, smtpfake.Config{TLS: mode})
				f.Fail(smtpfake.Connect, c, 1)
				if _, err := dial(t, f, addr, mode); code(err) != c {
					t.Fatalf("greeting: %v, want %d", err, c)
				}
				mustDial(t, f, addr, mode)
				if f.Connections() != 2 {
					t.Errorf("%d connections", f.Connections())
				}
			})
		}
	}
}

func Test421ClosesTheConnection(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	f.Fail(smtpfake.Rcpt, 421, 1)
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if err := send(c, to, mimeMessage); code(err) != 421 {
		t.Fatalf("got %v", err)
	}
	if err := c.Noop(); err == nil {
		t.Error("the connection survived a 421")
	}
}

func TestDrop(t *testing.T) {
	for _, phase := range []smtpfake.Phase{smtpfake.Connect, smtpfake.Auth, smtpfake.Mail, smtpfake.Rcpt, smtpfake.Data} {
		t.Run(phase.String(), func(t *testing.T) {
			f, addr := start(t, smtpfake.Config{Username: user, Password: pass})
			f.Drop(phase, 1)
			c, err := dial(t, f, addr, smtpfake.StartTLS)
			if err == nil {
				err = c.Auth(sasl.NewPlainClient("", user, pass))
				if err == nil {
					err = send(c, to, mimeMessage)
				}
			}
			if err == nil || code(err) != 0 {
				t.Fatalf("got %v, want a broken connection", err)
			}
			if len(f.Messages()) != 0 {
				t.Error("recorded a dropped message")
			}
			c = mustDial(t, f, addr, smtpfake.StartTLS)
			if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
				t.Fatal(err)
			}
			if err := send(c, to, mimeMessage); err != nil {
				t.Fatalf("after the drop: %v", err)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	for _, phase := range []smtpfake.Phase{smtpfake.Connect, smtpfake.Mail, smtpfake.Data} {
		t.Run(phase.String(), func(t *testing.T) {
			f, addr := start(t, smtpfake.Config{TLSOptional: true})
			f.SetDelay(phase, time.Minute)
			conn, err := (&net.Dialer{Control: loopbackOnly}).Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			begin := time.Now()
			c := smtp.NewClient(conn)
			c.CommandTimeout, c.SubmissionTimeout = 200*time.Millisecond, 200*time.Millisecond
			err = c.Hello("client.test")
			if err == nil {
				err = send(c, to, mimeMessage)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("got %v, want a timeout", err)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			// Close must not wait for the stalled session.
		})
	}
}

func TestMessageTooLarge(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true, MaxMessageBytes: 1024})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if size, ok := c.MaxMessageSize(); !ok || size != 1024 {
		t.Errorf("SIZE %d %v", size, ok)
	}
	err := send(c, to, mimeMessage+strings.Repeat(strings.Repeat("x", 98)+"\r\n", 20))
	if code(err) != 552 {
		t.Errorf("got %v, want 552", err)
	}
}

func TestParse(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	nested := "Subject: plain ascii\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n" +
		"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n" +
		"--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--inner\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--inner--\r\n" +
		"--outer\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--outer--\r\n"
	single := "Subject: one part\r\n\r\njust text\r\n"
	garbage := "not a message at all"
	for _, msg := range []string{nested, single, garbage} {
		if err := send(c, to, msg); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.Messages()
	if msgs[0].Subject != "plain ascii" || msgs[0].Text != "hello" || msgs[0].HTML != "<p>hello</p>" {
		t.Errorf("nested: %q %q %q", msgs[0].Subject, msgs[0].Text, msgs[0].HTML)
	}
	if msgs[1].Text != "just text\r\n" || msgs[1].HTML != "" {
		t.Errorf("single: %q %q", msgs[1].Text, msgs[1].HTML)
	}
	if msgs[2].Header != nil || string(msgs[2].Raw) != garbage+"\r\n" {
		t.Errorf("garbage: %+v", msgs[2])
	}
}

func TestReset(t *testing.T) {
	f, addr := start(t, smtpfake.Config{TLSOptional: true})
	c := mustDial(t, f, addr, smtpfake.NoTLS)
	if err := send(c, to, mimeMessage); err != nil {
		t.Fatal(err)
	}
	f.Fail(smtpfake.Mail, 451, smtpfake.Always)
	f.RejectMailbox(to, 550)
	f.Reset()
	if len(f.Messages()) != 0 || f.Connections() != 0 {
		t.Fatal("Reset kept records")
	}
	if err := send(c, to, mimeMessage); err != nil {
		t.Errorf("after Reset: %v", err)
	}
}

func TestConcurrentSessions(t *testing.T) {
	f, addr := start(t, smtpfake.Config{Username: user, Password: pass})
	f.Fail(smtpfake.Rcpt, 451, 5)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := dial(t, f, addr, smtpfake.StartTLS)
			if err != nil {
				t.Error(err)
				return
			}
			if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
				t.Error(err)
				return
			}
			msg := strings.Replace(mimeMessage, "X-Herald-Delivery-Id: d1", fmt.Sprintf("X-Herald-Delivery-Id: d%d", i), 1)
			for {
				err := send(c, to, msg)
				if err == nil {
					return
				}
				if code(err) != 451 {
					t.Error(err)
					return
				}
				c.Reset()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if c := f.Count("X-Herald-Delivery-Id", fmt.Sprintf("d%d", i)); c != 1 {
			t.Errorf("d%d recorded %d times", i, c)
		}
	}
	if f.Connections() != n {
		t.Errorf("%d connections", f.Connections())
	}
}
