package route_test

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers/route"
)

const example = `
email:
  - name: primary
    provider: sendgrid
    api_key_file: /run/secrets/sendgrid
    from: news@example.com
    from_name: Example
    rate: 100
    burst: 20
    breaker_failures: 3
    breaker_cooldown: 10s
  - name: backup
    provider: smtp
    host: smtp.example.com
    port: 587
    tls: starttls
    username: herald
    password_file: /run/secrets/smtp
    from: news@example.com
ios:
  - name: shop
    provider: apns
    topic: com.example.shop
    device_apps: [com.example.shop]
    apps: [shop]
    key_file: /run/secrets/shop.p8
    key_id: ABC123DEFG
    team_id: DEF123GHIJ
  - name: news
    provider: apns
    topic: com.example.news
    device_apps: [com.example.news]
    p12_file: /run/secrets/news.p12
    cert_password_file: /run/secrets/news.pass
    host: development
`

func TestParse(t *testing.T) {
	t.Parallel()
	f, err := route.Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	email := f.Channels[delivery.Email]
	if len(email) != 2 || email[0].Label() != "sendgrid/primary" || email[1].Label() != "smtp/backup" {
		t.Fatalf("email routes %+v", email)
	}
	if e := email[0]; e.APIKeyFile != "/run/secrets/sendgrid" || e.Rate != 100 || e.Burst != 20 ||
		e.BreakerFailures != 3 || e.BreakerCooldown != 10*time.Second || e.FromName != "Example" {
		t.Errorf("primary %+v", e)
	}
	if e := email[1]; e.Host != "smtp.example.com" || e.Port != 587 || e.PasswordFile != "/run/secrets/smtp" {
		t.Errorf("backup %+v", e)
	}
	ios := f.Channels[delivery.IOS]
	if len(ios) != 2 || ios[0].Topic != "com.example.shop" || ios[0].DeviceApps[0] != "com.example.shop" ||
		ios[0].Apps[0] != "shop" || ios[1].Host != "development" || ios[1].P12File == "" {
		t.Errorf("ios routes %+v", ios)
	}
	if _, ok := f.Channels[delivery.SMS]; ok {
		t.Error("sms appeared from nowhere")
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"empty", "", "empty"},
		{"no channel", "{}", "no channel"},
		{"unknown channel", "fax:\n  - {name: a, provider: sim}", "channel"},
		{"a channel with no provider", "email: []", "lists no provider"},
		{"unknown field", "email:\n  - {name: a, provider: sendgrid, from: x@example.com, colour: red}", "colour"},
		{"an inline secret", "email:\n  - {name: a, provider: sendgrid, api_key: SG.secret}", "api_key"},
		{"provider on the wrong channel", "sms:\n  - {name: a, provider: sendgrid}", `provider "sendgrid" is not one of twilio, sim`},
		{"unknown provider", "email:\n  - {name: a, provider: mailgun}", "is not one of"},
		{"no name", "email:\n  - {provider: smtp}", "name must be"},
		{"a name that is no label", "email:\n  - {name: A B, provider: smtp}", "name must be"},
		{"a name twice", "email:\n  - {name: a, provider: smtp}\n  - {name: a, provider: sendgrid}", "name used twice"},
		{"negative rate", "email:\n  - {name: a, provider: smtp, rate: -1}", "must not be negative"},
		{"a port too large", "email:\n  - {name: a, provider: smtp, port: 70000}", "port"},
		{"an empty app", "ios:\n  - {name: a, provider: apns, device_apps: ['']}", "empty"},
		{"an app twice", "ios:\n  - {name: a, provider: apns, apps: [shop, shop]}", "twice"},
		{"a bad duration", "email:\n  - {name: a, provider: smtp, breaker_cooldown: soon}", "providers file"},
		{"not a map", "- email", "providers file"},
		{"two documents", "email:\n  - {name: a, provider: smtp}\n---\nsms: []", "more than one document"},
		{"too large", "# " + strings.Repeat("x", 1<<20), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := route.Parse([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// FuzzParse: the parser never panics, and whatever it accepts is a list per channel of named
// entries of that channel's providers, unique by name.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("email:\n  - {name: a, provider: smtp}\n"))
	f.Add([]byte("sms:\n  - name: a\n    provider: twilio\n    apps: [x, y]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := route.Parse(data)
		if err != nil {
			return
		}
		if len(file.Channels) == 0 {
			t.Fatal("accepted a file with no channel")
		}
		for ch, entries := range file.Channels {
			if len(entries) == 0 {
				t.Fatalf("channel %s accepted with no entry", ch)
			}
			names := map[string]bool{}
			for _, e := range entries {
				if e.Name == "" || names[e.Name] || e.Provider == "" || e.Rate < 0 {
					t.Fatalf("channel %s: accepted entry %+v", ch, e)
				}
				names[e.Name] = true
			}
		}
	})
}
