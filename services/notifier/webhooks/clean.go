package webhooks

import (
	"regexp"

	"github.com/heraldhq/herald/internal/pgtext"
)

// Limits on what is kept of the providers' text.
const (
	maxEventID = 200
	maxDetail  = 500
)

// addressLike matches any run of text around an @: SMTP answers quote the recipient's address
// ("550 5.1.1 <someone@example.com>: no such user"). Every @ falls in some match.
var addressLike = regexp.MustCompile(`[^\s<>()\[\],;:"'@]*@[^\s<>()\[\],;:"'@]*`)

// clean makes provider text fit to keep: anything that looks like an email address redacted,
// then one line of valid UTF-8 without control characters (PostgreSQL refuses NUL), at most max
// bytes.
func clean(s string, max int) string {
	return pgtext.Line(addressLike.ReplaceAllString(s, "[redacted]"), max)
}

// validID reports whether s can serve as a provider's id as it is: short printable text without
// an @.
func validID(s string) bool {
	return s != "" && clean(s, maxEventID) == s
}
