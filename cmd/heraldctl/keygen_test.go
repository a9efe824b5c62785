package main

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/linktoken"
)

// offline runs heraldctl with no server, no key and no env file to fall back on.
func offline(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Chdir(t.TempDir()) // no ./.herald/dev.env
	t.Setenv("HERALD_API_KEY", "")
	t.Setenv("HERALD_NOTIFIER_ADDR", "")
	var out bytes.Buffer
	err := run(t.Context(), args, &out)
	return out.String(), err
}

// TestKeygen: keygen prints keys the notifier takes, a different one each time, without a
// server or a key.
func TestKeygen(t *testing.T) {
	seen := map[string]bool{}
	for _, args := range [][]string{
		{"keygen"},
		{"keygen"},
		// Flags that point at a server are ignored: nothing is dialled.
		{"--addr", "127.0.0.1:1", "--env-file", "/nonexistent/dev.env", "keygen"},
	} {
		out, err := offline(t, args...)
		if err != nil {
			t.Fatalf("heraldctl %q: %v", args, err)
		}
		line, ok := strings.CutSuffix(out, "\n")
		if !ok || strings.Contains(line, "\n") {
			t.Fatalf("heraldctl %q printed %q, want one line", args, out)
		}
		if _, err := appkey.Parse(line); err != nil {
			t.Errorf("heraldctl %q printed %q: %v", args, line, err)
		}
		if seen[line] {
			t.Errorf("heraldctl %q printed the same key twice", args)
		}
		seen[line] = true
	}
}

// TestKeygenSecret: keygen --secret prints 32 random bytes in base64, which a link key and the
// short links' key take as they are.
func TestKeygenSecret(t *testing.T) {
	var secrets []string
	for range 2 {
		out, err := offline(t, "keygen", "--secret")
		if err != nil {
			t.Fatal(err)
		}
		secret := strings.TrimSuffix(out, "\n")
		b, err := base64.StdEncoding.DecodeString(secret)
		if err != nil || len(b) != 32 {
			t.Fatalf("keygen --secret printed %q: %d bytes, %v; want 32 bytes in base64", out, len(b), err)
		}
		keys, err := linktoken.ParseKeys("k1:" + secret)
		if err != nil || len(keys) != 1 || len(keys[0].Secret) != 32 {
			t.Errorf("link keys k1:<secret> = %v, %v", keys, err)
		}
		if _, err := linktoken.New(keys...); err != nil {
			t.Errorf("a link signer with the secret: %v", err)
		}
		secrets = append(secrets, secret)
	}
	if secrets[0] == secrets[1] {
		t.Error("keygen --secret printed the same secret twice")
	}
}

func TestKeygenUsage(t *testing.T) {
	for _, args := range [][]string{{"keygen", "extra"}, {"keygen", "--bits", "128"}} {
		if out, err := offline(t, args...); err == nil {
			t.Errorf("heraldctl %q = %q, want an error", args, out)
		}
	}
	// Other commands still need a key.
	if _, err := offline(t, "queues"); err == nil || !strings.Contains(err.Error(), "no app key") {
		t.Errorf("queues without a key: %v", err)
	}
}
