package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/heraldhq/herald/internal/tracing"
)

// Daemon is a started service: Err reports a failure that ends it, Close stops it.
type Daemon interface {
	Err() <-chan error
	Close()
}

// SecretFile is a flag that names a file holding a secret. The file is read into Value only
// when Value is empty: the secret's own flag wins.
type SecretFile struct {
	Flag  string // the flag's name, such as "twilio-auth-token-file"
	Usage string // empty: "file holding --twilio-auth-token"
	Value *string
}

// Service is what Run needs to know of one of Herald's services.
type Service struct {
	// Name is the binary's name: the flag set's, the prefix of Main's errors, and, as
	// herald-<Name>, the service name in traces.
	Name string
	// Flags registers the service's own flags.
	Flags func(*flag.FlagSet)
	// DatabaseURL receives the contents of --database-url-file when it is empty.
	DatabaseURL *string
	// Secrets are the service's other secrets that may come from files.
	Secrets []SecretFile
	// Start starts the service, logging to log; it runs until Close.
	Start func(ctx context.Context, log *slog.Logger) (Daemon, error)
}

// Main runs s with the process's arguments (Run), and exits with status 1 and the error,
// prefixed with the service's name, if it fails.
func Main(s Service) {
	if err := Run(os.Args[1:], s); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		os.Exit(1)
	}
}

// Run is the body of a service's main. It parses args (see Parse) into the service's flags, its
// secret files and the flags every service has (--log-level, --database-url-file,
// --otlp-endpoint, --otlp-insecure, --pprof-addr); reads the secrets; serves the profiles;
// sets up tracing; starts the service and keeps it until SIGINT or SIGTERM, or until it fails;
// then closes it. It returns what failed: the flags (flag.ErrHelp for -h), a secret file, a
// listener, tracing, the start, or the running service.
func Run(args []string, s Service) error {
	fs := flag.NewFlagSet(s.Name, flag.ContinueOnError)
	s.Flags(fs)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	secrets := append([]SecretFile{{Flag: "database-url-file", Usage: "file holding --database-url (it carries the password)",
		Value: s.DatabaseURL}}, s.Secrets...)
	files := make([]*string, len(secrets))
	for i, sf := range secrets {
		if sf.Usage == "" {
			sf.Usage = "file holding --" + strings.TrimSuffix(sf.Flag, "-file")
		}
		files[i] = fs.String(sf.Flag, "", sf.Usage)
	}
	otlp := fs.String("otlp-endpoint", "", "OpenTelemetry collector (host:port, OTLP/gRPC) to export traces to; empty: no traces")
	otlpInsecure := fs.Bool("otlp-insecure", false, "talk to the OTLP endpoint without TLS")
	pprofAddr := fs.String("pprof-addr", "", "host:port to serve Go's profiles on (/debug/pprof/), apart from the HTTP port; keep it private; empty: none")
	if err := Parse(fs, args); err != nil {
		return err
	}
	log, err := Logger(*logLevel)
	if err != nil {
		return err
	}
	for i, sf := range secrets {
		if *sf.Value, err = Secret(*sf.Value, *files[i]); err != nil {
			return err
		}
	}
	if err := ServePprof(*pprofAddr); err != nil {
		return err
	}
	ctx, stop := SignalContext()
	defer stop()
	shutdown, err := tracing.Setup(ctx, "herald-"+s.Name, *otlp, *otlpInsecure)
	if err != nil {
		return err
	}
	defer shutdown(context.Background())
	d, err := s.Start(ctx, log)
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
