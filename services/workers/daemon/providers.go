package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers/apns"
	"github.com/heraldhq/herald/services/workers/fcm"
	"github.com/heraldhq/herald/services/workers/route"
	"github.com/heraldhq/herald/services/workers/smtp"
	"github.com/heraldhq/herald/services/workers/twilio"
)

// A providers file (--providers-file) gives a channel several credentials, in failover order and
// chosen per app (services/workers/route). Each entry is built as the channel's flags would be,
// from a copy of the process's configuration whose provider settings are the entry's own: a
// setting left out of an entry is not taken from a flag, so one credential never borrows
// another's key. What is not a credential (timeouts, trust roots) stays the process's.

// readProviders reads and parses the providers file.
func readProviders(path string) (*route.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("providers file: %w", err)
	}
	return route.Parse(data)
}

// routes builds the routes of channel ch from its entries. On an error it closes the senders it
// built.
func routes(cfg Config, ch delivery.Channel, entries []route.Entry) (_ []route.Route, err error) {
	var out []route.Route
	defer func() {
		if err != nil {
			closeAll(out)
		}
	}()
	for i := range entries {
		e := &entries[i]
		c, err := entryConfig(cfg, ch, e)
		if err != nil {
			return nil, fmt.Errorf("providers file: channel %s, entry %s: %w", ch, e.Name, err)
		}
		s, err := sender(c, ch)
		if err != nil {
			return nil, fmt.Errorf("providers file: entry %s: %w", e.Name, err)
		}
		failures, cooldown := e.BreakerFailures, e.BreakerCooldown
		if failures == 0 {
			failures = cfg.BreakerFailures
		}
		if cooldown == 0 {
			cooldown = cfg.BreakerCooldown
		}
		out = append(out, route.Route{Name: e.Name, Provider: e.Provider, Sender: s, Apps: e.Apps,
			DeviceApps: e.DeviceApps, Rate: e.Rate, Burst: e.Burst, BreakerFailures: failures, BreakerCooldown: cooldown})
	}
	return out, nil
}

func closeAll(rs []route.Route) {
	for _, r := range rs {
		if c, ok := r.Sender.(interface{ Close() }); ok {
			c.Close()
		}
	}
}

// entryConfig returns the configuration sender builds entry e of channel ch from.
func entryConfig(cfg Config, ch delivery.Channel, e *route.Entry) (Config, error) {
	c := cfg
	secret := func(path string) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// The path is configuration, not a secret; the error names it so it can be fixed.
			return "", fmt.Errorf("read secret: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	var err error
	switch ch {
	case delivery.IOS:
		c.IOSProvider = e.Provider
		c.APNs = apns.Config{Topic: e.Topic, KeyFile: e.KeyFile, KeyID: e.KeyID, TeamID: e.TeamID,
			CertFile: e.CertFile, P12File: e.P12File, RootCAs: cfg.APNs.RootCAs}
		c.APNsHost = e.Host
		c.APNs.Password, err = secret(e.CertPasswordFile)
	case delivery.Android:
		c.AndroidProvider = e.Provider
		c.FCM = fcm.Config{ProjectID: e.ProjectID, CredentialsFile: e.CredentialsFile, Endpoint: e.Endpoint}
	case delivery.SMS:
		c.SMSProvider = e.Provider
		c.Twilio = twilio.Config{AccountSID: e.AccountSID, APIKey: e.APIKeySID, From: e.From,
			MessagingServiceSID: e.MessagingServiceSID, StatusCallback: e.StatusCallback, BaseURL: e.BaseURL}
		if c.Twilio.AuthToken, err = secret(e.AuthTokenFile); err == nil {
			c.Twilio.APISecret, err = secret(e.APISecretFile)
		}
	case delivery.Email:
		c.EmailProvider = e.Provider
		c.EmailFrom, c.EmailFromName = e.From, e.FromName
		if c.EmailFromName == "" {
			c.EmailFromName = cfg.EmailFromName
		}
		c.SendGridBaseURL = e.BaseURL
		if c.SendGridBaseURL == "" {
			c.SendGridBaseURL = "https://api.sendgrid.com"
		}
		c.SendGridAPIKey, err = secret(e.APIKeyFile)
		c.SMTP = smtp.Config{Host: e.Host, Port: e.Port, Username: e.Username, RootCAs: cfg.SMTP.RootCAs}
		c.SMTPTLS = e.TLS
		if c.SMTPTLS == "" {
			c.SMTPTLS = "starttls"
		}
		if err == nil {
			c.SMTP.Password, err = secret(e.PasswordFile)
		}
	}
	if e.Provider == "sim" && e.URL != "" {
		c.SimURL = e.URL
	}
	if err == nil && cfg.ProviderEntry != nil {
		cfg.ProviderEntry(ch, e.Name, &c)
	}
	return c, err
}

// Reload reads the providers file again and swaps every router's routes for the new ones.
// Sends in flight finish on the old routes. A file that cannot be read, parsed or built, or that
// drops a channel this process serves through it, is refused as a whole: every channel keeps
// its routes. A channel the file now lists that this process serves from its flags keeps them
// until a restart.
func (d *Daemon) Reload() error {
	if d.cfg.ProvidersFile == "" {
		return errors.New("no providers file")
	}
	f, err := readProviders(d.cfg.ProvidersFile)
	if err != nil {
		return err
	}
	built := map[delivery.Channel][]route.Route{}
	defer func() {
		for _, rs := range built {
			closeAll(rs)
		}
	}()
	for ch := range d.routers {
		entries, ok := f.Channels[ch]
		if !ok {
			return fmt.Errorf("providers file: channel %s is missing (this process sends it through the file)", ch)
		}
		if built[ch], err = routes(d.cfg, ch, entries); err != nil {
			return err
		}
	}
	for ch := range f.Channels {
		if _, ok := d.routers[ch]; !ok && d.serves(ch) {
			d.log.Warn("providers file: channel served from flags until a restart", "channel", ch)
		}
	}
	for ch, rs := range built {
		if err := d.routers[ch].Swap(rs); err != nil {
			return fmt.Errorf("channel %s: %w", ch, err) // New's checks passed in routes: not reached
		}
		delete(built, ch)
	}
	return nil
}

func (d *Daemon) serves(ch delivery.Channel) bool {
	for _, c := range d.consumers {
		if c.Channel() == ch {
			return true
		}
	}
	return false
}

// reloadOnHangup reloads the providers file on each SIGHUP until ctx ends.
func (d *Daemon) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := d.Reload(); err != nil {
				d.log.Error("providers file refused; keeping the providers in use", "err", err)
				continue
			}
			d.log.Info("providers file reloaded", "file", d.cfg.ProvidersFile)
		}
	}
}

// newRouter builds channel ch's router from its entries in the providers file.
func newRouter(cfg Config, ch delivery.Channel, entries []route.Entry, m *route.Metrics, log *slog.Logger) (*route.Router, error) {
	rs, err := routes(cfg, ch, entries)
	if err != nil {
		return nil, err
	}
	r, err := route.New(route.Options{Channel: ch, Metrics: m, Log: log}, rs)
	if err != nil {
		closeAll(rs)
		return nil, err
	}
	return r, nil
}
