// Command workers delivers queued notifications: one JetStream consumer per channel it is told
// to serve (--channels), each calling its configured provider. Every flag has a HERALD_*
// environment fallback (see -h).
package main

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/workers/daemon"
)

func main() {
	var cfg daemon.Config
	cli.Main(service(&cfg, daemon.Start))
}

// service is the workers' service for cli.Main: their flags into cfg, their secrets from files,
// and start to run them.
func service(cfg *daemon.Config, start func(context.Context, daemon.Config) (*daemon.Daemon, error)) cli.Service {
	return cli.Service{
		Name:        "workers",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: &cfg.DatabaseURL,
		Secrets: []cli.SecretFile{
			{Flag: "sendgrid-api-key-file", Usage: "file holding the SendGrid API key", Value: &cfg.SendGridAPIKey},
			{Flag: "contacts-key-file", Value: &cfg.ContactsKey},
			{Flag: "link-keys-file", Value: &cfg.LinkKeys},
			{Flag: "twilio-auth-token-file", Value: &cfg.Twilio.AuthToken},
			{Flag: "twilio-api-secret-file", Value: &cfg.Twilio.APISecret},
			{Flag: "smtp-password-file", Value: &cfg.SMTP.Password},
			{Flag: "apns-cert-password-file", Value: &cfg.APNs.Password},
		},
		Start: func(ctx context.Context, log *slog.Logger) (cli.Daemon, error) {
			cfg.Log = log
			return start(ctx, *cfg)
		},
	}
}
