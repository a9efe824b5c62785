package route

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/internal/delivery"
)

// File is a parsed providers file: per channel, the credentials in failover order.
//
//	email:
//	  - name: primary
//	    provider: sendgrid
//	    api_key_file: /run/secrets/sendgrid
//	    from: news@example.com
//	  - name: backup
//	    provider: smtp
//	    host: smtp.example.com
//	    password_file: /run/secrets/smtp
//	    from: news@example.com
//	ios:
//	  - name: shop
//	    provider: apns
//	    topic: com.example.shop
//	    device_apps: [com.example.shop]
//	    key_file: /run/secrets/shop.p8
//	    key_id: ABC123DEFG
//	    team_id: DEF123GHIJ
type File struct {
	Channels map[delivery.Channel][]Entry
}

// Entry is one credential of a channel: its provider, the settings that reach it, the rules that
// choose it, and its own rate budget and circuit breaker. Secrets are only named by file path:
// the file has no field that holds one.
type Entry struct {
	// Name tells the credential apart in the attempt log, metrics labels and logs; unique in its
	// channel.
	Name string `yaml:"name"`
	// Provider is apns (ios), fcm (android), twilio (sms), sendgrid or smtp (email), or sim.
	Provider string `yaml:"provider"`
	// Apps are the calling apps this credential serves, by app id; DeviceApps the apps devices
	// registered for (an iOS bundle id, an Android package). An entry with neither serves every
	// message no other entry of its channel claims.
	Apps       []string `yaml:"apps"`
	DeviceApps []string `yaml:"device_apps"`
	// Rate is the credential's budget in sends a second (0: none); past it, sends go to the
	// next credential. Burst is how many may go back to back (default 1).
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// BreakerFailures refusals or failures in a row open this credential's circuit for
	// BreakerCooldown (defaults: the process's --breaker-failures and --breaker-cooldown).
	BreakerFailures int           `yaml:"breaker_failures"`
	BreakerCooldown time.Duration `yaml:"breaker_cooldown"`

	// APNs.
	Topic            string `yaml:"topic"`
	KeyFile          string `yaml:"key_file"`
	KeyID            string `yaml:"key_id"`
	TeamID           string `yaml:"team_id"`
	CertFile         string `yaml:"cert_file"`
	P12File          string `yaml:"p12_file"`
	CertPasswordFile string `yaml:"cert_password_file"`
	// Host is APNs's environment (production, development or a URL) or the SMTP server.
	Host string `yaml:"host"`

	// FCM.
	ProjectID       string `yaml:"project_id"`
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`

	// Twilio.
	AccountSID          string `yaml:"account_sid"`
	AuthTokenFile       string `yaml:"auth_token_file"`
	APIKeySID           string `yaml:"api_key_sid"`
	APISecretFile       string `yaml:"api_secret_file"`
	MessagingServiceSID string `yaml:"messaging_service_sid"`
	StatusCallback      string `yaml:"status_callback"`

	// SendGrid.
	APIKeyFile string `yaml:"api_key_file"`

	// SMTP.
	Port         int    `yaml:"port"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          string `yaml:"tls"`

	// From is the sender: an SMS number or sender id (Twilio), an email address (SendGrid,
	// SMTP). FromName is the email sender's name.
	From     string `yaml:"from"`
	FromName string `yaml:"from_name"`
	// BaseURL is the API's base URL (SendGrid, Twilio), URL the simulator's.
	BaseURL string `yaml:"base_url"`
	URL     string `yaml:"url"`
}

// Label is how attempts and the status page name the credential: provider/name.
func (e *Entry) Label() string { return e.Provider + "/" + e.Name }

// providers are the providers each channel may use.
var providers = map[delivery.Channel][]string{
	delivery.IOS:     {"apns", "sim"},
	delivery.Android: {"fcm", "sim"},
	delivery.SMS:     {"twilio", "sim"},
	delivery.Email:   {"sendgrid", "smtp", "sim"},
}

// maxFile bounds a providers file: a few hundred credentials fit in far less.
const maxFile = 1 << 20

// name is what a credential's name may be: it goes into metrics labels and logs.
var name = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Parse reads a providers file. It refuses unknown fields (a misspelt or inline secret), a
// channel or provider it does not know, a provider on the wrong channel, names missing, badly
// formed or repeated within a channel, empty or repeated app names in an entry, and negative
// budgets. Several entries may serve one app: they are its failover order. It does not read the
// secret files.
func Parse(data []byte) (*File, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("providers file: larger than %d bytes", maxFile)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw map[string][]Entry
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("providers file: empty")
		}
		return nil, fmt.Errorf("providers file: %w", err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("providers file: more than one document")
	}
	f := &File{Channels: map[delivery.Channel][]Entry{}}
	for key, entries := range raw {
		ch, err := delivery.ParseChannel(key)
		if err != nil {
			return nil, fmt.Errorf("providers file: %w", err)
		}
		if ch == delivery.Inbox {
			return nil, errors.New("providers file: channel inbox has no providers (messages are stored in the database)")
		}
		if len(entries) == 0 {
			return nil, fmt.Errorf("providers file: channel %s lists no provider", ch)
		}
		if err := check(ch, entries); err != nil {
			return nil, fmt.Errorf("providers file: channel %s: %w", ch, err)
		}
		f.Channels[ch] = entries
	}
	if len(f.Channels) == 0 {
		return nil, errors.New("providers file: no channel")
	}
	return f, nil
}

func check(ch delivery.Channel, entries []Entry) error {
	names := map[string]bool{}
	for i := range entries {
		e := &entries[i]
		if !name.MatchString(e.Name) {
			return fmt.Errorf("entry %d: name must be 1-63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit", i+1)
		}
		if names[e.Name] {
			return fmt.Errorf("entry %s: name used twice", e.Name)
		}
		names[e.Name] = true
		if !slices.Contains(providers[ch], e.Provider) {
			return fmt.Errorf("entry %s: provider %q is not one of %s", e.Name, e.Provider, strings.Join(providers[ch], ", "))
		}
		if e.Rate < 0 || e.Burst < 0 || e.BreakerFailures < 0 || e.BreakerCooldown < 0 || e.Port < 0 || e.Port > 65535 {
			return fmt.Errorf("entry %s: rate, burst, breaker_failures, breaker_cooldown and port must not be negative (port at most 65535)", e.Name)
		}
		if err := checkApps(e.Apps, e.Name, "apps"); err != nil {
			return err
		}
		if err := checkApps(e.DeviceApps, e.Name, "device_apps"); err != nil {
			return err
		}
	}
	return nil
}

// checkApps checks one entry's list of apps: no empty or overlong name, none twice.
func checkApps(list []string, entry, field string) error {
	mine := map[string]bool{}
	for _, a := range list {
		if a == "" || len(a) > 255 || strings.ContainsAny(a, "\x00\n") {
			return fmt.Errorf("entry %s: %s holds an empty, overlong or multi-line name", entry, field)
		}
		if mine[a] {
			return fmt.Errorf("entry %s: %s lists %q twice", entry, field, a)
		}
		mine[a] = true
	}
	return nil
}
