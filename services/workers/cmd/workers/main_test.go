package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/workers/daemon"
)

// TestSecretFiles: each secret's -file flag reads the file into that secret, trimmed, so no
// secret needs to be on the command line or in the environment.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	var got daemon.Config
	stop := errors.New("started")
	var cfg daemon.Config
	svc := service(&cfg, func(_ context.Context, c daemon.Config) (*daemon.Daemon, error) {
		got = c
		return nil, stop
	})
	want := map[string]*string{
		"database-url-file":       &got.DatabaseURL,
		"sendgrid-api-key-file":   &got.SendGridAPIKey,
		"contacts-key-file":       &got.ContactsKey,
		"link-keys-file":          &got.LinkKeys,
		"twilio-auth-token-file":  &got.Twilio.AuthToken,
		"twilio-api-secret-file":  &got.Twilio.APISecret,
		"smtp-password-file":      &got.SMTP.Password,
		"apns-cert-password-file": &got.APNs.Password,
	}
	var args []string
	for flag := range want {
		file := filepath.Join(dir, flag)
		if err := os.WriteFile(file, []byte(" secret of "+flag+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--"+flag, file)
	}
	if err := cli.Run(args, svc); !errors.Is(err, stop) {
		t.Fatalf("Run = %v, want the start's error", err)
	}
	for flag, field := range want {
		if *field != "secret of "+flag {
			t.Errorf("--%s gave %q", flag, *field)
		}
	}
}
