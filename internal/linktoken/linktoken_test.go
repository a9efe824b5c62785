package linktoken

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func signer(t testing.TB, keys ...Key) *Signer {
	t.Helper()
	s, err := New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	k1 = Key{ID: "k1", Secret: bytes.Repeat([]byte{1}, 32)}
	k2 = Key{ID: "k2", Secret: bytes.Repeat([]byte{2}, 32)}
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := signer(t, k1)
	c := Claims{Purpose: Preferences, UserID: "u-1", Expires: now.Add(time.Hour).Unix()}
	tok := s.Sign(c)
	got, err := s.Verify(tok, Preferences, now)
	if err != nil || got != c {
		t.Fatalf("Verify = %+v, %v", got, err)
	}

	payload := strings.Split(tok, ".")[1]
	otherPayload := strings.Split(s.Sign(Claims{Purpose: Preferences, UserID: "u-2", Expires: c.Expires}), ".")[1]
	for name, tc := range map[string]struct {
		token   string
		purpose string
		now     time.Time
	}{
		"expired":          {tok, Preferences, now.Add(time.Hour)},
		"wrong purpose":    {tok, Unsubscribe, now},
		"altered payload":  {strings.Replace(tok, payload, otherPayload, 1), Preferences, now},
		"truncated mac":    {tok[:len(tok)-2], Preferences, now},
		"unknown key":      {signer(t, k2).Sign(c), Preferences, now},
		"key id swapped":   {"k2" + tok[2:], Preferences, now},
		"no dots":          {"garbage", Preferences, now},
		"empty":            {"", Preferences, now},
		"too long":         {tok + strings.Repeat("A", MaxTokenLength), Preferences, now},
		"forged unsub key": {signer(t, Key{ID: "k1", Secret: bytes.Repeat([]byte{9}, 32)}).Sign(c), Preferences, now},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Verify(tc.token, tc.purpose, tc.now); err != ErrInvalid {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	now := time.Now()
	old := signer(t, k1).Sign(Claims{Purpose: Unsubscribe, Channel: "email", Address: "a@example.com"})
	rotated := signer(t, k2, k1)
	if _, err := rotated.Verify(old, Unsubscribe, now); err != nil {
		t.Fatalf("a token of the previous key: %v", err)
	}
	if !strings.HasPrefix(rotated.Sign(Claims{Purpose: Unsubscribe}), "k2.") {
		t.Fatal("the first key must sign")
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys("a:" + strings.Repeat("QUFB", 11) + ", b:" + strings.Repeat("QkJC", 11))
	if err != nil || len(keys) != 2 || keys[1].ID != "b" || len(keys[0].Secret) != 33 {
		t.Fatalf("ParseKeys = %v, %v", keys, err)
	}
	if _, err := New(keys...); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Key{ID: "short", Secret: []byte("x")}); err == nil {
		t.Fatal("a short secret was accepted")
	}
	if _, err := ParseKeys("nocolon"); err == nil {
		t.Fatal("a key without id was accepted")
	}
}

func FuzzVerify(f *testing.F) {
	s := signer(f, k1, k2)
	f.Add(s.Sign(Claims{Purpose: Preferences, UserID: "u"}))
	f.Add("k1..")
	f.Add("k1.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(tok, Preferences, time.Unix(0, 0))
		if err == nil && c.Purpose != Preferences {
			t.Fatalf("verified a token of purpose %q", c.Purpose)
		}
	})
}

func TestParseSigner(t *testing.T) {
	s, err := ParseSigner("a:" + strings.Repeat("QUFB", 11))
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Sign(Claims{Purpose: Inbox, UserID: "ada"})
	if c, err := s.Verify(tok, Inbox, time.Now()); err != nil || c.UserID != "ada" {
		t.Errorf("Verify = %+v, %v", c, err)
	}
	for _, bad := range []string{"", "nocolon", "a:short"} {
		if _, err := ParseSigner(bad); err == nil {
			t.Errorf("ParseSigner(%q) took it", bad)
		}
	}
}
