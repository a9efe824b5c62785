// Command contacts serves Herald's ContactsService. Every flag has a HERALD_* environment
// fallback (see -h).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/tracing"
	"github.com/heraldhq/herald/services/contacts/daemon"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "contacts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("contacts", flag.ContinueOnError)
	var cfg daemon.Config
	cfg.RegisterFlags(fs)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	dbURLFile := fs.String("database-url-file", "", "file holding --database-url (it carries the password)")
	otlp := fs.String("otlp-endpoint", "", "OpenTelemetry collector (host:port, OTLP/gRPC) to export traces to; empty: no traces")
	otlpInsecure := fs.Bool("otlp-insecure", false, "talk to the OTLP endpoint without TLS")
	pprofAddr := fs.String("pprof-addr", "", "host:port to serve Go's profiles on (/debug/pprof/), apart from the HTTP port; keep it private; empty: none")
	linkKeysFile := fs.String("link-keys-file", "", "file holding --link-keys")
	twilioFile := fs.String("twilio-auth-token-file", "", "file holding --twilio-auth-token")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	var err error
	if cfg.Log, err = cli.Logger(*logLevel); err != nil {
		return err
	}
	if cfg.DatabaseURL, err = cli.Secret(cfg.DatabaseURL, *dbURLFile); err != nil {
		return err
	}
	if cfg.LinkKeys, err = cli.Secret(cfg.LinkKeys, *linkKeysFile); err != nil {
		return err
	}
	if cfg.TwilioAuthToken, err = cli.Secret(cfg.TwilioAuthToken, *twilioFile); err != nil {
		return err
	}
	if err := cli.ServePprof(*pprofAddr); err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	shutdown, err := tracing.Setup(ctx, "herald-contacts", *otlp, *otlpInsecure)
	if err != nil {
		return err
	}
	defer shutdown(context.Background())
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err = <-d.Err():
	}
	d.Close()
	return err
}
