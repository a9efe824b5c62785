package fcmfake

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// JWTBearerGrant is the grant_type of service-account token requests (RFC 7523).
const JWTBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// The scopes that let an access token send with FCM.
var sendScopes = []string{
	"https://www.googleapis.com/auth/firebase.messaging",
	"https://www.googleapis.com/auth/cloud-platform",
}

// noScopeSuffix marks the access token the fake issues for a grant without a scope that may
// send: the token is good, the send endpoint refuses it with 403, as FCM does.
const noScopeSuffix = ".insufficient-scope"

// maxAssertionLifetime is how long Google lets a JWT-bearer assertion live, and clockSkew how
// far its times may be off.
const (
	maxAssertionLifetime = time.Hour
	clockSkew            = 5 * time.Minute
)

// sharedKey is the RSA key of every fake's service account in this process: generating a
// 2048-bit key takes long under the race detector, and the fakes differ by key id and account.
var sharedKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// serviceAccount is the identity whose key file the fake hands out and whose grants it takes.
type serviceAccount struct {
	project  string
	email    string
	clientID string
	keyID    string
	key      *rsa.PrivateKey
}

func newServiceAccount(project string) *serviceAccount {
	var id [20]byte
	_, _ = rand.Read(id[:])
	var cid [8]byte
	_, _ = rand.Read(cid[:])
	return &serviceAccount{
		project:  project,
		email:    "herald-fcm@" + project + ".iam.gserviceaccount.com",
		clientID: fmt.Sprintf("1%020d", binary.BigEndian.Uint64(cid[:])),
		keyID:    hex.EncodeToString(id[:]),
		key:      sharedKey(),
	}
}

// keyFile returns the account's JSON key file, in the shape the Google Cloud console downloads.
func (sa *serviceAccount) keyFile(tokenURI string) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(sa.key)
	if err != nil {
		panic(err)
	}
	b, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  sa.project,
		"private_key_id":              sa.keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                sa.email,
		"client_id":                   sa.clientID,
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"client_x509_cert_url":        "https://www.googleapis.com/robot/v1/metadata/x509/" + strings.ReplaceAll(sa.email, "@", "%40"),
		"universe_domain":             "googleapis.com",
	}, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

// serveToken is Google's OAuth2 token endpoint for the JWT-bearer grant.
func (f *Fake) serveToken(w http.ResponseWriter, r *http.Request) {
	failStatus := f.token.Take().Fail
	f.mu.Lock()
	revoked := f.revoked
	token := f.accessToken
	f.mu.Unlock()

	if r.Method != http.MethodPost {
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed.")
		return
	}
	if failStatus != 0 {
		code := "internal_failure"
		if failStatus < 500 {
			code = "invalid_request"
		}
		writeOAuthError(w, failStatus, code, http.StatusText(failStatus))
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm == nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Invalid request body.")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != JWTBearerGrant {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	assertion := r.PostForm.Get("assertion")
	if assertion == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: assertion")
		return
	}
	claims, desc := f.account.verify(assertion, "http://"+r.Host+r.URL.Path, time.Now())
	if desc != "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", desc)
		return
	}
	if revoked {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Invalid grant: account not found")
		return
	}
	if !slices.ContainsFunc(strings.Fields(claims.Scope), func(s string) bool { return slices.Contains(sendScopes, s) }) {
		token += noScopeSuffix
	}
	w.Header().Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Iss   string `json:"iss"`
	Scope string `json:"scope"`
	Aud   string `json:"aud"`
	Sub   string `json:"sub"`
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
}

// verify checks a JWT-bearer assertion as Google does and returns its claims, or the
// error_description of an invalid_grant answer.
func (sa *serviceAccount) verify(assertion, audience string, now time.Time) (*jwtClaims, string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return nil, "Invalid JWT: Failed to parse."
	}
	var h jwtHeader
	var c jwtClaims
	if decodeSegment(parts[0], &h) != nil || decodeSegment(parts[1], &c) != nil {
		return nil, "Invalid JWT: Failed to parse."
	}
	if h.Alg != "RS256" {
		return nil, "Invalid JWT Signature."
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, "Invalid JWT Signature."
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if (h.Kid != "" && h.Kid != sa.keyID) || rsa.VerifyPKCS1v15(&sa.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return nil, "Invalid JWT Signature."
	}
	if c.Iss != sa.email {
		return nil, "Invalid grant: account not found"
	}
	if c.Aud != audience {
		return nil, "Invalid JWT: Failed audience check. The expected audience is " + audience + "."
	}
	iat, exp := time.Unix(c.Iat, 0), time.Unix(c.Exp, 0)
	if c.Iat == 0 || c.Exp == 0 || exp.Sub(iat) > maxAssertionLifetime || iat.After(now.Add(clockSkew)) ||
		!exp.After(now.Add(-clockSkew)) {
		return nil, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	}
	if strings.TrimSpace(c.Scope) == "" {
		return nil, "Invalid OAuth scope or ID token audience provided."
	}
	return &c, ""
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}
