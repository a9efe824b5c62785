// Package pgtext says which text PostgreSQL can store, and makes outside text (a provider's
// answer, an error message) fit to store. PostgreSQL refuses invalid UTF-8 and NUL in text and
// jsonb; one such value fails the whole statement it is part of, which may be a batch of other
// rows.
package pgtext

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Valid reports whether PostgreSQL stores s as text: valid UTF-8 without NUL.
func Valid(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// Fit returns s as text PostgreSQL stores, at most max bytes: NUL dropped, invalid bytes as
// U+FFFD, cut at a character boundary. Valid text within max comes back as it is, so Fit suits
// identifiers (a provider's message id) as well as messages.
func Fit(s string, max int) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return cut(strings.ToValidUTF8(s, "\uFFFD"), max)
}

// Line returns s as one line of printable text fit to store and to log, at most max bytes:
// invalid bytes as U+FFFD, each control character (C0 with NUL and line breaks, DEL, C1) as a
// space, leading and trailing space trimmed, and "..." at the end if it was cut (within max).
// It is for a provider's message quoted in an error or an event.
func Line(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	const more = "..."
	if max < len(more) {
		return cut(s, max)
	}
	return cut(s, max-len(more)) + more
}

// cut returns the longest prefix of valid UTF-8 s of at most n bytes that ends at a character
// boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
