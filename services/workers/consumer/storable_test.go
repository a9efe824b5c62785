package consumer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStorable(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "400 Bad Request: field to: invalid", 100, "400 Bad Request: field to: invalid"},
		{"NUL", "a\x00b\x00", 100, "ab"},
		{"invalid UTF-8", "a\xffb", 100, "a\uFFFDb"},
		{"cut", "abcdef", 4, "abcd"},
		{"cut inside a rune", "abcé", 4, "abc"},
		{"at the limit", "abcd", 4, "abcd"},
	}
	for _, tt := range tests {
		if got := storable(tt.in, tt.max); got != tt.want {
			t.Errorf("%s: storable(%q, %d) = %q, want %q", tt.name, tt.in, tt.max, got, tt.want)
		}
	}
}

// FuzzStorable checks that any text a provider sends is recorded as text PostgreSQL stores,
// within its bound, and that text already fit is recorded as it is.
func FuzzStorable(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x00b", "\xff\xfe", "é", strings.Repeat("é", 200), "SM0123\x00"} {
		f.Add(s, 64)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = 4 + (max%4096+4096)%4096
		got := storable(s, max)
		if !utf8.ValidString(got) || strings.IndexByte(got, 0) >= 0 || len(got) > max {
			t.Fatalf("storable(%q, %d) = %q", s, max, got)
		}
		if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 && len(s) <= max && got != s {
			t.Fatalf("storable(%q, %d) changed fit text to %q", s, max, got)
		}
		if again := storable(got, max); again != got {
			t.Fatalf("storable is not idempotent: %q then %q", got, again)
		}
	})
}
