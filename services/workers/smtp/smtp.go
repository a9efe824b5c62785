// Package smtp sends Herald's email deliveries to an SMTP submission server (a relay of the
// self-hoster's, or a provider's SMTP endpoint), using github.com/wneessen/go-mail, and maps the
// server's replies onto the workers' error classes.
//
// go-mail builds the MIME message and sets up each connection (greeting, EHLO, STARTTLS, AUTH);
// the Sender then drives the mail transaction (MAIL, RCPT, DATA) itself on go-mail's SMTP
// client. go-mail's own Send hides the server's reply behind a *mail.SendError that cannot be
// unwrapped, whose text names the recipient, and that calls any reply not starting with "4"
// (a network error included) permanent; driving the transaction keeps the reply code and the
// stage it came at, which decide the outcome.
//
// Connections are kept in a small pool and reused for later messages instead of dialing (TCP,
// TLS, AUTH: four or more round trips) for each one. A connection serves one transaction at a
// time; idle ones are dropped after a while, and one found dead when reused is replaced before
// anything was sent on it.
package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gomail "github.com/wneessen/go-mail"
	gosmtp "github.com/wneessen/go-mail/smtp"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/services/workers"
)

// Defaults for Config.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultMaxIdleConns = 16
)

// The pool's limits: servers drop idle sessions (RFC 5321 asks them to wait 5 minutes; many
// wait less), and many cap the messages per session.
const (
	idleTimeout        = 30 * time.Second
	maxMessagesPerConn = 100
	quitTimeout        = 2 * time.Second
)

// DeliveryIDHeader is the header that carries the delivery id in every message.
const DeliveryIDHeader = "X-Herald-Delivery-Id"

// TLSMode is how the Sender protects the connection.
type TLSMode int

// The TLS modes.
const (
	// StartTLS connects in plain text and requires STARTTLS before AUTH and mail (port 587).
	StartTLS TLSMode = iota
	// ImplicitTLS speaks TLS from the first byte (port 465).
	ImplicitTLS
	// NoTLS never encrypts: for a relay on loopback in development. Credentials are refused
	// unless the host is loopback.
	NoTLS
)

func (m TLSMode) String() string {
	switch m {
	case StartTLS:
		return "starttls"
	case ImplicitTLS:
		return "tls"
	case NoTLS:
		return "none"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseTLSMode parses "starttls", "tls" (implicit TLS) or "none".
func ParseTLSMode(s string) (TLSMode, error) {
	for _, m := range []TLSMode{StartTLS, ImplicitTLS, NoTLS} {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("smtp: TLS mode %q is not starttls, tls or none", s)
}

// Config configures a Sender. Host and From are required.
type Config struct {
	// Host is the server's name or IP address; Port its port, 587 (StartTLS), 465 (ImplicitTLS)
	// or 25 (NoTLS) when zero.
	Host string
	Port int
	// Username and Password authenticate with AUTH PLAIN, or LOGIN when the server offers only
	// that; no AUTH when Username is empty. The password never appears in errors.
	Username string
	Password string
	// TLS is how the connection is protected; StartTLS by default.
	TLS TLSMode
	// RootCAs verifies the server's certificate; the system's roots when nil.
	RootCAs *x509.CertPool
	// From is the sender's bare address (also the envelope sender); FromName its optional
	// display name.
	From     string
	FromName string
	// HELO is the name the Sender gives in EHLO; the machine's host name when empty.
	HELO string
	// Timeout bounds one Send, connecting included; DefaultTimeout when zero.
	Timeout time.Duration
	// MaxIdleConns is how many idle connections are kept for reuse; DefaultMaxIdleConns when
	// zero, none (a connection per message) when negative.
	MaxIdleConns int
}

// Sender sends email deliveries over SMTP. It is safe for concurrent use; Close releases its
// idle connections.
type Sender struct {
	host       string
	port       int
	addr       string
	user, pass string
	mode       TLSMode
	tlsConfig  *tls.Config
	from       string
	fromName   string
	idDomain   string // the right-hand side of Message-IDs
	helo       string
	timeout    time.Duration

	idle   chan *conn
	mu     sync.Mutex
	closed bool
}

var _ workers.Sender = (*Sender)(nil)

// dialControl, when set (by tests), vets every address the Sender connects to.
var dialControl func(network, address string, c syscall.RawConn) error

// New returns a Sender for cfg, or an error naming the first invalid setting (never the
// password). It does not connect.
func New(cfg Config) (*Sender, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(cfg.Host, "["), "]")
	if host == "" || (net.ParseIP(host) == nil && !validHostname(host)) {
		return nil, fmt.Errorf("smtp: host %q is not a host name or IP address", cfg.Host)
	}
	if cfg.TLS < StartTLS || cfg.TLS > NoTLS {
		return nil, fmt.Errorf("smtp: unknown TLS mode %d", cfg.TLS)
	}
	port := cfg.Port
	if port == 0 {
		port = map[TLSMode]int{StartTLS: 587, ImplicitTLS: 465, NoTLS: 25}[cfg.TLS]
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("smtp: port %d out of range", cfg.Port)
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return nil, errors.New("smtp: a username needs a password, and a password a username")
	}
	if strings.ContainsAny(cfg.Username, "\x00\r\n") || strings.ContainsAny(cfg.Password, "\x00\r\n") {
		return nil, errors.New("smtp: username or password contains a NUL or a line break")
	}
	if cfg.TLS == NoTLS && cfg.Username != "" && !loopback(host) {
		return nil, fmt.Errorf("smtp: refusing to send credentials without TLS to %s, which is not loopback", host)
	}
	a, err := mail.ParseAddress(cfg.From)
	if err != nil || a.Name != "" || a.Address != cfg.From {
		return nil, fmt.Errorf("smtp: from address %q is not a bare email address", cfg.From)
	}
	if strings.ContainsAny(cfg.FromName, "\r\n") {
		return nil, errors.New("smtp: from name contains a line break")
	}
	if h := cfg.HELO; h != "" && !validHostname(h) &&
		!(len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' && net.ParseIP(h[1:len(h)-1]) != nil) {
		return nil, fmt.Errorf("smtp: HELO name %q is not a host name or an address literal", cfg.HELO)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("smtp: negative timeout %v", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	idle := cfg.MaxIdleConns
	if idle == 0 {
		idle = DefaultMaxIdleConns
	}
	return &Sender{
		host:      host,
		port:      port,
		addr:      net.JoinHostPort(host, strconv.Itoa(port)),
		user:      cfg.Username,
		pass:      cfg.Password,
		mode:      cfg.TLS,
		tlsConfig: &tls.Config{ServerName: host, RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		from:      cfg.From,
		fromName:  cfg.FromName,
		idDomain:  cfg.From[strings.LastIndexByte(cfg.From, '@')+1:],
		helo:      cfg.HELO,
		timeout:   timeout,
		idle:      make(chan *conn, max(idle, 0)),
	}, nil
}

// Provider returns "smtp".
func (s *Sender) Provider() string { return "smtp" }

// Close says QUIT on the idle connections and closes them. Sends still running finish; their
// connections are closed instead of kept.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for {
		select {
		case c := <-s.idle:
			c.quit()
		default:
			return nil
		}
	}
}

// Send sends m as one email to m.To: multipart/alternative with the text and the HTML part
// (or the one that is set), with a Message-ID of <delivery id@from domain> that it returns as
// the provider message id and an X-Herald-Delivery-Id header. Every attempt for a delivery
// carries the same Message-ID, so a receiver that saw a message whose acceptance was lost in
// transit can tell the retry is a duplicate.
//
// The outcome of the server's answer:
//
//	answer                                               outcome
//	250 to the end of DATA                               sent
//	5xx to RCPT TO or to DATA (550, 551, 552, 553, 554)  *workers.PermanentError "rejected"
//	530, 534, 535, 538 (authentication) at any stage     *workers.ConfigError: the channel pauses,
//	                                                       the attempt is not counted
//	5xx before RCPT TO (greeting, EHLO, STARTTLS, AUTH,  *workers.ConfigError: every message would
//	  MAIL FROM: the server refuses Herald's sender)      get the same answer
//	no STARTTLS offered, certificate not trusted, no     *workers.ConfigError
//	  AUTH PLAIN or LOGIN offered
//	4xx at any stage (421, 450, 451, 452, 454)           *workers.TransientError
//	network error, timeout, canceled context             *workers.TransientError (after the end of
//	                                                       DATA the message may have been accepted;
//	                                                       a retry repeats the Message-ID)
//	a bad To, no subject, no body, another channel       *workers.PermanentError, nothing sent
//
// Errors carry the stage and the server's reply (a *ReplyError) with addresses redacted, and
// never the password.
func (s *Sender) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	if m.Channel != "" && m.Channel != delivery.Email {
		return workers.Result{}, workers.Permanent("wrong_channel",
			fmt.Errorf("smtp: delivery %s is on channel %q, not email", m.DeliveryID, m.Channel))
	}
	if m.Content.Subject == "" {
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("smtp: delivery %s has no subject", m.DeliveryID))
	}
	if m.Content.Text == "" && m.Content.HTML == "" {
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("smtp: delivery %s has neither a text nor an HTML body", m.DeliveryID))
	}
	if a, err := mail.ParseAddress(m.To); err != nil || a.Name != "" || a.Address != m.To {
		return workers.Result{}, workers.Permanent("rejected",
			fmt.Errorf("smtp: delivery %s: the address is not a bare email address", m.DeliveryID))
	}
	msg, id, err := s.compose(m)
	if err != nil {
		return workers.Result{}, workers.Permanent("rejected", fmt.Errorf("smtp: compose delivery %s: %w", m.DeliveryID, err))
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		c, reused, err := s.conn(ctx)
		if err != nil {
			return workers.Result{}, s.classify(ctx, m, stageConnect, err)
		}
		st, err := c.transact(ctx, s.timeout, msg)
		if err == nil {
			s.release(c)
			return workers.Result{ProviderMessageID: id}, nil
		}
		if c.reusable(ctx, err) {
			s.release(c)
		} else {
			c.close()
		}
		// A kept connection that the server closed meanwhile fails at MAIL FROM, before anything
		// of the message was sent: try again, at worst on a fresh connection.
		if reused && st == stageMail && (connectionLost(err) || replyCode(err) == 421) &&
			ctx.Err() == nil && attempt < cap(s.idle) {
			continue
		}
		return workers.Result{}, s.classify(ctx, m, st, err)
	}
}

// compose builds the message for m and returns it with its Message-ID header.
func (s *Sender) compose(m *workers.Message) (*gomail.Msg, string, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	var err error
	if s.fromName != "" {
		err = msg.FromFormat(s.fromName, s.from)
	} else {
		err = msg.From(s.from)
	}
	if err != nil {
		return nil, "", err
	}
	if err := msg.To(m.To); err != nil {
		return nil, "", errors.New("invalid address")
	}
	msg.Subject(m.Content.Subject)
	id := m.DeliveryID.String() + "@" + s.idDomain
	msg.SetMessageIDWithValue(id)
	msg.SetDate()
	msg.SetGenHeader(DeliveryIDHeader, m.DeliveryID.String())
	for k, v := range m.ListUnsubscribeHeaders() {
		msg.SetGenHeader(gomail.Header(k), v)
	}
	switch {
	case m.Content.Text != "" && m.Content.HTML != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Content.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.Content.HTML)
	case m.Content.Text != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Content.Text)
	default:
		msg.SetBodyString(gomail.TypeTextHTML, m.Content.HTML)
	}
	return msg, "<" + id + ">", nil
}

// stage is where in the session an answer came.
type stage int

const (
	stageConnect stage = iota // greeting, EHLO, STARTTLS, AUTH
	stageMail
	stageRcpt
	stageData
	stageEnd // the answer to the end of the message
)

func (st stage) String() string {
	return [...]string{"connect", "MAIL FROM", "RCPT TO", "DATA", "end of data"}[st]
}

// ReplyError is an SMTP reply that refused a message, or a connection.
type ReplyError struct {
	// Stage is where it came: "connect" (greeting to AUTH), "MAIL FROM", "RCPT TO", "DATA" or
	// "end of data".
	Stage string
	// Code is the reply code; Enhanced the enhanced status code (RFC 3463), if the server gave
	// one, e.g. "5.1.1".
	Code     int
	Enhanced string
	// Message is the server's text, with anything that looks like an email address redacted.
	Message string
}

func (e *ReplyError) Error() string {
	s := fmt.Sprintf("%s: %d", e.Stage, e.Code)
	if e.Enhanced != "" {
		s += " " + e.Enhanced
	}
	if e.Message != "" {
		s += " " + e.Message
	}
	return s
}

var (
	enhancedCode = regexp.MustCompile(`^([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:\s+|$)`)
	emailLike    = regexp.MustCompile(`[^\s"'<>(),;:\[\]]+@[^\s"'<>(),;:\[\]]+`)
)

// maxMessageLen is the most of a server's text an error keeps.
const maxMessageLen = 200

// replyError turns a reply into a *ReplyError, redacting addresses from its text.
func replyError(st stage, te *textproto.Error, to string) *ReplyError {
	msg := strings.Join(strings.Fields(te.Msg), " ") // multi-line replies on one line
	re := &ReplyError{Stage: st.String(), Code: te.Code}
	if sm := enhancedCode.FindStringSubmatch(msg); sm != nil {
		re.Enhanced, msg = sm[1], msg[len(sm[0]):]
	}
	if to != "" {
		msg = strings.ReplaceAll(msg, to, "[address]")
	}
	msg = emailLike.ReplaceAllString(msg, "[address]")
	re.Message = pgtext.Line(msg, maxMessageLen)
	return re
}

// classify maps a failure at stage to an error class.
func (s *Sender) classify(ctx context.Context, m *workers.Message, st stage, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		wrapped := fmt.Errorf("smtp: send delivery %s: %w", m.DeliveryID, replyError(st, te, m.To))
		switch code := te.Code; {
		case code >= 400 && code < 500:
			// A reply, so the server did not take the message: another may be asked.
			return workers.Refused(0, wrapped)
		case code == 530 || code == 534 || code == 535 || code == 538:
			return workers.Misconfigured(wrapped)
		case code >= 500 && st <= stageMail:
			return workers.Misconfigured(wrapped)
		case code >= 500:
			return workers.Permanent("rejected", wrapped)
		default:
			// A reply of the wrong kind (a 2xx where a 3xx was due): a confused server.
			return workers.Transient(0, wrapped)
		}
	}
	if cause := context.Cause(ctx); cause != nil {
		return workers.Transient(0, fmt.Errorf("smtp: send delivery %s at %s: %w: %w", m.DeliveryID, st, cause, err))
	}
	wrapped := fmt.Errorf("smtp: send delivery %s at %s: %w", m.DeliveryID, st, err)
	if st == stageConnect && !connectionLost(err) {
		// Not a network failure and not a reply: go-mail or TLS refused the server (no STARTTLS,
		// an untrusted certificate, no usable AUTH mechanism, an unencrypted connection).
		return workers.Misconfigured(wrapped)
	}
	return workers.Transient(0, wrapped)
}

// replyCode returns the code of the SMTP reply in err, or 0.
func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// connectionLost reports whether err is a failure of the network rather than an answer.
func connectionLost(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// conn is one SMTP session, used by one Send at a time.
type conn struct {
	sc        *gosmtp.Client
	raw       net.Conn // below any TLS, to cut the session when a context ends
	used      int
	dead      bool // raw was closed
	idleSince time.Time
}

// conn returns an idle connection, or a new one; reused says which.
func (s *Sender) conn(ctx context.Context) (c *conn, reused bool, err error) {
	for {
		select {
		case c := <-s.idle:
			if time.Since(c.idleSince) > idleTimeout {
				c.quit()
				continue
			}
			return c, true, nil
		default:
		}
		c, err := s.dial(ctx)
		return c, false, err
	}
}

// release keeps c for another Send, or says QUIT if it is used up or the pool is full.
func (s *Sender) release(c *conn) {
	if c.dead {
		return
	}
	if c.used >= maxMessagesPerConn {
		c.quit()
		return
	}
	c.idleSince = time.Now()
	s.mu.Lock()
	if !s.closed {
		select {
		case s.idle <- c:
			s.mu.Unlock()
			return
		default:
		}
	}
	s.mu.Unlock()
	c.quit()
}

// dial connects, greets, secures and authenticates a new session through go-mail.
func (s *Sender) dial(ctx context.Context) (*conn, error) {
	var box rawConn
	stop := context.AfterFunc(ctx, box.kill)
	defer stop()
	dialer := &net.Dialer{Control: dialControl}
	policy := gomail.NoTLS // implicit TLS is the dialer's; NoTLS has none
	if s.mode == StartTLS {
		policy = gomail.TLSMandatory
	}
	opts := []gomail.Option{
		gomail.WithPort(s.port),
		gomail.WithTimeout(s.timeout),
		gomail.WithTLSConfig(s.tlsConfig),
		gomail.WithTLSPolicy(policy),
		// go-mail formats the address as host:port, which breaks IPv6 literals, and with its
		// own dialer it would not let the Sender cut a session when the context ends.
		gomail.WithDialContextFunc(func(ctx context.Context, network, _ string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, s.addr)
			if err != nil {
				return nil, err
			}
			box.set(raw)
			if s.mode != ImplicitTLS {
				return raw, nil
			}
			// go-mail's WithSSL does nothing with a custom dialer: the TLS is done here.
			tc := tls.Client(raw, s.tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		}),
	}
	if s.helo != "" {
		opts = append(opts, gomail.WithHELO(s.helo))
	}
	if s.user != "" {
		// A fresh Auth per connection: LOGIN keeps state between its steps.
		opts = append(opts, gomail.WithSMTPAuthCustom(&plainOrLogin{user: s.user, pass: s.pass, host: s.host}))
	}
	// A go-mail Client holds configuration only; one per connection keeps the Sender clear of
	// its locking, and it is cheap next to the handshakes.
	client, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return nil, err
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		// go-mail leaves the connection open when EHLO, STARTTLS or AUTH fails.
		box.kill()
		return nil, err
	}
	return &conn{sc: sc, raw: box.get()}, nil
}

// transact sends msg on c: MAIL FROM, RCPT TO, DATA. It returns the stage it stopped at.
func (c *conn) transact(ctx context.Context, timeout time.Duration, msg *gomail.Msg) (stage, error) {
	stop := context.AfterFunc(ctx, func() { c.raw.Close() })
	defer func() {
		if !stop() {
			c.dead = true // the context ended, even if only after the last answer
		}
	}()
	c.used++
	if err := c.sc.UpdateDeadline(timeout); err != nil {
		return stageMail, err
	}
	from, err := msg.GetSender(false)
	if err != nil {
		return stageMail, err
	}
	rcpts, err := msg.GetRecipients()
	if err != nil {
		return stageRcpt, err
	}
	if err := c.sc.Mail(from); err != nil {
		return stageMail, err
	}
	for _, r := range rcpts {
		if err := c.sc.Rcpt(r); err != nil {
			return stageRcpt, err
		}
	}
	w, err := c.sc.Data()
	if err != nil {
		return stageData, err
	}
	if _, err := msg.WriteTo(w); err != nil {
		return stageData, err
	}
	if err := w.Close(); err != nil {
		return stageEnd, err
	}
	return stageEnd, nil
}

// reusable reports whether c can serve another Send after err: the server answered (other than
// closing), the context is alive, and the session resets.
func (c *conn) reusable(ctx context.Context, err error) bool {
	var te *textproto.Error
	if c.dead || !errors.As(err, &te) || te.Code == 421 || ctx.Err() != nil {
		return false
	}
	return c.sc.UpdateDeadline(quitTimeout) == nil && c.sc.Reset() == nil
}

// quit ends the session politely, within a short deadline.
func (c *conn) quit() {
	_ = c.sc.UpdateDeadline(quitTimeout)
	_ = c.sc.Quit()
	c.raw.Close()
}

func (c *conn) close() { c.raw.Close() }

// rawConn holds the connection being set up, so that a context ending can cut it.
type rawConn struct {
	mu     sync.Mutex
	c      net.Conn
	killed bool
}

func (b *rawConn) set(c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.c = c
	if b.killed {
		c.Close()
	}
}

func (b *rawConn) get() net.Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.c
}

func (b *rawConn) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killed = true
	if b.c != nil {
		b.c.Close()
	}
}

// plainOrLogin authenticates with PLAIN when the server offers it, else with LOGIN (which some
// servers, Microsoft's among them, offer alone). Both refuse to send the password unless the
// connection is encrypted or to localhost.
type plainOrLogin struct {
	user, pass, host string
	inner            gosmtp.Auth
}

func (a *plainOrLogin) Start(server *gosmtp.ServerInfo) (string, []byte, error) {
	offers := func(mech string) bool {
		return slices.ContainsFunc(server.Auth, func(m string) bool { return strings.EqualFold(m, mech) })
	}
	switch {
	case offers("PLAIN"):
		a.inner = gosmtp.PlainAuth("", a.user, a.pass, a.host, false)
	case offers("LOGIN"):
		a.inner = gosmtp.LoginAuth(a.user, a.pass, a.host, false)
	case len(server.Auth) == 0:
		return "", nil, errors.New("the server offers no AUTH")
	default:
		return "", nil, fmt.Errorf("the server offers neither AUTH PLAIN nor LOGIN, only %s", strings.Join(server.Auth, " "))
	}
	return a.inner.Start(server)
}

func (a *plainOrLogin) Next(fromServer []byte, more bool) ([]byte, error) {
	return a.inner.Next(fromServer, more)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}
