package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// answer is what the fuzz server says to the next push.
type answer struct {
	status int
	apnsID string
	body   []byte
}

// FuzzAnswer has a fake APNs (HTTP/2 over TLS on loopback) give every answer the fuzzer makes
// up to a real push: any status, apns-id and body. Whatever it says, Send classifies it: 200 is
// sent, with the apns-id (or the delivery id); 410 deactivates the token; anything else fails or
// retries. The error never carries the device token, stays short, and an answer longer than
// maxAnswerBytes is not read past it.
func FuzzAnswer(f *testing.F) {
	var (
		mu  sync.Mutex
		cur answer
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := cur
		mu.Unlock()
		if a.apnsID != "" {
			w.Header().Set("apns-id", a.apnsID)
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	f.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(Config{Topic: "com.example.app", Host: srv.URL, RootCAs: roots, KeyID: "ABC123DEFG", TeamID: "DEF123GHIJ",
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)

	const device = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, a := range []answer{
		{200, "01890a5d-ac96-774b-bcce-b302099a8057", nil},
		{200, "", []byte(`{}`)},
		{200, "", []byte(`0`)}, // once read as a failure: the accepted push was pushed again
		{410, "", []byte(`{"reason":"Unregistered","timestamp":1700000000000}`)},
		{410, "", []byte(`{"reason":"Unregistered","timestamp":"soon"}`)},
		{400, "", []byte(`{"reason":"BadDeviceToken"}`)},
		{403, "", []byte(`{"reason":"InvalidProviderToken"}`)},
		{429, "", []byte(`{"reason":"TooManyRequests"}`)},
		{500, "", []byte(`{"reason":"` + device + ` \u0000 \ud800"}`)},
		{503, "", []byte(`<html>` + device + `</html>`)},
		{413, "", []byte(`{"reason":"PayloadTooLarge"}` + strings.Repeat(" ", maxAnswerBytes))},
	} {
		f.Add(a.status, a.apnsID, a.body)
	}
	f.Fuzz(func(t *testing.T, status int, apnsID string, body []byte) {
		status = 200 + (status%400+400)%400 // 1xx are not final answers
		if !httpguts.ValidHeaderFieldValue(apnsID) {
			apnsID = ""
		}
		mu.Lock()
		cur = answer{status, apnsID, body}
		mu.Unlock()
		m := &workers.Message{DeliveryID: uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8058"), Channel: delivery.IOS,
			To: device, Content: delivery.Content{Title: "fuzz title", Body: "fuzz body"}, ExpiresAt: time.Now().Add(time.Hour)}
		res, err := s.Send(t.Context(), m)
		if status == http.StatusOK {
			want := strings.TrimSpace(apnsID)
			if want == "" {
				want = m.DeliveryID.String()
			}
			if err != nil || res.ProviderMessageID != want {
				t.Fatalf("200 with apns-id %q: %+v, %v", apnsID, res, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("%d answered sent: %+v", status, res)
		}
		o, _, wait := workers.Classify(err)
		var ce *workers.ConfigError
		var perm *workers.PermanentError
		switch {
		case errors.As(err, &ce):
		case o == workers.OutcomeRetry:
		case o == workers.OutcomeFailed && errors.As(err, &perm):
			if (perm.Effect == workers.DeactivateToken) != (status == http.StatusGone) && len(body) <= maxAnswerBytes {
				t.Fatalf("%d %q: %v", status, body, err)
			}
		default:
			t.Fatalf("%d: outcome %v (%v)", status, o, err)
		}
		if wait < 0 {
			t.Fatalf("wait %v", wait)
		}
		if msg := err.Error(); strings.Contains(msg, device) || len(msg) > 1024 {
			t.Fatalf("error %q", msg)
		}
	})
}
