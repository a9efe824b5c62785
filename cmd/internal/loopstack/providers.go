package loopstack

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldhq/herald/internal/fakes/apnsfake"
	"github.com/heraldhq/herald/internal/fakes/fcmfake"
	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	"github.com/heraldhq/herald/internal/fakes/twiliofake"
)

// Credentials the fakes accept and the workers are given. They are made up: the fakes run
// inside the parent process on loopback.
const (
	sendgridKey   = "SG.herald-bench-key"
	twilioAccount = "AC0123456789abcdef0123456789abcdef"
	twilioToken   = "heraldbenchtoken0123456789"
	twilioFrom    = "+14155550100"
	fcmProject    = "herald-bench"
	fcmToken      = "herald-bench-access-token"
	apnsTopic     = "com.example.herald.bench"
	apnsKeyID     = "BENCHKEY01"
	apnsTeamID    = "BENCHTEAM1"
)

// Providers are the four provider fakes, in counting-only mode: each accepted message is
// reported to the tracker, and none is kept.
type Providers struct {
	SendGrid *sendgridfake.Fake
	// SendGridBackup, when set (AddEmailBackup), is email's second provider.
	SendGridBackup *sendgridfake.Fake
	Twilio         *twiliofake.Fake
	FCM            *fcmfake.Fake
	APNs           *apnsfake.Fake
	// WorkerArgs and WorkerEnv point the workers at the fakes.
	WorkerArgs []string
	WorkerEnv  []string

	sendgridURL string
}

// StartProviders starts the fakes, each answering after latency and reporting what it
// accepted to t, and writes the files the
// workers need (the FCM service-account key, the APNs provider key and the APNs fake's
// certificate) into dir.
func StartProviders(dir string, latency time.Duration, t *Receiver) (_ *Providers, err error) {
	p := &Providers{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	p.SendGrid = sendgridfake.New(sendgridKey)
	p.SendGrid.CountOnly(t.ReceiveID)
	p.SendGrid.SetDelay(latency)
	sendgridURL := p.SendGrid.Start()
	p.sendgridURL = sendgridURL

	p.Twilio = twiliofake.New(twilioAccount, twilioToken)
	p.Twilio.CountOnly(t.ReceivePhone)
	p.Twilio.SetDelay(latency)
	twilioURL := p.Twilio.Start()

	p.FCM = fcmfake.New(fcmProject, fcmToken)
	p.FCM.CountOnly(t.ReceiveID)
	p.FCM.SetDelay(latency)
	p.FCM.Start()
	fcmKey := filepath.Join(dir, "fcm-service-account.json")
	if err := os.WriteFile(fcmKey, p.FCM.ServiceAccountJSON(), 0o600); err != nil {
		return nil, err
	}

	p.APNs = apnsfake.New(apnsTopic)
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		return nil, fmt.Errorf("apns key: %w", err)
	}
	p.APNs.TrustKey(apnsTeamID, apnsKeyID, &key.PublicKey)
	p.APNs.CountOnly(t.ReceiveID)
	p.APNs.SetDelay(latency)
	apnsURL := p.APNs.Start()
	apnsKey := filepath.Join(dir, "apns-key.p8")
	if err := os.WriteFile(apnsKey, p8, 0o600); err != nil {
		return nil, err
	}
	apnsCA := filepath.Join(dir, "apns-fake-ca.pem")
	if err := os.WriteFile(apnsCA, p.APNs.CertificatePEM(), 0o600); err != nil {
		return nil, err
	}

	p.WorkerArgs = []string{
		"--email-provider", "sendgrid", "--sendgrid-base-url", sendgridURL,
		"--sms-provider", "twilio", "--twilio-base-url", twilioURL, "--twilio-account-sid", twilioAccount,
		"--twilio-from", twilioFrom,
		"--android-provider", "fcm", "--fcm-endpoint", p.FCM.Endpoint(), "--fcm-credentials-file", fcmKey,
		"--fcm-project-id", fcmProject,
		"--ios-provider", "apns", "--apns-host", apnsURL, "--apns-topic", apnsTopic,
		"--apns-key-file", apnsKey, "--apns-key-id", apnsKeyID, "--apns-team-id", apnsTeamID,
	}
	p.WorkerEnv = []string{
		"HERALD_SENDGRID_API_KEY=" + sendgridKey,
		"HERALD_TWILIO_AUTH_TOKEN=" + twilioToken,
		// The workers have no flag for APNs's CA (apns.Config.RootCAs is not exposed), so they
		// verify APNs with the system's roots, which Go on Linux reads from SSL_CERT_FILE when it
		// is set. No other provider here uses TLS.
		"SSL_CERT_FILE=" + apnsCA,
		// The Google SDK must never probe the cloud metadata address.
		"GCE_METADATA_HOST=127.0.0.1:9",
	}
	return p, nil
}

// AddEmailBackup starts a second SendGrid fake and points the workers' email at a providers
// file that lists the first fake, then the second, each with a short circuit cooldown so that a
// fault of a few seconds shows both the failover and the way back.
func (p *Providers) AddEmailBackup(dir string, latency time.Duration, t *Receiver) error {
	p.SendGridBackup = sendgridfake.New(sendgridKey)
	p.SendGridBackup.CountOnly(t.ReceiveID)
	p.SendGridBackup.SetDelay(latency)
	backupURL := p.SendGridBackup.Start()
	key := filepath.Join(dir, "sendgrid-key")
	if err := os.WriteFile(key, []byte(sendgridKey), 0o600); err != nil {
		return err
	}
	file := filepath.Join(dir, "providers.yaml")
	yaml := fmt.Sprintf(`email:
  - name: primary
    provider: sendgrid
    api_key_file: %[1]s
    base_url: %[2]s
    from: herald@example.com
    breaker_failures: 5
    breaker_cooldown: 1s
  - name: backup
    provider: sendgrid
    api_key_file: %[1]s
    base_url: %[3]s
    from: herald@example.com
    breaker_failures: 5
    breaker_cooldown: 1s
`, key, p.sendgridURL, backupURL)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return err
	}
	p.WorkerArgs = append(p.WorkerArgs, "--providers-file", file)
	return nil
}

// Close stops the fakes.
func (p *Providers) Close() {
	if p.SendGrid != nil {
		p.SendGrid.Close()
	}
	if p.SendGridBackup != nil {
		p.SendGridBackup.Close()
	}
	if p.Twilio != nil {
		p.Twilio.Close()
	}
	if p.FCM != nil {
		p.FCM.Close()
	}
	if p.APNs != nil {
		p.APNs.Close()
	}
}
