package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
)

// pki writes a CA and certificates it issued into dir, returning the files.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue returns certificate and key files for name, for servers (on 127.0.0.1) or clients.
func (p *pki) issue(t *testing.T, name string, server bool, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

// TestMutualTLS: a notifier with a client CA refuses plaintext and certificate-less callers and
// serves callers presenting a certificate the CA issued.
func TestMutualTLS(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	p := newPKI(t)
	serverCert, serverKey := p.issue(t, "notifier", true, 2)
	clientCert, clientKey := p.issue(t, "billing", false, 3)
	d, err := notifierd.Start(context.Background(), notifierd.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DatabaseURL: s.dbURL, NATSURL: s.natsURL,
		ContactsAddr: s.contacts.GRPCAddr(), ContactsKey: s.contactsKey, RepublishAfter: time.Minute, ReconcileInterval: time.Second,
		TLS: tlsconfig.Files{CertFile: serverCert, KeyFile: serverKey, CAFile: p.caFile},
		Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func(creds grpc.DialOption) error {
		conn, err := grpc.NewClient(d.GRPCAddr(), creds, appkey.Credentials(s.key))
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = heraldv1.NewNotificationServiceClient(conn).Send(ctx, emailRequest("ada@example.com"))
		return err
	}
	if err := send(grpc.WithTransportCredentials(insecure.NewCredentials())); err == nil {
		t.Fatal("a plaintext caller was served")
	}
	noCert, err := tlsconfig.DialOption(tlsconfig.Files{CAFile: p.caFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(noCert); err == nil {
		t.Fatal("a caller without a client certificate was served")
	}
	withCert, err := tlsconfig.DialOption(tlsconfig.Files{CAFile: p.caFile, CertFile: clientCert, KeyFile: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(withCert); err != nil {
		t.Fatalf("a caller with a client certificate: %v", err)
	}
}
