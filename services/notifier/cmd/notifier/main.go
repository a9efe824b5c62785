// Command notifier serves Herald's NotificationService, TemplateService and AdminService and
// runs the reconciler. Every flag has a HERALD_* environment fallback (see -h).
package main

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/notifier/daemon"
)

func main() {
	var cfg daemon.Config
	cli.Main(cli.Service{
		Name:        "notifier",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: &cfg.DatabaseURL,
		Secrets: []cli.SecretFile{
			{Flag: "bootstrap-key-file", Usage: "file holding the bootstrap key (instead of --bootstrap-key)", Value: &cfg.BootstrapKey},
			{Flag: "contacts-key-file", Value: &cfg.ContactsKey},
			{Flag: "sendgrid-webhook-public-key-file", Value: &cfg.SendGridWebhookKey},
			{Flag: "twilio-auth-token-file", Value: &cfg.TwilioAuthToken},
			{Flag: "link-keys-file", Value: &cfg.Inbox.LinkKeys},
		},
		Start: func(ctx context.Context, log *slog.Logger) (cli.Daemon, error) {
			cfg.Log = log
			return daemon.Start(ctx, cfg)
		},
	})
}
