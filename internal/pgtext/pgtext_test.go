package pgtext

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{"": true, "ok é": true, "a\x00b": false, "a\xffb": false, "\u0085": true} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestFit(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "400 Bad Request: field to: invalid", 100, "400 Bad Request: field to: invalid"},
		{"NUL", "a\x00b\x00", 100, "ab"},
		{"invalid UTF-8", "a\xffb", 100, "a\uFFFDb"},
		{"control characters kept", "a\nb\u0085", 100, "a\nb\u0085"},
		{"cut", "abcdef", 4, "abcd"},
		{"cut inside a character", "abcé", 4, "abc"},
		{"at the limit", "abcd", 4, "abcd"},
	}
	for _, tt := range tests {
		if got := Fit(tt.in, tt.max); got != tt.want {
			t.Errorf("%s: Fit(%q, %d) = %q, want %q", tt.name, tt.in, tt.max, got, tt.want)
		}
	}
}

func TestLine(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "550 no such user", 100, "550 no such user"},
		{"lines", " 550 no\r\nsuch\tuser\n", 100, "550 no  such user"},
		{"C1 and DEL", "a\u0080b\x7fc", 100, "a b c"},
		{"invalid UTF-8", "a\xffb", 100, "a\uFFFDb"},
		{"cut", "abcdefghij", 8, "abcde..."},
		{"cut inside a character", "abcdéfgh", 8, "abcd..."},
		{"tiny bound", "abcdef", 2, "ab"},
	}
	for _, tt := range tests {
		if got := Line(tt.in, tt.max); got != tt.want {
			t.Errorf("%s: Line(%q, %d) = %q, want %q", tt.name, tt.in, tt.max, got, tt.want)
		}
	}
}

// FuzzFit checks that any text comes out as text PostgreSQL stores, within its bound, that text
// already fit comes out as it is, and that Line's is one printable line.
func FuzzFit(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x00b", "\xff\xfe", "é", strings.Repeat("é", 200), "SM0123\x00", "a\u0080\u2028b"} {
		f.Add(s, 64)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = (max%4096 + 4096) % 4096
		got := Fit(s, max)
		if !Valid(got) || len(got) > max {
			t.Fatalf("Fit(%q, %d) = %q", s, max, got)
		}
		if Valid(s) && len(s) <= max && got != s {
			t.Fatalf("Fit(%q, %d) changed fit text to %q", s, max, got)
		}
		if again := Fit(got, max); again != got {
			t.Fatalf("Fit is not idempotent: %q then %q", got, again)
		}
		line := Line(s, max)
		if !utf8.ValidString(line) || len(line) > max || strings.ContainsFunc(line, unicode.IsControl) {
			t.Fatalf("Line(%q, %d) = %q", s, max, line)
		}
	})
}
