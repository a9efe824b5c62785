// Package linktoken signs and verifies the tokens in the links Herald puts in front of end users:
// the preference page link, the one-click unsubscribe link, and the in-app inbox's user token. A token is
// "<key id>.<payload>.<mac>": the payload is base64url JSON claims, the mac an HMAC-SHA256 over
// the key id and payload. Several keys can verify at once, so a key can be rotated without
// breaking the links already sent; the first key signs.
//
// The claims are signed, not encrypted: a token reveals the user id or address it is for to
// whoever holds the link, which is the recipient it was sent to.
package linktoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Purposes of a token; a token signed for one is refused for the others.
const (
	Preferences = "prefs"
	Unsubscribe = "unsub"
	// Inbox is a user's short-lived token for their in-app inbox and its live feed, which the
	// app's backend asks the notifier for and hands to the user's browser.
	Inbox = "inbox"
)

// Claims are what a token vouches for.
type Claims struct {
	Purpose string `json:"p"`
	UserID  string `json:"u,omitempty"`
	// Channel and Address identify a recipient who is not a user (unsubscribe only).
	Channel  string `json:"c,omitempty"`
	Address  string `json:"a,omitempty"`
	Category string `json:"k,omitempty"`
	// Expires is a Unix time; zero means the token does not expire (unsubscribe links must keep
	// working for as long as the email may be read).
	Expires int64 `json:"e,omitempty"`
}

// Key is one signing key.
type Key struct {
	ID     string
	Secret []byte
}

// MaxTokenLength bounds what Verify looks at.
const MaxTokenLength = 2048

var keyID = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,32}$`)

// Signer signs with its first key and verifies with any of them.
type Signer struct {
	keys []Key
}

// ParseKeys reads keys written as "id:secret,id:secret" (secret in base64, at least 32 bytes
// decoded), the form the services take in their flags and environment.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, secret, ok := strings.Cut(part, ":")
		if !ok {
			return nil, errors.New("link keys must be id:base64secret")
		}
		b, err := base64.StdEncoding.DecodeString(secret)
		if err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(secret); err != nil {
				return nil, fmt.Errorf("link key %q: secret is not base64", id)
			}
		}
		keys = append(keys, Key{ID: id, Secret: b})
	}
	return keys, nil
}

// ParseSigner returns a Signer of the keys written as ParseKeys reads them: what the services
// make of their --link-keys flag.
func ParseSigner(s string) (*Signer, error) {
	keys, err := ParseKeys(s)
	if err != nil {
		return nil, err
	}
	return New(keys...)
}

// New returns a Signer. Key ids must be short and URL-safe, secrets at least 32 bytes.
func New(keys ...Key) (*Signer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no link signing key")
	}
	for _, k := range keys {
		if !keyID.MatchString(k.ID) {
			return nil, fmt.Errorf("link key id %q: use 1-32 letters, digits, '-' or '_'", k.ID)
		}
		if len(k.Secret) < 32 {
			return nil, fmt.Errorf("link key %q: the secret must be at least 32 bytes", k.ID)
		}
	}
	return &Signer{keys: keys}, nil
}

func mac(k Key, payload string) []byte {
	h := hmac.New(sha256.New, k.Secret)
	h.Write([]byte(k.ID))
	h.Write([]byte{'.'})
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// Sign returns a token for c.
func (s *Signer) Sign(c Claims) string {
	b, _ := json.Marshal(c) // Claims always encodes
	payload := base64.RawURLEncoding.EncodeToString(b)
	k := s.keys[0]
	return k.ID + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac(k, payload))
}

// ErrInvalid is returned for every token that does not verify: malformed, forged, altered,
// signed by an unknown key, of the wrong purpose, or expired. One error for all, so an answer
// never tells a forger which part was wrong.
var ErrInvalid = errors.New("invalid or expired link")

// Verify checks token and returns its claims if it was signed by one of the keys for purpose
// and has not expired at now.
func (s *Signer) Verify(token, purpose string, now time.Time) (Claims, error) {
	if len(token) > MaxTokenLength {
		return Claims{}, ErrInvalid
	}
	id, rest, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Claims{}, ErrInvalid
	}
	verified := false
	for _, k := range s.keys {
		if k.ID == id && hmac.Equal(got, mac(k, payload)) {
			verified = true
		}
	}
	if !verified {
		return Claims{}, ErrInvalid
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrInvalid
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		return Claims{}, ErrInvalid
	}
	if c.Purpose != purpose || (c.Expires != 0 && now.Unix() >= c.Expires) {
		return Claims{}, ErrInvalid
	}
	return c, nil
}
