package appkey

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/errs"
)

func TestNewParseRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k := New()
		if !strings.HasPrefix(k.String(), "hk_") {
			t.Fatalf("key %q lacks the hk_ prefix", k)
		}
		got, err := Parse(k.String())
		if err != nil || got != k {
			t.Fatalf("Parse(%q) = %v, %v", k, got, err)
		}
		if seen[k.ID] {
			t.Fatalf("key id %s repeated", k.ID)
		}
		seen[k.ID] = true
	}
}

func TestParseRejects(t *testing.T) {
	k := New().String()
	for name, s := range map[string]string{
		"empty":          "",
		"no prefix":      strings.TrimPrefix(k, "hk_"),
		"other prefix":   "sk_" + strings.TrimPrefix(k, "hk_"),
		"no separator":   strings.Replace(k[3:], "_", "", 1),
		"short secret":   k[:len(k)-1],
		"long secret":    k + "A",
		"bad id":         "hk_ABCDEFGHIJKLMNOP_" + k[len(k)-43:],
		"bad secret":     k[:len(k)-43] + strings.Repeat("!", 43),
		"bearer prefix":  "Bearer " + k,
		"trailing space": k + " ",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(s)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", s)
			}
			if s != "" && strings.Contains(err.Error(), s) {
				t.Errorf("the error repeats the input: %v", err)
			}
		})
	}
}

type lookupFunc struct {
	records map[string]Record
	calls   int
	err     error
}

func (l *lookupFunc) lookup(_ context.Context, id string) (Record, error) {
	l.calls++
	if l.err != nil {
		return Record{}, l.err
	}
	r, ok := l.records[id]
	if !ok {
		return Record{}, ErrNoKey
	}
	return r, nil
}

func TestAuthenticate(t *testing.T) {
	good, revoked, other := New(), New(), New()
	when := time.Now()
	appID := uuid.New()
	l := &lookupFunc{records: map[string]Record{
		good.ID:    {Caller: Caller{AppID: appID, AppName: "billing", KeyID: good.ID}, SecretHash: good.Hash()},
		revoked.ID: {Caller: Caller{AppID: appID, KeyID: revoked.ID}, SecretHash: revoked.Hash(), RevokedAt: &when},
	}}
	a := NewAuthenticator(l.lookup, 0)
	ctx := context.Background()

	c, err := a.Authenticate(ctx, good.String())
	if err != nil || c.AppID != appID || c.AppName != "billing" {
		t.Fatalf("good key: %+v, %v", c, err)
	}
	wrongSecret := Key{ID: good.ID, Secret: other.Secret}
	for name, tok := range map[string]string{
		"malformed":    "nope",
		"unknown id":   other.String(),
		"wrong secret": wrongSecret.String(),
		"revoked":      revoked.String(),
	} {
		_, err := a.Authenticate(ctx, tok)
		if errs.KindOf(err) != errs.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
		// One answer for every failure, so a caller cannot tell which keys exist.
		if err != nil && err.Error() != errBadKey.Error() {
			t.Errorf("%s: answer %q differs from %q", name, err, errBadKey)
		}
	}

	l.err = errors.New("connection refused")
	if _, err := a.Authenticate(ctx, good.String()); errs.KindOf(err) != errs.Unavailable {
		t.Errorf("store down: %v, want Unavailable", err)
	}
}

func TestAuthenticateCache(t *testing.T) {
	k := New()
	l := &lookupFunc{records: map[string]Record{k.ID: {SecretHash: k.Hash()}}}
	a := NewAuthenticator(l.lookup, time.Minute)
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	for range 3 {
		if _, err := a.Authenticate(ctx, k.String()); err != nil {
			t.Fatal(err)
		}
	}
	if l.calls != 1 {
		t.Fatalf("%d lookups within the ttl, want 1", l.calls)
	}
	// Revocation is seen once the cached record expires.
	revokedAt := now
	l.records[k.ID] = Record{SecretHash: k.Hash(), RevokedAt: &revokedAt}
	now = now.Add(time.Minute + time.Second)
	if _, err := a.Authenticate(ctx, k.String()); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("revoked key after the ttl: %v, want Unauthenticated", err)
	}
	if l.calls != 2 {
		t.Fatalf("%d lookups, want 2", l.calls)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(New().String())
	f.Add("hk_")
	f.Add("hk_aaaaaaaaaaaaaaaa_")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			return
		}
		if k.String() != s {
			t.Fatalf("Parse(%q) = %q", s, k)
		}
	})
}
