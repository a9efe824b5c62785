package inbox

import (
	"errors"
	"testing"
)

func TestCursor(t *testing.T) {
	for _, seq := range []int64{1, 35, 36, 1 << 40, 1<<63 - 1} {
		got, err := ParseCursor(Cursor(seq))
		if err != nil || got != seq {
			t.Errorf("ParseCursor(Cursor(%d)) = %d, %v", seq, got, err)
		}
	}
	if got, err := ParseCursor(""); got != 0 || err != nil {
		t.Errorf(`ParseCursor("") = %d, %v`, got, err)
	}
	for name, s := range map[string]string{
		"no prefix":      "12",
		"empty":          "s1.",
		"zero":           "s1.0",
		"negative":       "s1.-1",
		"leading zero":   "s1.01",
		"upper case":     "s1.A",
		"overflow":       "s1.zzzzzzzzzzzzz",
		"other version":  "s2.1",
		"trailing space": "s1.1 ",
	} {
		if _, err := ParseCursor(s); !errors.Is(err, ErrBadCursor) {
			t.Errorf("%s: ParseCursor(%q) = %v, want ErrBadCursor", name, s, err)
		}
	}
}

func TestParsePosition(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want int64
		ok   bool
	}{
		"none":         {"", -1, true},
		"zero":         {"0", 0, true},
		"number":       {"42", 42, true},
		"negative":     {"-1", 0, false},
		"plus":         {"+1", 0, false},
		"leading zero": {"01", 0, false},
		"text":         {"abc", 0, false},
		"overflow":     {"99999999999999999999", 0, false},
		"uuid":         {"0190f5c2-4b7e-7c1a-8d2e-3f4a5b6c7d8e", 0, false},
	} {
		got, err := ParsePosition(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("%s: ParsePosition(%q) = %d, %v", name, tc.in, got, err)
		}
	}
}

// FuzzParseCursor: a page token is outside input; whatever it parses to must print back as
// itself, and nothing may panic.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "s1.1", "s1.zz", "s1.", "x", "s1.-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseCursor(s)
		if err != nil || s == "" {
			return
		}
		if n <= 0 || Cursor(n) != s {
			t.Fatalf("ParseCursor(%q) = %d, which prints as %q", s, n, Cursor(n))
		}
	})
}

// FuzzParsePosition: Last-Event-ID is outside input, sent back by any client.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "0", "17", "-1", "1e3", "007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParsePosition(s)
		if err != nil || s == "" {
			return
		}
		if n < 0 {
			t.Fatalf("ParsePosition(%q) = %d", s, n)
		}
	})
}
