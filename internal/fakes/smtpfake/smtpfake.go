// Package smtpfake is an SMTP submission server on loopback for tests of mail senders, built on
// github.com/emersion/go-smtp. It speaks STARTTLS (or implicit TLS) with a self-signed
// certificate whose pool it exposes, requires AUTH PLAIN (or LOGIN) with configured credentials,
// records the messages it accepts (envelope, raw MIME, parsed headers and parts), and can be told
// to answer any phase with an SMTP error, reject a mailbox, stall, or drop the connection.
package smtpfake

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/heraldhq/herald/internal/fakes/faults"
)

// Always, passed as a count to Fail or Drop, makes the misbehaviour permanent until Reset.
const Always = faults.Always

// DefaultMaxMessageBytes is the largest message the fake accepts unless configured otherwise.
const DefaultMaxMessageBytes = 10 << 20

// TLSMode is how clients get TLS.
type TLSMode int

// The TLS modes.
const (
	// StartTLS offers STARTTLS (the submission port, 587) and, unless Config.TLSOptional, refuses
	// AUTH and mail before it.
	StartTLS TLSMode = iota
	// ImplicitTLS speaks TLS from the first byte (the submissions port, 465).
	ImplicitTLS
	// NoTLS offers no TLS at all (a local relay).
	NoTLS
)

// Phase is a step of an SMTP session that a test can make fail, stall or drop.
type Phase int

// The phases.
const (
	// Connect is the greeting: a failure replaces the 220 banner and closes the connection.
	Connect Phase = iota + 1
	// Auth is the AUTH command (only when the server requires credentials).
	Auth
	// Mail is MAIL FROM.
	Mail
	// Rcpt is RCPT TO.
	Rcpt
	// Data is the answer to the end of the message: a failure or a drop happens after the
	// server has read the whole message, and the message is not recorded.
	Data
)

func (p Phase) String() string {
	switch p {
	case Connect:
		return "connect"
	case Auth:
		return "auth"
	case Mail:
		return "mail"
	case Rcpt:
		return "rcpt"
	case Data:
		return "data"
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// Config configures a Fake. The zero value is a STARTTLS server that requires TLS but no AUTH.
type Config struct {
	// Username and Password are the credentials AUTH accepts. When Username is set, the server
	// requires AUTH before MAIL; when it is empty, the server offers no AUTH.
	Username string
	Password string
	// Mechanisms are the SASL mechanisms offered, of "PLAIN" and "LOGIN"; PLAIN alone when empty.
	Mechanisms []string
	// TLS is how clients get TLS.
	TLS TLSMode
	// TLSOptional lets a StartTLS server take AUTH and mail over plain text.
	TLSOptional bool
	// MaxMessageBytes is the SIZE limit; DefaultMaxMessageBytes when zero.
	MaxMessageBytes int64
}

// Message is one accepted message.
type Message struct {
	// From and To are the envelope (MAIL FROM and RCPT TO), without angle brackets.
	From string
	To   []string
	// Raw is the message as the client sent it, headers and body.
	Raw []byte
	// Header is the message's parsed header; nil if Raw is not an RFC 5322 message.
	Header mail.Header
	// Subject is the decoded Subject header; MessageID the Message-ID header as sent.
	Subject   string
	MessageID string
	// Text and HTML are the decoded text/plain and text/html parts (the first of each), found in
	// any multipart structure.
	Text string
	HTML string
	// TLS reports whether the session was encrypted; AuthUser is who authenticated, if anyone.
	TLS        bool
	AuthUser   string
	ReceivedAt time.Time
}

// Fake is an SMTP server. It is safe for concurrent use.
type Fake struct {
	cfg       Config
	tlsConfig *tls.Config
	cert      *x509.Certificate
	pool      *x509.CertPool
	done      chan struct{}

	mu        sync.Mutex
	srv       *smtp.Server
	addr      string
	closed    bool
	messages  []Message
	conns     int
	phases    map[Phase]*faults.Faults[int] // a failure is an SMTP reply code
	mailboxes map[string]int                // lower-cased address -> reply code
}

// New returns a fake configured by cfg, with a fresh self-signed certificate for localhost,
// 127.0.0.1 and ::1. It does not listen until Start.
func New(cfg Config) *Fake {
	if len(cfg.Mechanisms) == 0 {
		cfg.Mechanisms = []string{sasl.Plain}
	}
	mechs := make([]string, len(cfg.Mechanisms))
	for i, m := range cfg.Mechanisms {
		mechs[i] = strings.ToUpper(m)
	}
	cfg.Mechanisms = mechs
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	cert, leaf := selfSigned()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &Fake{
		cfg:       cfg,
		tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		cert:      leaf,
		pool:      pool,
		done:      make(chan struct{}),
		phases:    make(map[Phase]*faults.Faults[int]),
		mailboxes: make(map[string]int),
	}
}

// CertPool returns a pool holding the fake's certificate, for a client's RootCAs.
func (f *Fake) CertPool() *x509.CertPool { return f.pool }

// Certificate returns the fake's self-signed certificate.
func (f *Fake) Certificate() *x509.Certificate { return f.cert }

// Start serves the fake on a loopback port and returns its address (127.0.0.1:port). It panics
// if it cannot listen, or if called twice.
func (f *Fake) Start() (addr string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("smtpfake: " + err.Error())
	}
	srv := smtp.NewServer(smtp.BackendFunc(f.newSession))
	srv.Domain = "localhost"
	srv.MaxMessageBytes = f.cfg.MaxMessageBytes
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.AllowInsecureAuth = f.cfg.TLS == NoTLS || f.cfg.TLSOptional
	if f.cfg.TLS == StartTLS {
		srv.TLSConfig = f.tlsConfig
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil || f.closed {
		l.Close()
		panic("smtpfake: Start called twice")
	}
	f.srv, f.addr = srv, l.Addr().String()
	var ln net.Listener = &listener{Listener: l, f: f}
	if f.cfg.TLS == ImplicitTLS {
		ln = tls.NewListener(ln, f.tlsConfig)
	}
	go srv.Serve(ln)
	return f.addr
}

// Port returns the port Start listens on.
func (f *Fake) Port() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, port, _ := net.SplitHostPort(f.addr)
	n, _ := strconv.Atoi(port)
	return n
}

// Close stops the server and closes every connection. Stalled phases end without an answer.
func (f *Fake) Close() {
	f.mu.Lock()
	srv := f.srv
	if !f.closed {
		f.closed = true
		close(f.done)
	}
	f.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Fail makes the next n commands of phase (or all of them, if n is Always) answer code with a
// server's usual text for it, e.g. 550 5.1.1, 451 4.3.0, 535 5.7.8. A 421 closes the connection
// after the answer, as servers do. Fail(phase, 0, 0) stops failing.
func (f *Fake) Fail(phase Phase, code, n int) { f.phase(phase).Fail(code, n) }

// Drop makes the next n commands of phase (or all of them, if n is Always) lose the connection
// without an answer.
func (f *Fake) Drop(phase Phase, n int) { f.phase(phase).Drop(n) }

// SetDelay makes every command of phase wait d before it is answered (a stalled greeting, for
// Connect).
func (f *Fake) SetDelay(phase Phase, d time.Duration) { f.phase(phase).SetDelay(d) }

// RejectMailbox makes RCPT TO addr (compared without regard to case) answer code, e.g. 550 for
// an unknown user or 452 for a full mailbox, until Reset. Code 0 accepts it again.
func (f *Fake) RejectMailbox(addr string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if code == 0 {
		delete(f.mailboxes, strings.ToLower(addr))
		return
	}
	f.mailboxes[strings.ToLower(addr)] = code
}

// Reset clears every misbehaviour and everything recorded.
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = nil
	f.conns = 0
	f.phases = make(map[Phase]*faults.Faults[int])
	f.mailboxes = make(map[string]int)
}

// Messages returns a copy of the accepted messages, oldest first.
func (f *Fake) Messages() []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Message, len(f.messages))
	for i, m := range f.messages {
		m.To = append([]string(nil), m.To...)
		m.Raw = append([]byte(nil), m.Raw...)
		if m.Header != nil {
			h := make(mail.Header, len(m.Header))
			for k, v := range m.Header {
				h[k] = append([]string(nil), v...)
			}
			m.Header = h
		}
		out[i] = m
	}
	return out
}

// Count returns how many accepted messages carry the header name with exactly value.
func (f *Fake) Count(name, value string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.messages {
		if m.Header != nil && m.Header.Get(name) == value {
			n++
		}
	}
	return n
}

// Connections returns how many connections the fake accepted.
func (f *Fake) Connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// phase returns the misbehaviour scripted for p.
func (f *Fake) phase(p Phase) *faults.Faults[int] {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.phases[p]
	if !ok {
		s = faults.New[int](0)
		f.phases[p] = s
	}
	return s
}

// errDropped is returned by a session whose connection was dropped on purpose; nobody reads
// the answer go-smtp tries to write for it.
var errDropped = errors.New("smtpfake: connection dropped")

// reply returns the SMTP error a server typically answers with code; addr, when set, is quoted
// as Postfix quotes the address it refuses.
func reply(code int, addr string) *smtp.SMTPError {
	ec := smtp.EnhancedCode{code / 100, 0, 0}
	text := "Scripted failure"
	switch code {
	case 421:
		ec, text = smtp.EnhancedCode{4, 3, 2}, "Service not available, closing transmission channel"
	case 450:
		ec, text = smtp.EnhancedCode{4, 2, 1}, "Mailbox temporarily unavailable"
	case 451:
		ec, text = smtp.EnhancedCode{4, 3, 0}, "Requested action aborted: local error in processing"
	case 452:
		ec, text = smtp.EnhancedCode{4, 2, 2}, "Mailbox full"
	case 454:
		ec, text = smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure"
	case 530:
		ec, text = smtp.EnhancedCode{5, 7, 0}, "Authentication required"
	case 535:
		ec, text = smtp.EnhancedCode{5, 7, 8}, "Authentication credentials invalid"
	case 550:
		ec, text = smtp.EnhancedCode{5, 1, 1}, "Recipient address rejected: User unknown"
	case 551:
		ec, text = smtp.EnhancedCode{5, 1, 6}, "User not local"
	case 552:
		ec, text = smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed maximum message size"
	case 553:
		ec, text = smtp.EnhancedCode{5, 1, 3}, "Mailbox name not allowed"
	case 554:
		ec, text = smtp.EnhancedCode{5, 7, 1}, "Transaction failed: message rejected"
	}
	if addr != "" {
		text = "<" + addr + ">: " + text
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// listener counts connections, applies the Connect script, and wraps each connection so that
// a 421 can close it after its answer.
type listener struct {
	net.Listener
	f *Fake
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.f.mu.Lock()
		l.f.conns++
		l.f.mu.Unlock()
		a := l.f.phase(Connect).Take()
		switch {
		case a.Drop:
			c.Close()
			continue
		case a.Fail != 0:
			go l.f.refuse(c, a)
			continue
		}
		return &conn{Conn: c, greetDelay: a.Delay, done: l.f.done}, nil
	}
}

// refuse answers a connection with code instead of the greeting, then closes it.
func (f *Fake) refuse(c net.Conn, a faults.Action[int]) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if f.cfg.TLS == ImplicitTLS {
		tc := tls.Server(c, f.tlsConfig)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	if !faults.Sleep(f.done, a.Delay) {
		return
	}
	e := reply(a.Fail, "")
	if a.Fail == 554 {
		e.EnhancedCode, e.Message = smtp.EnhancedCode{5, 3, 2}, "No SMTP service here"
	}
	fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

// conn delays the first write (the greeting) when told to, and can close itself right after
// an answer.
type conn struct {
	net.Conn
	greetDelay time.Duration
	done       <-chan struct{}

	wrote           atomic.Bool
	closeAfterWrite atomic.Bool
}

func (c *conn) Write(p []byte) (int, error) {
	if !c.wrote.Swap(true) && !faults.Sleep(c.done, c.greetDelay) {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Write(p)
	if c.closeAfterWrite.Load() {
		c.Conn.Close()
	}
	return n, err
}

// underlying finds the fake's conn below a TLS connection.
func underlying(c net.Conn) *conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	fc, _ := c.(*conn)
	return fc
}

// session is one client's state between EHLO and QUIT (go-smtp starts a new one after
// STARTTLS).
type session struct {
	f        *Fake
	conn     *conn
	tls      bool
	authUser string
	from     string
	to       []string
}

var _ smtp.AuthSession = (*session)(nil)

func (f *Fake) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &session{f: f, conn: underlying(c.Conn()), tls: isTLS}, nil
}

// misbehave takes the action scripted for phase and does it: see act.
func (s *session) misbehave(phase Phase, addr string) error {
	return s.act(s.f.phase(phase).Take(), addr)
}

// act does a for the session: it reports the error to answer, or nil to go on.
func (s *session) act(a faults.Action[int], addr string) error {
	if !faults.Sleep(s.f.done, a.Delay) {
		return errDropped
	}
	if a.Drop {
		if s.conn != nil {
			s.conn.Conn.Close()
		}
		return errDropped
	}
	if a.Fail != 0 {
		if a.Fail == 421 && s.conn != nil {
			s.conn.closeAfterWrite.Store(true)
		}
		return reply(a.Fail, addr)
	}
	return nil
}

// mustTLS is the answer to AUTH or MAIL before a required STARTTLS.
var mustTLS = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}

func (s *session) AuthMechanisms() []string {
	if s.f.cfg.Username == "" {
		return nil
	}
	return s.f.cfg.Mechanisms
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.f.cfg.TLS == StartTLS && !s.f.cfg.TLSOptional && !s.tls {
		return nil, mustTLS
	}
	if err := s.misbehave(Auth, ""); err != nil {
		return nil, err
	}
	check := func(identity, user, pass string) error {
		if (identity != "" && identity != user) || user != s.f.cfg.Username || pass != s.f.cfg.Password {
			return smtp.ErrAuthFailed
		}
		s.authUser = user
		return nil
	}
	offered := slices.Contains(s.f.cfg.Mechanisms, mech) // go-smtp upper-cases mech
	switch {
	case offered && mech == sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case offered && mech == sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.f.cfg.TLS == StartTLS && !s.f.cfg.TLSOptional && !s.tls {
		return mustTLS
	}
	if s.f.cfg.Username != "" && s.authUser == "" {
		return reply(530, "")
	}
	if err := s.misbehave(Mail, from); err != nil {
		return err
	}
	s.from, s.to = from, nil
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.misbehave(Rcpt, to); err != nil {
		return err
	}
	s.f.mu.Lock()
	code := s.f.mailboxes[strings.ToLower(to)]
	s.f.mu.Unlock()
	if code != 0 {
		return s.act(faults.Action[int]{Fail: code}, to)
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err // go-smtp's ErrDataTooLarge, or a broken connection
	}
	if err := s.misbehave(Data, ""); err != nil {
		return err
	}
	m := Message{
		From:       s.from,
		To:         append([]string(nil), s.to...),
		Raw:        raw,
		TLS:        s.tls,
		AuthUser:   s.authUser,
		ReceivedAt: time.Now(),
	}
	parse(&m)
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.f.closed {
		return errDropped
	}
	s.f.messages = append(s.f.messages, m)
	return nil
}

func (s *session) Reset() { s.from, s.to = "", nil }

func (s *session) Logout() error { return nil }

// loginServer is the server side of the LOGIN mechanism, which go-sasl does not provide: the
// user name and the password, each asked for in a challenge (or the user name in the initial
// response).
type loginServer struct {
	check func(identity, user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if response == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check("", l.user, string(response))
	}
	return nil, false, errors.New("unexpected response")
}

// parse fills in m's header fields and parts from m.Raw, as far as it is a MIME message.
func parse(m *Message) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Raw))
	if err != nil {
		return
	}
	m.Header = msg.Header
	m.MessageID = msg.Header.Get("Message-Id")
	dec := new(mime.WordDecoder)
	if s, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = s
	} else {
		m.Subject = msg.Header.Get("Subject")
	}
	walk(m, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, 0)
}

// walk finds the first text/plain and text/html parts below a part of content type ct.
func walk(m *Message, ct, cte string, body io.Reader, depth int) {
	if depth > 10 {
		return
	}
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			walk(m, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p, depth+1)
		}
	}
	var r io.Reader = body
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &newlineSkipper{r: body})
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return
	}
	switch {
	case mt == "text/plain" && m.Text == "":
		m.Text = string(b)
	case mt == "text/html" && m.HTML == "":
		m.HTML = string(b)
	}
}

// newlineSkipper drops the line breaks of a base64 body.
type newlineSkipper struct{ r io.Reader }

func (n *newlineSkipper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, c := range p[:k] {
			if c != '\r' && c != '\n' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// selfSigned returns a fresh ECDSA certificate for localhost, 127.0.0.1 and ::1, valid for a
// day on either side of now.
func selfSigned() (tls.Certificate, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("smtpfake: " + err.Error())
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic("smtpfake: " + err.Error())
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smtpfake"},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic("smtpfake: " + err.Error())
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic("smtpfake: " + err.Error())
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}
