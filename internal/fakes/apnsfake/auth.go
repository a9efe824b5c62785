package apnsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"time"
)

// ProviderTokenLifetime is how long APNs accepts a provider token after its iat.
const ProviderTokenLifetime = time.Hour

// maxClockSkew is how far in the future a token's iat may lie before the fake calls the token
// invalid.
const maxClockSkew = time.Minute

type trustedKey struct {
	teamID string
	pub    *ecdsa.PublicKey
}

// auth is how a request authenticated.
type auth struct {
	method    string // "token" or "certificate"
	keyID     string
	certTopic string
}

// authenticate checks the provider token, or else the client certificate, and returns the
// APNs reason for refusing the request ("" when it is authenticated).
func (f *Fake) authenticate(r *http.Request) (auth, string) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, bearer, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "bearer") || bearer == "" {
			return auth{}, "InvalidProviderToken"
		}
		return f.verifyToken(bearer)
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		topic := certTopic(r.TLS.VerifiedChains[0][0])
		if topic == "" {
			return auth{}, "BadCertificate"
		}
		return auth{method: "certificate", certTopic: topic}, ""
	}
	return auth{}, "MissingProviderToken"
}

// verifyToken checks an ES256 provider token: the kid names a trusted key, iss is that key's
// team, the signature is the key's, and iat is within the last hour.
func (f *Fake) verifyToken(bearer string) (auth, string) {
	f.mu.Lock()
	v, ok := f.verified[bearer]
	f.mu.Unlock()
	if !ok {
		var reason string
		if v, reason = f.verifySignature(bearer); reason != "" {
			return auth{}, reason
		}
	}
	f.mu.Lock()
	key, known := f.keys[v.keyID]
	expired := f.expiredTokens[bearer]
	f.mu.Unlock()
	now := time.Now()
	switch {
	case !known || key.pub != v.pub: // a key removed or replaced since
		return auth{}, "InvalidProviderToken"
	case v.iat.After(now.Add(maxClockSkew)):
		return auth{}, "InvalidProviderToken"
	case expired || now.Sub(v.iat) > ProviderTokenLifetime:
		return auth{}, "ExpiredProviderToken"
	}
	f.mu.Lock()
	f.seenTokens[bearer] = true
	f.mu.Unlock()
	return auth{method: "token", keyID: v.keyID}, ""
}

// verifiedToken is what a token's verified signature vouches for.
type verifiedToken struct {
	keyID string
	pub   *ecdsa.PublicKey
	iat   time.Time
}

// verifySignature checks a token's form and signature, and remembers the tokens that pass:
// providers send the same token for most of an hour, and an ECDSA verification per request
// would make the fake, not the sender, what a load test measures.
func (f *Fake) verifySignature(bearer string) (verifiedToken, string) {
	parts := strings.Split(bearer, ".")
	if len(parts) != 3 {
		return verifiedToken{}, "InvalidProviderToken"
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss string   `json:"iss"`
		Iat *float64 `json:"iat"`
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &claims) != nil {
		return verifiedToken{}, "InvalidProviderToken"
	}
	f.mu.Lock()
	key, known := f.keys[hdr.Kid]
	f.mu.Unlock()
	if hdr.Alg != "ES256" || !known || claims.Iss != key.teamID || claims.Iat == nil {
		return verifiedToken{}, "InvalidProviderToken"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return verifiedToken{}, "InvalidProviderToken"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key.pub, digest[:], rr, ss) {
		return verifiedToken{}, "InvalidProviderToken"
	}
	v := verifiedToken{keyID: hdr.Kid, pub: key.pub, iat: time.Unix(int64(*claims.Iat), 0)}
	f.mu.Lock()
	if len(f.verified) >= maxVerified {
		clear(f.verified)
	}
	f.verified[bearer] = v
	f.mu.Unlock()
	return v, ""
}

// maxVerified bounds the tokens the fake remembers as verified.
const maxVerified = 1000

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// NewAuthKey generates a provider authentication key like the .p8 files Apple issues: a P-256
// private key in a PKCS #8 PEM block. It returns the PEM and the key.
func NewAuthKey() (p8 []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key, nil
}

// oidUID is the subject attribute (userId) in which Apple's push certificates carry the topic.
var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

func certTopic(c *x509.Certificate) string {
	for _, n := range c.Subject.Names {
		if n.Type.Equal(oidUID) {
			if s, ok := n.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// CA is a certificate authority that issues client certificates shaped like Apple's push
// certificates, for certificate-based authentication against the fake.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a certificate authority with a fresh P-256 key.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "apnsfake Worldwide Developer Relations CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key}, nil
}

// Pool returns a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ClientCert is an issued client certificate, as a tls.Certificate and as PEM.
type ClientCert struct {
	Certificate tls.Certificate
	CertPEM     []byte
	KeyPEM      []byte // PKCS #8
}

// Issue returns a client certificate for topic (the app's bundle id), valid until notAfter
// (24 hours from now when zero). Like Apple's, its subject carries the topic as UID and in
// the common name.
func (ca *CA) Issue(topic string, notAfter time.Time) (*ClientCert, error) {
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{CommonName: "Apple Push Services: " + topic, Country: []string{"US"}}
	if topic != "" {
		subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidUID, Value: topic}}
	}
	notBefore := time.Now().Add(-time.Hour)
	if notBefore.After(notAfter) {
		notBefore = notAfter.Add(-time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	cc := &ClientCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	cc.Certificate, err = tls.X509KeyPair(cc.CertPEM, cc.KeyPEM)
	if err != nil {
		return nil, err
	}
	return cc, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
