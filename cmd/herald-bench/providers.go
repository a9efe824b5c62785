package main

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
// inside the benchmark on loopback.
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

// providers are the four provider fakes, in counting-only mode: each accepted message is
// reported to the tracker, and none is kept.
type providers struct {
	sendgrid *sendgridfake.Fake
	twilio   *twiliofake.Fake
	fcm      *fcmfake.Fake
	apns     *apnsfake.Fake
	// workerArgs and workerEnv point the workers at the fakes.
	workerArgs []string
	workerEnv  []string
}

// startProviders starts the fakes, each answering after latency and reporting what it
// accepted to t, and writes the files the
// workers need (the FCM service-account key, the APNs provider key and the APNs fake's
// certificate) into dir.
func startProviders(dir string, latency time.Duration, t *receiver) (_ *providers, err error) {
	p := &providers{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()

	p.sendgrid = sendgridfake.New(sendgridKey)
	p.sendgrid.CountOnly(t.receiveID)
	p.sendgrid.SetDelay(latency)
	sendgridURL := p.sendgrid.Start()

	p.twilio = twiliofake.New(twilioAccount, twilioToken)
	p.twilio.CountOnly(t.receivePhone)
	p.twilio.SetDelay(latency)
	twilioURL := p.twilio.Start()

	p.fcm = fcmfake.New(fcmProject, fcmToken)
	p.fcm.CountOnly(t.receiveID)
	p.fcm.SetDelay(latency)
	p.fcm.Start()
	fcmKey := filepath.Join(dir, "fcm-service-account.json")
	if err := os.WriteFile(fcmKey, p.fcm.ServiceAccountJSON(), 0o600); err != nil {
		return nil, err
	}

	p.apns = apnsfake.New(apnsTopic)
	p8, key, err := apnsfake.NewAuthKey()
	if err != nil {
		return nil, fmt.Errorf("apns key: %w", err)
	}
	p.apns.TrustKey(apnsTeamID, apnsKeyID, &key.PublicKey)
	p.apns.CountOnly(t.receiveID)
	p.apns.SetDelay(latency)
	apnsURL := p.apns.Start()
	apnsKey := filepath.Join(dir, "apns-key.p8")
	if err := os.WriteFile(apnsKey, p8, 0o600); err != nil {
		return nil, err
	}
	apnsCA := filepath.Join(dir, "apns-fake-ca.pem")
	if err := os.WriteFile(apnsCA, p.apns.CertificatePEM(), 0o600); err != nil {
		return nil, err
	}

	p.workerArgs = []string{
		"--email-provider", "sendgrid", "--sendgrid-base-url", sendgridURL,
		"--sms-provider", "twilio", "--twilio-base-url", twilioURL, "--twilio-account-sid", twilioAccount,
		"--twilio-from", twilioFrom,
		"--android-provider", "fcm", "--fcm-endpoint", p.fcm.Endpoint(), "--fcm-credentials-file", fcmKey,
		"--fcm-project-id", fcmProject,
		"--ios-provider", "apns", "--apns-host", apnsURL, "--apns-topic", apnsTopic,
		"--apns-key-file", apnsKey, "--apns-key-id", apnsKeyID, "--apns-team-id", apnsTeamID,
	}
	p.workerEnv = []string{
		"HERALD_SENDGRID_API_KEY=" + sendgridKey,
		"HERALD_TWILIO_AUTH_TOKEN=" + twilioToken,
		// The workers have no flag for APNs's CA (apns.Config.RootCAs is not exposed), so they
		// verify APNs with the system's roots, which Go on Linux reads from SSL_CERT_FILE when it
		// is set. No other provider of the benchmark uses TLS.
		"SSL_CERT_FILE=" + apnsCA,
		// The Google SDK must never probe the cloud metadata address.
		"GCE_METADATA_HOST=127.0.0.1:9",
	}
	return p, nil
}

func (p *providers) close() {
	if p.sendgrid != nil {
		p.sendgrid.Close()
	}
	if p.twilio != nil {
		p.twilio.Close()
	}
	if p.fcm != nil {
		p.fcm.Close()
	}
	if p.apns != nil {
		p.apns.Close()
	}
}
