package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	ok := `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","at":"2030-01-02T03:04:05Z","channel":"sms","address":"+14155550123","reason":"stop"}`
	tests := []struct {
		name, data string
		valid      bool
	}{
		{"as published", ok, true},
		{"not JSON", `{"id":`, false},
		{"not an object", `[1]`, false},
		{"a NUL in the address", strings.Replace(ok, "+14155550123", `+1415\u000055`, 1), false},
		{"an unknown channel", strings.Replace(ok, `"sms"`, `"fax"`, 1), false},
		{"a user id too long", `{"user_id":"` + strings.Repeat("u", maxUserID+1) + `"}`, false},
		{"a user id at its limit", `{"user_id":"` + strings.Repeat("u", maxUserID) + `"}`, true},
		{"too large", `{"reason":"x","pad":"` + strings.Repeat(" ", maxEvent) + `"}`, false},
	}
	for _, tt := range tests {
		_, err := Decode([]byte(tt.data))
		if (err == nil) != tt.valid || err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v", tt.name, err)
		}
	}
}

// FuzzDecode checks that an event decodes, or is malformed; and that one that decodes is
// published again (re-encoded) as the same event.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","at":"2030-01-02T03:04:05.123456789+01:00","delivery_id":"01890a5d-ac96-774b-bcce-b302099a8058","user_id":"u1","channel":"ios","address":"abcd","category":"news","reason":"unregistered","since":"2029-12-31T23:59:59Z"}`,
		`{"id":"00000000-0000-0000-0000-000000000000","at":"0001-01-01T00:00:00Z"}`,
		`{"user_id":"u\u0000"}`,
		`{"channel":"email","address":"\ud800@example.com"}`,
		`{"at":"9999-12-31T23:59:59.999999999-23:59"}`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%q) = %v, not ErrMalformed", data, err)
			}
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			return // a time json cannot write (a year past 9999): never published
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("%q decoded, then re-encoded as %s, which does not decode: %v", data, b, err)
		}
		if !sameEvent(e, again) {
			t.Fatalf("%q decoded as %+v, then as %+v", data, e, again)
		}
	})
}

func sameEvent(a, b Event) bool {
	if !a.At.Equal(b.At) || !a.Since.Equal(b.Since) {
		return false
	}
	a.At, b.At, a.Since, b.Since = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}
