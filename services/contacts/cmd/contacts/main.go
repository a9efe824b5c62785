// Command contacts serves Herald's ContactsService. Every flag has a HERALD_* environment
// fallback (see -h).
package main

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/contacts/daemon"
)

func main() {
	var cfg daemon.Config
	cli.Main(cli.Service{
		Name:        "contacts",
		Flags:       cfg.RegisterFlags,
		DatabaseURL: &cfg.DatabaseURL,
		Secrets: []cli.SecretFile{
			{Flag: "link-keys-file", Value: &cfg.LinkKeys},
			{Flag: "twilio-auth-token-file", Value: &cfg.TwilioAuthToken},
		},
		Start: func(ctx context.Context, log *slog.Logger) (cli.Daemon, error) {
			cfg.Log = log
			return daemon.Start(ctx, cfg)
		},
	})
}
