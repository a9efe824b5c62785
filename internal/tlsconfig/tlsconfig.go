// Package tlsconfig builds the TLS settings of Herald's gRPC listeners and clients from PEM
// files, for deployments that want mutual TLS between callers and services.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Files names the PEM files of one side of a connection. All empty means plaintext.
type Files struct {
	// CertFile and KeyFile are this side's certificate and key.
	CertFile string
	KeyFile  string
	// CAFile holds the certificates that verify the other side: the client CA on a server
	// (clients must then present a certificate it issued), the server's CA on a client.
	CAFile string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

func (f Files) pool() (*x509.CertPool, error) {
	if f.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("the CA file holds no PEM certificate")
	}
	return pool, nil
}

// ServerOption returns the gRPC server option for f: TLS with f's certificate, requiring and
// verifying client certificates when a CA file is set. It returns nil for plaintext.
func ServerOption(f Files) (grpc.ServerOption, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCAs, err = f.pool(); err != nil {
		return nil, err
	}
	if cfg.ClientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return grpc.Creds(credentials.NewTLS(cfg)), nil
}

// DialOption returns the gRPC dial option for f: TLS verifying the server with f's CA (the
// system's roots when none), presenting f's certificate when set; plaintext when f is empty.
func DialOption(f Files) (grpc.DialOption, error) {
	if !f.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var err error
	if cfg.RootCAs, err = f.pool(); err != nil {
		return nil, err
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// RegisterServerFlags binds f to --tls-cert, --tls-key and --tls-client-ca.
func RegisterServerFlags(fs *flag.FlagSet, f *Files) {
	fs.StringVar(&f.CertFile, "tls-cert", "", "gRPC server certificate (PEM); empty: plaintext")
	fs.StringVar(&f.KeyFile, "tls-key", "", "gRPC server key (PEM)")
	fs.StringVar(&f.CAFile, "tls-client-ca", "", "CA of the client certificates the gRPC server requires (mutual TLS)")
}

// RegisterClientFlags binds f to --<prefix>tls-ca, --<prefix>tls-cert and --<prefix>tls-key,
// for a client of the service named what.
func RegisterClientFlags(fs *flag.FlagSet, f *Files, prefix, what string) {
	fs.StringVar(&f.CAFile, prefix+"tls-ca", "", "CA that verifies the "+what+"'s certificate; empty with no cert: plaintext")
	fs.StringVar(&f.CertFile, prefix+"tls-cert", "", "client certificate presented to the "+what+" (mutual TLS)")
	fs.StringVar(&f.KeyFile, prefix+"tls-key", "", "client key for the "+what)
}
