package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/route"
	"github.com/heraldhq/herald/services/workers/twilio"
)

// TestEntryConfig: an entry is built from its own settings and secret files, never from the
// flags' credentials.
func TestEntryConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "sendgrid")
	if err := os.WriteFile(key, []byte("SG.entry-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{SendGridAPIKey: "SG.flag-key", EmailFrom: "flag@example.com", EmailFromName: "Herald",
		Twilio: twilio.Config{AccountSID: "AC1", AuthToken: "flag-token"}}
	c, err := entryConfig(cfg, delivery.Email, &route.Entry{Name: "a", Provider: "sendgrid", APIKeyFile: key, From: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if c.SendGridAPIKey != "SG.entry-key" || c.EmailFrom != "a@example.com" || c.EmailFromName != "Herald" ||
		c.EmailProvider != "sendgrid" || c.SendGridBaseURL != "https://api.sendgrid.com" {
		t.Errorf("email entry config: provider %q from %q name %q base %q key from the file: %v", c.EmailProvider,
			c.EmailFrom, c.EmailFromName, c.SendGridBaseURL, c.SendGridAPIKey == "SG.entry-key")
	}
	c, err = entryConfig(cfg, delivery.SMS, &route.Entry{Name: "b", Provider: "twilio", AccountSID: "AC2", From: "+14155550111"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Twilio.AuthToken != "" || c.Twilio.AccountSID != "AC2" {
		t.Error("an SMS entry borrowed the flags' Twilio credentials")
	}
	if _, err := entryConfig(cfg, delivery.Email, &route.Entry{Name: "c", Provider: "smtp", PasswordFile: filepath.Join(dir, "missing")}); err == nil {
		t.Error("a missing secret file was accepted")
	}
}

// TestReload: a good file swaps the routes; a bad one is refused and the routes in use stay.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "providers.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("email:\n  - {name: first, provider: sim, url: 'http://127.0.0.1:9'}\n")
	cfg := Config{ProvidersFile: file, SimURL: "http://127.0.0.1:9"}
	f, err := readProviders(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRouter(cfg, delivery.Email, f.Channels[delivery.Email], nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), routers: map[delivery.Channel]*route.Router{delivery.Email: r}}
	if got := r.Provider(); got != "sim/first" {
		t.Fatalf("provider %s", got)
	}

	for _, tc := range []struct{ name, file, want string }{
		{"not YAML", "email: [", "providers file"},
		{"the channel dropped", "sms:\n  - {name: a, provider: sim}\n", "channel email is missing"},
		{"an unknown provider", "email:\n  - {name: a, provider: postfix}\n", "is not one of"},
		{"a secret file missing", "email:\n  - {name: a, provider: smtp, host: localhost, password_file: " + filepath.Join(dir, "nope") + "}\n", "read secret"},
	} {
		write(tc.file)
		if err := d.Reload(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reload: %v, want an error with %q", tc.name, err, tc.want)
		}
		if got := r.Provider(); got != "sim/first" {
			t.Errorf("%s: after a refused reload the provider is %s", tc.name, got)
		}
	}

	write("email:\n  - {name: second, provider: sim, url: 'http://127.0.0.1:9'}\n  - {name: third, provider: sim}\n")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.Routes(); len(got) != 2 || got[0].Label != "sim/second" || got[1].Label != "sim/third" {
		t.Errorf("routes after reload %+v", got)
	}
	// A refused connection to the simulator proves the message was not taken: the send moves on
	// to the next route, and both refuse.
	res, err := r.Send(context.Background(), &workers.Message{DeliveryID: uuid.New(), Channel: delivery.Email, To: "a@example.com"})
	if !workers.NotAccepted(err) || res.Provider != "sim/third" {
		t.Errorf("send after reload: %s %v, want refused by sim/third", res.Provider, err)
	}
}

// TestReloadOnHangup: SIGHUP makes the daemon read the providers file again.
func TestReloadOnHangup(t *testing.T) {
	// Holding SIGHUP here too keeps its default action (ending the process) away while the
	// daemon's handler is not yet listening.
	held := make(chan os.Signal, 1)
	signal.Notify(held, syscall.SIGHUP)
	defer signal.Stop(held)

	file := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(file, []byte("email:\n  - {name: first, provider: sim}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ProvidersFile: file, SimURL: "http://127.0.0.1:9"}
	f, err := readProviders(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRouter(cfg, delivery.Email, f.Channels[delivery.Email], nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), routers: map[delivery.Channel]*route.Router{delivery.Email: r}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.reloadOnHangup(ctx)
	}()
	defer func() { cancel(); <-done }()

	if err := os.WriteFile(file, []byte("email:\n  - {name: second, provider: sim}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The handler may not listen yet when the first signal comes: signal until it has reloaded.
	deadline := time.Now().Add(30 * time.Second)
	for r.Provider() != "sim/second" {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the providers file")
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
