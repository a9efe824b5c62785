package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"

	"github.com/heraldhq/herald/internal/appkey"
)

// secretBytes is the size of a generated secret: what link keys need at least (32 bytes), and
// twice what the short links' key needs.
const secretBytes = 32

// keygen runs `heraldctl keygen [--secret]`: it prints a new app key, or with --secret a new
// random secret in base64. It needs no server and no key, so a deployment can make its first
// secrets with it.
func keygen(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	secret := fs.Bool("secret", false, fmt.Sprintf("print %d random bytes in base64 (link keys, the short links' key) instead of an app key", secretBytes))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: heraldctl keygen [--secret] (unexpected %q)", fs.Arg(0))
	}
	if *secret {
		b := make([]byte, secretBytes)
		rand.Read(b)
		_, err := fmt.Fprintln(out, base64.StdEncoding.EncodeToString(b))
		return err
	}
	_, err := fmt.Fprintln(out, appkey.New().String())
	return err
}
