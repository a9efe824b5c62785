package cli

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeDaemon is a Daemon that fails when told to and records that it was closed.
type fakeDaemon struct {
	err    chan error
	closed bool
}

var _ Daemon = (*fakeDaemon)(nil)

func (d *fakeDaemon) Err() <-chan error { return d.err }
func (d *fakeDaemon) Close()            { d.closed = true }

// config is what a service's flags and secrets fill in.
type config struct {
	Addr, DatabaseURL, Token string
	Log                      *slog.Logger
}

func testService(cfg *config, start func(ctx context.Context) (Daemon, error)) Service {
	return Service{
		Name:        "svc",
		Flags:       func(fs *flag.FlagSet) { fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:1", "listen address") },
		DatabaseURL: &cfg.DatabaseURL,
		Secrets:     []SecretFile{{Flag: "token-file", Value: &cfg.Token}},
		Start: func(ctx context.Context, log *slog.Logger) (Daemon, error) {
			cfg.Log = log
			return start(ctx)
		},
	}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunUntilTheDaemonFails: flags and secret files come from the arguments and the HERALD_*
// environment, the service starts with them, and a failure of the running service ends Run
// with that error once the service is closed.
func TestRunUntilTheDaemonFails(t *testing.T) {
	t.Setenv("HERALD_TOKEN_FILE", writeFile(t, "token", "s3cret\n"))
	var cfg config
	d := &fakeDaemon{err: make(chan error, 1)}
	failed := errors.New("listener died")
	err := Run([]string{"--addr", "127.0.0.1:2", "--database-url-file", writeFile(t, "db", "postgres://u:p@h/db\n"),
		"--log-level", "debug"}, testService(&cfg, func(context.Context) (Daemon, error) {
		d.err <- failed
		return d, nil
	}))
	if !errors.Is(err, failed) {
		t.Errorf("Run = %v, want the daemon's error", err)
	}
	if !d.closed {
		t.Error("the daemon was not closed")
	}
	want := config{Addr: "127.0.0.1:2", DatabaseURL: "postgres://u:p@h/db", Token: "s3cret"}
	if cfg.Addr != want.Addr || cfg.DatabaseURL != want.DatabaseURL || cfg.Token != want.Token {
		t.Errorf("the service got %+v, want %+v", cfg, want)
	}
	if cfg.Log == nil || !cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("the service's logger does not log at debug, as --log-level asked")
	}
}

// TestRunUntilSignalled: SIGTERM ends Run without an error, after closing the service; a secret
// given directly wins over its file.
func TestRunUntilSignalled(t *testing.T) {
	cfg := config{Token: "given"}
	d := &fakeDaemon{err: make(chan error)}
	err := Run([]string{"--token-file", writeFile(t, "token", "from the file")}, testService(&cfg, func(ctx context.Context) (Daemon, error) {
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			return nil, err
		}
		return d, nil
	}))
	if err != nil {
		t.Errorf("Run = %v, want nil after SIGTERM", err)
	}
	if !d.closed {
		t.Error("the daemon was not closed")
	}
	if cfg.Token != "given" {
		t.Errorf("token %q, want the one given, not the file's", cfg.Token)
	}
}

// TestRunRefuses: bad flags, a bad log level, an unreadable secret file and a failed start are
// Run's errors, and the service is not started when what comes before it fails. -h lists the
// common flags and the secret files with theirs.
func TestRunRefuses(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		start   error
		want    string
		started bool
		usage   []string
	}{
		{"help", []string{"-h"}, nil, flag.ErrHelp.Error(), false, []string{"-addr string", "-log-level string",
			"-otlp-endpoint string", "-otlp-insecure", "-pprof-addr string",
			"-database-url-file string\n    \tfile holding --database-url (it carries the password)",
			"-token-file string\n    \tfile holding --token\n"}},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope", false, nil},
		{"log level", []string{"--log-level", "loud"}, nil, `log level "loud"`, false, nil},
		{"secret file", []string{"--database-url-file", "/nonexistent/db"}, nil, "read secret file", false, nil},
		{"start", nil, errors.New("database unreachable"), "database unreachable", true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg config
			started := false
			s := testService(&cfg, func(context.Context) (Daemon, error) {
				started = true
				return nil, c.start
			})
			// -h and bad flags print the usage: keep it out of the test's output.
			stderr := os.Stderr
			out, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			os.Stderr = out
			err = Run(c.args, s)
			os.Stderr = stderr
			out.Close()
			printed, rerr := os.ReadFile(out.Name())
			if rerr != nil {
				t.Fatal(rerr)
			}
			for _, u := range c.usage {
				if !strings.Contains(string(printed), u) {
					t.Errorf("the usage lacks %q:\n%s", u, printed)
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Run = %v, want an error with %q", err, c.want)
			}
			if started != c.started {
				t.Errorf("started %v, want %v", started, c.started)
			}
		})
	}
}
