package smtp_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/fakes/smtpfake"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/smtp"
)

const (
	user     = "herald"
	password = "correct-horse-battery"
	from     = "noreply@herald.test"
	to       = "ada.lovelace@example.com"
	text     = "Your code is 123456."
	html     = "<p>Your code is <b>123456</b>.</p>"
)

// setup starts a fake with fc (credentials filled in unless fc.Username is "-") and a Sender
// for it with sc (host, port, credentials, roots and From filled in where empty).
func setup(t *testing.T, fc smtpfake.Config, sc smtp.Config) (*smtpfake.Fake, *smtp.Sender) {
	t.Helper()
	switch fc.Username {
	case "":
		fc.Username, fc.Password = user, password
	case "-":
		fc.Username, fc.Password = "", ""
	}
	f := smtpfake.New(fc)
	f.Start()
	t.Cleanup(f.Close)
	s := sender(t, f, sc)
	return f, s
}

func sender(t *testing.T, f *smtpfake.Fake, sc smtp.Config) *smtp.Sender {
	t.Helper()
	if sc.Host == "" {
		sc.Host = "127.0.0.1"
	}
	if sc.Port == 0 {
		sc.Port = f.Port()
	}
	switch sc.Username {
	case "":
		sc.Username = user
		if sc.Password == "" {
			sc.Password = password
		}
	case "-":
		sc.Username, sc.Password = "", ""
	}
	if sc.RootCAs == nil {
		sc.RootCAs = f.CertPool()
	}
	if sc.From == "" {
		sc.From = from
	}
	if sc.Timeout == 0 {
		sc.Timeout = 5 * time.Second
	}
	s, err := smtp.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func message() *workers.Message {
	return &workers.Message{
		DeliveryID:     uuid.Must(uuid.NewV7()),
		NotificationID: uuid.Must(uuid.NewV7()),
		Channel:        delivery.Email,
		To:             to,
		Category:       "security",
		Priority:       delivery.High,
		Content:        delivery.Content{Subject: "Your code", Text: text, HTML: html},
		Attempt:        1,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// checkSecrets fails the test if err mentions the address, the content or the password.
func checkSecrets(t *testing.T, err error, m *workers.Message) {
	t.Helper()
	for _, s := range []string{m.To, "ada.lovelace", m.Content.Text, m.Content.HTML, "123456", password} {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
}

func TestSendBuildsTheMessage(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{FromName: "Herald Alerts"})
	m := message()
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	msgs := f.Messages()
	if len(msgs) != 1 {
		t.Fatalf("fake recorded %d messages", len(msgs))
	}
	got := msgs[0]
	wantID := "<" + m.DeliveryID.String() + "@herald.test>"
	if res.ProviderMessageID != wantID || got.MessageID != wantID {
		t.Errorf("ProviderMessageID %q, sent %q, want %q", res.ProviderMessageID, got.MessageID, wantID)
	}
	if got.From != from || len(got.To) != 1 || got.To[0] != to || !got.TLS || got.AuthUser != user {
		t.Errorf("envelope %+v", got)
	}
	h := got.Header
	if got.Subject != "Your code" || h.Get("From") != `"Herald Alerts" <noreply@herald.test>` ||
		h.Get("To") != "<"+to+">" || h.Get(smtp.DeliveryIDHeader) != m.DeliveryID.String() || h.Get("Date") == "" {
		t.Errorf("headers %v", h)
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "multipart/alternative;") {
		t.Errorf("Content-Type %q", h.Get("Content-Type"))
	}
	if h.Get("User-Agent") != "" || h.Get("X-Mailer") != "" {
		t.Errorf("advertises the mailer: %q %q", h.Get("User-Agent"), h.Get("X-Mailer"))
	}
	if got.Text != text || got.HTML != html {
		t.Errorf("parts %q %q", got.Text, got.HTML)
	}
	if f.Count(smtp.DeliveryIDHeader, m.DeliveryID.String()) != 1 {
		t.Error("not counted once")
	}
	if s.Provider() != "smtp" {
		t.Errorf("Provider() = %q", s.Provider())
	}
}

func TestTextOnlyAndHTMLOnly(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	textOnly, htmlOnly := message(), message()
	textOnly.Content.HTML = ""
	htmlOnly.Content.Text = ""
	for _, m := range []*workers.Message{textOnly, htmlOnly} {
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.Messages()
	// A single part ends with the line break that ends the message.
	if ct := msgs[0].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || msgs[0].Text != text+"\r\n" || msgs[0].HTML != "" {
		t.Errorf("text only: %q %q %q", ct, msgs[0].Text, msgs[0].HTML)
	}
	if ct := msgs[1].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || msgs[1].HTML != html+"\r\n" || msgs[1].Text != "" {
		t.Errorf("HTML only: %q %q %q", ct, msgs[1].Text, msgs[1].HTML)
	}
}

func TestHeadersCannotBeInjected(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	m := message()
	m.Content.Subject = "Code — ✓\r\nBcc: eve@example.com"
	m.Content.Text = "line one\r\n.\r\nRCPT TO:<eve@example.com>\r\n"
	if _, err := s.Send(ctx(t), m); err != nil {
		t.Fatal(err)
	}
	got := f.Messages()[0]
	if got.Header.Get("Bcc") != "" || len(got.To) != 1 {
		t.Errorf("injected: Bcc %q, envelope %v", got.Header.Get("Bcc"), got.To)
	}
	if !strings.HasPrefix(got.Subject, "Code — ✓") {
		t.Errorf("subject %q", got.Subject)
	}
	if !strings.Contains(got.Text, "\r\n.\r\nRCPT TO:") {
		t.Errorf("the body lost its dot line: %q", got.Text)
	}
}

func TestTLSModesAndMechanisms(t *testing.T) {
	tests := []struct {
		name string
		fc   smtpfake.Config
		sc   smtp.Config
		tls  bool
	}{
		{"starttls", smtpfake.Config{}, smtp.Config{}, true},
		{"implicit TLS", smtpfake.Config{TLS: smtpfake.ImplicitTLS}, smtp.Config{TLS: smtp.ImplicitTLS}, true},
		{"no TLS on loopback", smtpfake.Config{TLS: smtpfake.NoTLS}, smtp.Config{TLS: smtp.NoTLS}, false},
		{"no TLS by name", smtpfake.Config{TLS: smtpfake.NoTLS}, smtp.Config{TLS: smtp.NoTLS, Host: "localhost"}, false},
		{"no AUTH", smtpfake.Config{Username: "-"}, smtp.Config{Username: "-"}, true},
		{"LOGIN only", smtpfake.Config{Mechanisms: []string{"LOGIN"}}, smtp.Config{}, true},
		{"PLAIN preferred", smtpfake.Config{Mechanisms: []string{"LOGIN", "PLAIN"}}, smtp.Config{}, true},
		{"IPv6 literal", smtpfake.Config{}, smtp.Config{Host: "::1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sc.Host == "::1" {
				if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
					t.Skip("no IPv6 loopback")
				} else {
					l.Close()
				}
			}
			f, s := setup(t, tt.fc, tt.sc)
			if tt.sc.Host == "::1" {
				// The fake listens on 127.0.0.1 only; an IPv6 sender must fail to connect,
				// not mangle the address.
				_, err := s.Send(ctx(t), message())
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("got %v, want connection refused at [::1]", err)
				}
				return
			}
			if _, err := s.Send(ctx(t), message()); err != nil {
				t.Fatal(err)
			}
			if got := f.Messages()[0]; got.TLS != tt.tls {
				t.Errorf("TLS %v", got.TLS)
			}
		})
	}
}

// kind names the error class a row expects.
type kind int

const (
	permanent kind = iota + 1
	config
	transient
)

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		fc       smtpfake.Config
		sc       smtp.Config
		prepare  func(*smtpfake.Fake)
		kind     kind
		stage    string // the *smtp.ReplyError's, "" for none
		code     int
		enhanced string
	}{
		{
			name:    "550 unknown mailbox",
			prepare: func(f *smtpfake.Fake) { f.RejectMailbox(to, 550) },
			kind:    permanent, stage: "RCPT TO", code: 550, enhanced: "5.1.1",
		},
		{
			name:    "551 user not local",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Rcpt, 551, 1) },
			kind:    permanent, stage: "RCPT TO", code: 551, enhanced: "5.1.6",
		},
		{
			name:    "553 mailbox name not allowed",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Rcpt, 553, 1) },
			kind:    permanent, stage: "RCPT TO", code: 553, enhanced: "5.1.3",
		},
		{
			name:    "554 message rejected",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Data, 554, 1) },
			kind:    permanent, stage: "end of data", code: 554, enhanced: "5.7.1",
		},
		{
			name: "552 message too large",
			fc:   smtpfake.Config{MaxMessageBytes: 256},
			kind: permanent, stage: "end of data", code: 552, enhanced: "5.3.4",
		},
		{
			name: "535 wrong password",
			sc:   smtp.Config{Password: "wrong-password"},
			kind: config, stage: "connect", code: 535, enhanced: "5.7.8",
		},
		{
			name:    "535 scripted",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Auth, 535, 1) },
			kind:    config, stage: "connect", code: 535, enhanced: "5.7.8",
		},
		{
			name: "530 authentication required",
			sc:   smtp.Config{Username: "-"},
			kind: config, stage: "MAIL FROM", code: 530, enhanced: "5.7.0",
		},
		{
			name:    "553 sender refused at MAIL FROM",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Mail, 553, 1) },
			kind:    config, stage: "MAIL FROM", code: 553, enhanced: "5.1.3",
		},
		{
			name:    "554 greeting",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Connect, 554, 1) },
			kind:    config, stage: "connect", code: 554, enhanced: "5.3.2",
		},
		{
			name: "STARTTLS not offered",
			fc:   smtpfake.Config{TLS: smtpfake.NoTLS},
			kind: config,
		},
		{
			name: "certificate not trusted",
			sc:   smtp.Config{RootCAs: x509.NewCertPool()},
			kind: config,
		},
		{
			name: "no usable AUTH mechanism",
			fc:   smtpfake.Config{Mechanisms: []string{"XOAUTH2"}},
			kind: config,
		},
		{
			name: "AUTH not offered",
			fc:   smtpfake.Config{Username: "-"},
			kind: config,
		},
		{
			name:    "421 greeting",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Connect, 421, 1) },
			kind:    transient, stage: "connect", code: 421, enhanced: "4.3.2",
		},
		{
			name:    "454 temporary authentication failure",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Auth, 454, 1) },
			kind:    transient, stage: "connect", code: 454, enhanced: "4.7.0",
		},
		{
			name:    "451 at MAIL FROM",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Mail, 451, 1) },
			kind:    transient, stage: "MAIL FROM", code: 451, enhanced: "4.3.0",
		},
		{
			name:    "450 mailbox busy",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Rcpt, 450, 1) },
			kind:    transient, stage: "RCPT TO", code: 450, enhanced: "4.2.1",
		},
		{
			name:    "452 mailbox full",
			prepare: func(f *smtpfake.Fake) { f.RejectMailbox(to, 452) },
			kind:    transient, stage: "RCPT TO", code: 452, enhanced: "4.2.2",
		},
		{
			name:    "421 at RCPT TO",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Rcpt, 421, 1) },
			kind:    transient, stage: "RCPT TO", code: 421, enhanced: "4.3.2",
		},
		{
			name:    "451 at end of data",
			prepare: func(f *smtpfake.Fake) { f.Fail(smtpfake.Data, 451, 1) },
			kind:    transient, stage: "end of data", code: 451, enhanced: "4.3.0",
		},
		{
			name:    "dropped at connect",
			prepare: func(f *smtpfake.Fake) { f.Drop(smtpfake.Connect, 1) },
			kind:    transient,
		},
		{
			name:    "dropped at MAIL FROM",
			prepare: func(f *smtpfake.Fake) { f.Drop(smtpfake.Mail, 1) },
			kind:    transient,
		},
		{
			name:    "dropped after the message",
			prepare: func(f *smtpfake.Fake) { f.Drop(smtpfake.Data, 1) },
			kind:    transient,
		},
		{
			name:    "timeout",
			sc:      smtp.Config{Timeout: 200 * time.Millisecond},
			prepare: func(f *smtpfake.Fake) { f.SetDelay(smtpfake.Rcpt, time.Minute) },
			kind:    transient,
		},
		{
			name:    "greeting timeout",
			sc:      smtp.Config{Timeout: 200 * time.Millisecond},
			prepare: func(f *smtpfake.Fake) { f.SetDelay(smtpfake.Connect, time.Minute) },
			kind:    transient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := setup(t, tt.fc, tt.sc)
			if tt.prepare != nil {
				tt.prepare(f)
			}
			m := message()
			if tt.fc.MaxMessageBytes != 0 {
				m.Content.Text = strings.Repeat("All work and no play makes Jack a dull boy.\n", 20)
			}
			begin := time.Now()
			_, err := s.Send(ctx(t), m)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("Send took %v", d)
			}
			t.Log(err)
			var (
				perm *workers.PermanentError
				ce   *workers.ConfigError
				tr   *workers.TransientError
			)
			switch tt.kind {
			case permanent:
				if !errors.As(err, &perm) || perm.Reason != "rejected" || perm.Effect != workers.NoEffect {
					t.Fatalf("%v is not a *workers.PermanentError \"rejected\"", err)
				}
			case config:
				if !errors.As(err, &ce) {
					t.Fatalf("%v is not a *workers.ConfigError", err)
				}
			case transient:
				if !errors.As(err, &tr) || tr.RetryAfter != 0 {
					t.Fatalf("%v is not a *workers.TransientError", err)
				}
			}
			var re *smtp.ReplyError
			if errors.As(err, &re) {
				if re.Stage != tt.stage || re.Code != tt.code || re.Enhanced != tt.enhanced {
					t.Errorf("ReplyError %+v, want %s %d %s", re, tt.stage, tt.code, tt.enhanced)
				}
			} else if tt.stage != "" {
				t.Errorf("%v is not a *smtp.ReplyError", err)
			}
			if !strings.Contains(err.Error(), m.DeliveryID.String()) {
				t.Errorf("error %q does not name the delivery", err)
			}
			checkSecrets(t, err, m)
			if n := len(f.Messages()); n != 0 {
				t.Errorf("the fake accepted %d messages", n)
			}
		})
	}
}

func TestRejectionNamesNoAddress(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	f.RejectMailbox(to, 550)
	m := message()
	_, err := s.Send(ctx(t), m)
	if err == nil || !strings.Contains(err.Error(), "RCPT TO: 550 5.1.1 <[address]>: Recipient address rejected: User unknown") {
		t.Fatalf("error %v", err)
	}
	checkSecrets(t, err, m)
}

func TestConnectionsAreReused(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	for range 5 {
		if _, err := s.Send(ctx(t), message()); err != nil {
			t.Fatal(err)
		}
	}
	// Answers that leave the session usable keep it.
	f.RejectMailbox("bob@example.com", 550)
	bob := message()
	bob.To = "bob@example.com"
	if _, err := s.Send(ctx(t), bob); err == nil {
		t.Fatal("bob accepted")
	}
	f.Fail(smtpfake.Data, 451, 1)
	if _, err := s.Send(ctx(t), message()); err == nil {
		t.Fatal("451 accepted")
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if n := f.Connections(); n != 1 {
		t.Errorf("%d connections for 8 sequential sends, want 1", n)
	}
	if n := len(f.Messages()); n != 6 {
		t.Errorf("%d messages, want 6", n)
	}
}

func TestBrokenConnectionsAreNotReused(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	f.Fail(smtpfake.Rcpt, 421, 1)
	if _, err := s.Send(ctx(t), message()); err == nil {
		t.Fatal("421 accepted")
	}
	f.Drop(smtpfake.Data, 1)
	if _, err := s.Send(ctx(t), message()); err == nil {
		t.Fatal("dropped message accepted")
	}
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if n := f.Connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestDeadIdleConnectionIsReplaced(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	// The server gives up the idle session; the next Send finds out at MAIL FROM, when nothing
	// has been sent, and sends on a new connection.
	for _, prepare := range []func(){
		func() { f.Drop(smtpfake.Mail, 1) },
		func() { f.Fail(smtpfake.Mail, 421, 1) },
	} {
		prepare()
		m := message()
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		if n := f.Count(smtp.DeliveryIDHeader, m.DeliveryID.String()); n != 1 {
			t.Errorf("sent %d times", n)
		}
	}
	if n := f.Connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestMessagesPerConnectionAreCapped(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	for range 101 {
		if _, err := s.Send(ctx(t), message()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.Connections(); n != 2 {
		t.Errorf("%d connections for 101 messages, want 2", n)
	}
}

func TestNoPool(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{MaxIdleConns: -1})
	for range 3 {
		if _, err := s.Send(ctx(t), message()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.Connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestCloseEndsIdleConnections(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	if _, err := s.Send(ctx(t), message()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A Sender still sends after Close, without keeping connections.
	for range 2 {
		if _, err := s.Send(ctx(t), message()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.Connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestRetryAfterLostAnswerRepeatsTheMessageID(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	f.Drop(smtpfake.Data, 1)
	m := message()
	_, err := s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Fatalf("%v is not a *workers.TransientError", err)
	}
	res, err := s.Send(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.ProviderMessageID != "<"+m.DeliveryID.String()+"@herald.test>" || f.Messages()[0].MessageID != res.ProviderMessageID {
		t.Errorf("Message-ID %q", res.ProviderMessageID)
	}
}

func TestContextCanceled(t *testing.T) {
	for _, phase := range []smtpfake.Phase{smtpfake.Connect, smtpfake.Auth, smtpfake.Rcpt, smtpfake.Data} {
		t.Run(phase.String(), func(t *testing.T) {
			f, s := setup(t, smtpfake.Config{}, smtp.Config{Timeout: time.Minute})
			f.SetDelay(phase, time.Minute)
			c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			begin := time.Now()
			_, err := s.Send(c, message())
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("Send took %v after its context ended", d)
			}
			if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry {
				t.Errorf("outcome %v", o)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s, err := smtp.New(smtp.Config{Host: "127.0.0.1", Port: port, From: from, Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	m := message()
	_, err = s.Send(ctx(t), m)
	var tr *workers.TransientError
	if !errors.As(err, &tr) {
		t.Errorf("%v is not a *workers.TransientError", err)
	}
	checkSecrets(t, err, m)
}

func TestInvalidDeliveriesAreNotSent(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	noSubject, noBody, sms := message(), message(), message()
	noSubject.Content.Subject = ""
	noBody.Content.Text, noBody.Content.HTML = "", ""
	sms.Channel = delivery.SMS
	msgs := []*workers.Message{noSubject, noBody, sms}
	for _, addr := range []string{"", "ada-no-domain", "Ada <" + to + ">", to + "\r\nRCPT TO:<eve@example.com>", "<" + to + ">"} {
		m := message()
		m.To = addr
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		_, err := s.Send(ctx(t), m)
		if o, reason, _ := workers.Classify(err); o != workers.OutcomeFailed || (reason != "rejected" && reason != "wrong_channel") {
			t.Errorf("%q: outcome %v %q for %v", m.To, o, reason, err)
		}
		if err != nil && m.To != "" && strings.Contains(err.Error(), m.To) {
			t.Errorf("error %q contains the address", err)
		}
	}
	if n := f.Connections(); n != 0 {
		t.Errorf("%d connections for invalid deliveries", n)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ok := smtp.Config{Host: "smtp.example.com", From: from, Username: user, Password: password}
	tests := []struct {
		name   string
		change func(*smtp.Config)
	}{
		{"no host", func(c *smtp.Config) { c.Host = "" }},
		{"host with scheme", func(c *smtp.Config) { c.Host = "smtp://smtp.example.com" }},
		{"host with port", func(c *smtp.Config) { c.Host = "smtp.example.com:587" }},
		{"bad port", func(c *smtp.Config) { c.Port = 70000 }},
		{"bad TLS mode", func(c *smtp.Config) { c.TLS = 7 }},
		{"user without password", func(c *smtp.Config) { c.Password = "" }},
		{"password without user", func(c *smtp.Config) { c.Username = "" }},
		{"password with a line break", func(c *smtp.Config) { c.Password = "pass\r\nword" }},
		{"credentials in clear text", func(c *smtp.Config) { c.TLS = smtp.NoTLS }},
		{"no from", func(c *smtp.Config) { c.From = "" }},
		{"from with a name", func(c *smtp.Config) { c.From = "Herald <" + from + ">" }},
		{"from name with a line break", func(c *smtp.Config) { c.FromName = "Herald\r\nBcc: x@y" }},
		{"bad HELO", func(c *smtp.Config) { c.HELO = "my host" }},
		{"negative timeout", func(c *smtp.Config) { c.Timeout = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			_, err := smtp.New(cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			if strings.Contains(err.Error(), "horse") || strings.Contains(err.Error(), "pass\r\nword") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
	for _, cfg := range []smtp.Config{
		ok,
		{Host: "127.0.0.1", From: from, TLS: smtp.NoTLS, Username: user, Password: password},
		{Host: "mail.internal", From: from, TLS: smtp.NoTLS},
		{Host: "[2001:db8::1]", From: from, TLS: smtp.ImplicitTLS, HELO: "[192.0.2.1]"},
		{Host: "smtp.example.com", From: from, HELO: "worker-1.herald.example", MaxIdleConns: -1},
	} {
		if _, err := smtp.New(cfg); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

func TestParseTLSMode(t *testing.T) {
	for s, want := range map[string]smtp.TLSMode{"starttls": smtp.StartTLS, "TLS": smtp.ImplicitTLS, "none": smtp.NoTLS} {
		if got, err := smtp.ParseTLSMode(s); err != nil || got != want {
			t.Errorf("ParseTLSMode(%q) = %v, %v", s, got, err)
		}
		if want.String() != strings.ToLower(s) {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := smtp.ParseTLSMode("ssl"); err == nil {
		t.Error("ParseTLSMode(ssl) succeeded")
	}
}

func TestConcurrentSends(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	f.Fail(smtpfake.Rcpt, 451, 5)
	const n = 40
	msgs := make([]*workers.Message, n)
	for i := range msgs {
		msgs[i] = message()
		msgs[i].To = fmt.Sprintf("user%d@example.com", i)
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i, m := range msgs {
		wg.Go(func() {
			for {
				res, err := s.Send(context.Background(), m)
				var tr *workers.TransientError
				if errors.As(err, &tr) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = res.ProviderMessageID
				return
			}
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for i, m := range msgs {
		if c := f.Count(smtp.DeliveryIDHeader, m.DeliveryID.String()); c != 1 {
			t.Errorf("message %d accepted %d times", i, c)
		}
		if ids[i] == "" || seen[ids[i]] {
			t.Errorf("message %d: Message-ID %q missing or repeated", i, ids[i])
		}
		seen[ids[i]] = true
	}
	if c := f.Connections(); c > n {
		t.Errorf("%d connections for %d messages", c, n)
	}
	t.Logf("%d connections for %d concurrent messages", f.Connections(), n)
}

// TestListUnsubscribeHeaders: an email with unsubscribe links carries them as RFC 2369's
// List-Unsubscribe and RFC 8058's List-Unsubscribe-Post, the signed link whole however long
// (folding must not break it), and one without carries neither.
func TestListUnsubscribeHeaders(t *testing.T) {
	f, s := setup(t, smtpfake.Config{}, smtp.Config{})
	with, without := message(), message()
	with.UnsubscribeURL = "https://contacts.herald.test/unsubscribe?token=" + strings.Repeat("v1.eyJwIjoidW5zdWIifQ", 8)
	with.UnsubscribeMailto = "mailto:unsubscribe@herald.test?subject=unsubscribe"
	for _, m := range []*workers.Message{with, without} {
		if _, err := s.Send(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.Messages()
	h := msgs[0].Header
	if got, want := h.Get("List-Unsubscribe"), "<"+with.UnsubscribeURL+">, <"+with.UnsubscribeMailto+">"; got != want {
		t.Errorf("List-Unsubscribe\n got %q\nwant %q", got, want)
	}
	if got := h.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post %q", got)
	}
	if h := msgs[1].Header; h.Get("List-Unsubscribe") != "" || h.Get("List-Unsubscribe-Post") != "" {
		t.Errorf("an email without links has %q, %q", h.Get("List-Unsubscribe"), h.Get("List-Unsubscribe-Post"))
	}
}
