package webhooks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/sendgrid/sendgrid-go/helpers/eventwebhook"
)

// TestWrapsEventWebhook shows the two places where sendgrid-go's eventwebhook falls short and
// verifySendGrid and parsePublicKey make up for it. If the library is fixed, this test says so,
// and the wrapping can go.
func TestWrapsEventWebhook(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`[{"event":"delivered","sg_event_id":"e1"}]`)
	digest := sha256.Sum256(append([]byte(ts), body...))
	der, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := base64.StdEncoding.EncodeToString(der)
	if err := verifySendGrid(&key.PublicKey, sig, ts, body, now); err != nil {
		t.Fatalf("genuine signature refused: %v", err)
	}

	appended := base64.StdEncoding.EncodeToString(append(der, 0))
	if ok, err := eventwebhook.VerifySignature(&key.PublicKey, body, appended, ts); !ok || err != nil {
		t.Errorf("eventwebhook now refuses a signature with a byte appended (%v, %v): verifySendGrid need not", ok, err)
	}
	if err := verifySendGrid(&key.PublicKey, appended, ts, body, now); err == nil {
		t.Error("verifySendGrid took a signature with a byte appended")
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaB64 := base64.StdEncoding.EncodeToString(rsaDER)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("eventwebhook no longer panics on an RSA key: parsePublicKey need not recover")
			}
		}()
		_, _ = eventwebhook.ConvertPublicKeyBase64ToECDSA(rsaB64)
	}()
	if _, err := parsePublicKey(rsaB64); err == nil {
		t.Error("parsePublicKey took an RSA key")
	}
}
