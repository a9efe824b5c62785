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

// fakeStore is a Store with a change feed: Revoke appends the key id to the feed, as the
// notifier's store does in the revoking transaction.
type fakeStore struct {
	records map[string]Record
	feed    []string
	lookups int
	err     error
}

var _ Store = (*fakeStore)(nil)

func (s *fakeStore) Key(_ context.Context, id string) (Record, error) {
	s.lookups++
	if s.err != nil {
		return Record{}, s.err
	}
	r, ok := s.records[id]
	if !ok {
		return Record{}, ErrNoKey
	}
	return r, nil
}

func (s *fakeStore) Changes(context.Context, uint64) ([]string, uint64, error) {
	if s.err != nil {
		return nil, 0, s.err
	}
	return s.feed, 0, nil // horizon 0 again: the whole feed each time, which is allowed
}

func (s *fakeStore) revoke(id string) {
	when := time.Now()
	r := s.records[id]
	r.RevokedAt = &when
	s.records[id] = r
	s.feed = append(s.feed, id)
}

func TestAuthenticate(t *testing.T) {
	good, revoked, other := New(), New(), New()
	when := time.Now()
	appID := uuid.New()
	st := &fakeStore{records: map[string]Record{
		good.ID:    {Caller: Caller{AppID: appID, AppName: "billing", KeyID: good.ID}, SecretHash: good.Hash()},
		revoked.ID: {Caller: Caller{AppID: appID, KeyID: revoked.ID}, SecretHash: revoked.Hash(), RevokedAt: &when},
	}}
	a := NewAuthenticator(st)
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

	st.err = errors.New("connection refused")
	if _, err := a.Authenticate(ctx, good.String()); errs.KindOf(err) != errs.Unavailable {
		t.Errorf("store down: %v, want Unavailable", err)
	}
}

// TestRevocationIsImmediate: the cache saves lookups, yet a key revoked through the store is
// refused from the next call on, by every Authenticator (replica).
func TestRevocationIsImmediate(t *testing.T) {
	k := New()
	st := &fakeStore{records: map[string]Record{k.ID: {SecretHash: k.Hash()}}}
	replicas := []*Authenticator{NewAuthenticator(st), NewAuthenticator(st)}
	ctx := context.Background()
	for _, a := range replicas {
		for range 3 {
			if _, err := a.Authenticate(ctx, k.String()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st.lookups != 2 {
		t.Fatalf("%d lookups for 6 calls on 2 replicas, want 2 (one each)", st.lookups)
	}
	st.revoke(k.ID)
	for i, a := range replicas {
		if _, err := a.Authenticate(ctx, k.String()); errs.KindOf(err) != errs.Unauthenticated {
			t.Fatalf("replica %d after the revocation: %v, want Unauthenticated", i, err)
		}
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

func TestAllowContacts(t *testing.T) {
	tests := []struct {
		name        string
		caller      Caller
		read, write bool
	}{
		{"no access (the default)", Caller{}, false, false},
		{"read", Caller{Contacts: ContactsRead}, true, false},
		{"write", Caller{Contacts: ContactsWrite}, true, true},
		{"admin with no access of its own", Caller{Admin: true}, true, true},
		{"a level this code does not know", Caller{Contacts: ContactsAccess(9)}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for need, want := range map[ContactsAccess]bool{ContactsNone: true, ContactsRead: tt.read, ContactsWrite: tt.write} {
				err := tt.caller.AllowContacts(need)
				if (err == nil) != want {
					t.Errorf("AllowContacts(%s) = %v, want allowed %v", need, err, want)
				}
				if err != nil && errs.KindOf(err) != errs.PermissionDenied {
					t.Errorf("AllowContacts(%s) = %v, want PermissionDenied", need, err)
				}
			}
		})
	}
}

func TestParseContactsAccess(t *testing.T) {
	for _, a := range []ContactsAccess{ContactsNone, ContactsRead, ContactsWrite} {
		if got, err := ParseContactsAccess(a.String()); err != nil || got != a {
			t.Errorf("ParseContactsAccess(%q) = %v, %v", a, got, err)
		}
	}
	for _, s := range []string{"", "READ", "admin", "rw"} {
		if _, err := ParseContactsAccess(s); err == nil {
			t.Errorf("ParseContactsAccess(%q) succeeded", s)
		}
	}
}

// BenchmarkAuthenticate is a call's key check from 128 concurrent callers: parse, the coherent
// cache (one poll of an in-memory feed per round of waiting calls, a millisecond apart at
// most) and the hash comparison. ns/op is the throughput's inverse, not one call's latency.
func BenchmarkAuthenticate(b *testing.B) {
	k := New()
	st := &fakeStore{records: map[string]Record{k.ID: {Caller: Caller{AppID: uuid.New(), KeyID: k.ID}, SecretHash: k.Hash()}}}
	a := NewAuthenticator(st)
	tok := k.String()
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, tok); err != nil { // fills the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestLooksLikeKey(t *testing.T) {
	for tok, want := range map[string]bool{
		"hk_0123456789abcdef_secret": true,
		"dev.eyJwIjoiaW5ib3gifQ.mac": false, // an inbox user token
		"":                           false,
	} {
		if got := LooksLikeKey(tok); got != want {
			t.Errorf("LooksLikeKey(%q) = %v, want %v", tok, got, want)
		}
	}
}
