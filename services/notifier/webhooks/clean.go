package webhooks

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what is kept of the providers' text.
const (
	maxEventID = 200
	maxDetail  = 500
)

// addressLike matches any run of text around an @: SMTP answers quote the recipient's address
// ("550 5.1.1 <someone@example.com>: no such user"). Every @ falls in some match.
var addressLike = regexp.MustCompile(`[^\s<>()\[\],;:"'@]*@[^\s<>()\[\],;:"'@]*`)

// clean makes provider text fit to keep: valid UTF-8 without control characters (PostgreSQL
// refuses NUL), anything that looks like an email address redacted, at most max bytes.
func clean(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = addressLike.ReplaceAllString(s, "[redacted]")
	s = strings.TrimSpace(s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// validID reports whether s can serve as a provider's id as it is: short printable text without
// an @.
func validID(s string) bool {
	return s != "" && clean(s, maxEventID) == s
}
