// Package address validates and normalises the recipient addresses Herald accepts from outside:
// email addresses, phone numbers and push tokens. Each function returns the normalised form, the
// one Herald stores and compares, or an error whose message is a short reason fit for a gRPC
// field violation ("must be ...", "is longer than ..."). The messages never repeat the input:
// addresses are personal data and must not reach errors or logs.
//
// Every function first trims surrounding white space, and every normalised value validates to
// itself, so normalising twice changes nothing.
package address

import (
	"errors"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// Limits on the addresses Herald accepts.
const (
	MaxEmailLength   = 254 // RFC 5321 path limit, minus the angle brackets
	MaxLocalLength   = 64  // RFC 5321 local-part limit
	MaxPhoneLength   = 32  // generous for formatted E.164 (at most 15 digits)
	MinAPNsTokenHex  = 64  // today's APNs tokens are 32 bytes
	MaxAPNsTokenHex  = 200 // Apple says tokens may grow; 100 bytes leaves room
	MaxFCMTokenBytes = 4096
)

var (
	errEmail         = errors.New("must be an email address like name@example.com")
	errEmailTooLong  = errors.New("is longer than 254 characters")
	errLocalTooLong  = errors.New("has more than 64 characters before the @")
	errPhone         = errors.New("must be a phone number in international format like +14155550123")
	errPhoneTooLong  = errors.New("is longer than 32 characters")
	errPhoneInvalid  = errors.New("is not a valid phone number")
	errPhoneExt      = errors.New("must not have an extension")
	errAPNsToken     = errors.New("must be an even number of hexadecimal digits, 64 to 200 of them")
	errFCMTokenEmpty = errors.New("must not be empty")
	errFCMTokenLong  = errors.New("is longer than 4096 bytes")
	errFCMToken      = errors.New("must contain only printable ASCII characters without spaces")
)

// Email returns s as a plain addr-spec (name@example.com) with its domain lower-cased and its
// local part kept as given. It rejects display names, angle brackets, comments, quoted local
// parts, non-ASCII local parts, IP-address and single-label domains; the error says why without
// repeating s.
//
// The domain may be internationalised (Unicode labels are kept, lower-cased, not converted to
// punycode); its labels must be letters, digits and inner hyphens.
func Email(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errEmail
	}
	if len(s) > MaxEmailLength {
		return "", errEmailTooLong
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", errEmail
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", errEmail
	}
	local, domain := s[:at], strings.ToLower(s[at+1:])
	if len(local) > MaxLocalLength {
		return "", errLocalTooLong
	}
	if !dotAtom(local) || !hostname(domain) {
		return "", errEmail
	}
	// Lower-casing can lengthen some Unicode domains.
	if norm := local + "@" + domain; len(norm) <= MaxEmailLength {
		return norm, nil
	}
	return "", errEmailTooLong
}

// dotAtom reports whether s is an RFC 5322 dot-atom of ASCII atext: SMTPUTF8 local parts are
// not deliverable through every provider Herald uses, so they are refused up front.
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// hostname reports whether s is a lower-case domain name of at least two labels whose last label
// is not all digits (so not an IPv4 address). ASCII labels are letters, digits and inner
// hyphens; a label with non-ASCII runes (an IDN U-label) may use any letters, marks and digits.
func hostname(s string) bool {
	if len(s) > 253 || !utf8.ValidString(s) {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			switch {
			case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-':
			case r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)):
			default:
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// Phone returns s in E.164 form (+14155550123). s must be in international form: a leading '+'
// and the country code, then digits with optional spaces, dots, hyphens and parentheses; there
// is no default region. It returns an error if s is longer than 32 characters, is not in that
// form, has an extension, or is not a valid number for its country.
func Phone(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxPhoneLength {
		return "", errPhoneTooLong
	}
	if len(s) < 2 || s[0] != '+' {
		return "", errPhone
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9') && strings.IndexByte(" .-()", c) < 0 {
			// Letters would let phonenumbers read vanity numbers and "ext."; neither belongs in
			// an SMS recipient.
			return "", errPhone
		}
	}
	n, err := phonenumbers.Parse(s, phonenumbers.UNKNOWN_REGION)
	if err != nil {
		return "", errPhone
	}
	if n.GetExtension() != "" {
		return "", errPhoneExt
	}
	if !phonenumbers.IsValidNumber(n) {
		return "", errPhoneInvalid
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

// APNsToken returns s, an APNs device token, in lower case. It returns an error unless s is an
// even number of hexadecimal digits, 64 to 200 of them.
func APNsToken(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) < MinAPNsTokenHex || len(s) > MaxAPNsTokenHex || len(s)%2 != 0 {
		return "", errAPNsToken
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", errAPNsToken
		}
	}
	return strings.ToLower(s), nil
}

// FCMToken returns s, an FCM registration token, unchanged apart from trimming. It returns an
// error if s is empty, longer than 4096 bytes, or has anything but printable ASCII without
// spaces (tokens are URL-safe base64 with ':', '-' and '_').
func FCMToken(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errFCMTokenEmpty
	}
	if len(s) > MaxFCMTokenBytes {
		return "", errFCMTokenLong
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return "", errFCMToken
		}
	}
	return s, nil
}
