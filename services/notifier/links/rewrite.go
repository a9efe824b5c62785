package links

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/heraldhq/herald/internal/templates"
)

// MaxURL is the longest link that is shortened, in bytes; the rest of the web stops at about
// the same length.
const MaxURL = 2048

// Shortener returns the short link that stands for a long one.
type Shortener func(long string) (string, error)

// NoTrackAttr on an <a> keeps its link as it is; the attribute is dropped from the output.
const NoTrackAttr = "data-herald-notrack"

// The opt-out mark that templates' notrack function puts after a URL, as text and as
// html/template escapes it inside an attribute.
var marks = []string{templates.NoTrackMark, "%ee%80%80", "%EE%80%80"}

// Unmark removes every opt-out mark from s. Removing one mark can join the bytes around it
// into another ("\xee%ee%80%80\x80\x80" holds a mark once the escaped one is gone), so it
// removes until none is left; each pass shortens s, so it ends.
func Unmark(s string) string {
	for again := true; again; {
		again = false
		for _, m := range marks {
			if strings.Contains(s, m) {
				s, again = strings.ReplaceAll(s, m, ""), true
			}
		}
	}
	return s
}

// urlPattern finds http(s) URLs in text. A URL ends at white space, at a character that cannot
// appear in one unescaped, or at the opt-out mark.
var urlPattern = regexp.MustCompile(`(?i)\bhttps?://[^\s<>"\x{E000}]+`)

// trimURL drops the punctuation that ends a sentence rather than the URL: trailing ".,;:!?'"
// and closing brackets without an opening one inside the URL.
func trimURL(u string) string {
	for u != "" {
		c := u[len(u)-1]
		switch {
		case strings.IndexByte(".,;:!?'*", c) >= 0:
		case c == ')' && strings.Count(u, "(") < strings.Count(u, ")"):
		case c == ']' && strings.Count(u, "[") < strings.Count(u, "]"):
		case c == '}' && strings.Count(u, "{") < strings.Count(u, "}"):
		default:
			return u
		}
		u = u[:len(u)-1]
	}
	return u
}

// URLError says why a link cannot be shortened. It names the link by its place (the first
// link is 1), never by its text, which may hold secrets.
type URLError struct {
	Index  int
	Reason string
}

func (e *URLError) Error() string {
	return fmt.Sprintf("link %d %s", e.Index, e.Reason)
}

var errNotHTTP = errors.New("is not an http or https URL")

// CheckURL checks that u is an absolute http(s) URL with a host, of at most MaxURL bytes.
func CheckURL(u string) error {
	if len(u) > MaxURL {
		return fmt.Errorf("is %d bytes long; at most %d are allowed", len(u), MaxURL)
	}
	if !utf8.ValidString(u) {
		return errors.New("is not valid UTF-8")
	}
	p, err := url.Parse(u)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	if p.Scheme != "http" && p.Scheme != "https" { // url.Parse lower-cases the scheme
		return errNotHTTP
	}
	if p.Host == "" || p.Hostname() == "" {
		return errors.New("has no host")
	}
	return nil
}

// IsURL reports whether s, whole, looks like an http(s) URL: how push data values are told
// apart from other strings.
func IsURL(s string) bool {
	return hasHTTPScheme(s) && !strings.ContainsAny(s, " \t\r\n")
}

func hasHTTPScheme(s string) bool {
	return len(s) >= 7 && strings.EqualFold(s[:7], "http://") || len(s) >= 8 && strings.EqualFold(s[:8], "https://")
}

// templated reports whether a URL found in template source holds a template action, so it is
// only known once rendered.
func templated(u string) bool { return strings.Contains(u, "{{") || strings.Contains(u, "}}") }

// Text replaces each http(s) URL in s with short's link for it, except URLs followed by the
// opt-out mark, and removes the marks. It returns a *URLError for a URL CheckURL refuses, or
// short's error.
func Text(s string, short Shortener) (string, error) {
	return text(s, short, false)
}

// CheckText checks every URL that Text would shorten in s. With template set, s is template
// source: URLs that hold an action are left to be checked once rendered.
func CheckText(s string, template bool) error {
	_, err := text(s, nil, template)
	return err
}

func text(s string, short Shortener, template bool) (string, error) {
	locs := urlPattern.FindAllStringIndex(s, -1)
	if len(locs) == 0 {
		return Unmark(s), nil
	}
	var b strings.Builder
	last := 0
	for i, loc := range locs {
		start, end := loc[0], loc[1]
		if strings.HasPrefix(s[end:], templates.NoTrackMark) {
			continue // opted out: the mark goes with Unmark below
		}
		u := trimURL(s[start:end])
		if template && templated(u) {
			continue
		}
		if err := CheckURL(u); err != nil {
			return "", &URLError{Index: i + 1, Reason: err.Error()}
		}
		if short == nil {
			continue
		}
		su, err := short(u)
		if err != nil {
			return "", err
		}
		b.WriteString(s[last:start])
		b.WriteString(su)
		last = start + len(u)
	}
	b.WriteString(s[last:])
	return Unmark(b.String()), nil
}

// HTML replaces the http(s) href of each <a> in s with short's link for it, except links whose
// <a> has the NoTrackAttr attribute (which is removed) or whose href ends in the opt-out mark,
// and removes the marks. Everything but the <a> tags it changes is copied byte for byte, so the
// text, scripts and styles of hostile HTML are left exactly as they were. mailto:, tel: and
// relative links are never touched. Errors: as Text's.
func HTML(s string, short Shortener) (string, error) {
	return rewriteHTML(s, short, false)
}

// CheckHTML checks every link that HTML would shorten in s, as CheckText does.
func CheckHTML(s string, template bool) error {
	_, err := rewriteHTML(s, nil, template)
	return err
}

func rewriteHTML(s string, short Shortener, template bool) (string, error) {
	if !strings.Contains(s, "<") {
		return Unmark(s), nil
	}
	var b strings.Builder
	b.Grow(len(s))
	z := html.NewTokenizer(strings.NewReader(s))
	n := 0
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			if z.Err() != io.EOF {
				return "", z.Err() // not with a strings.Reader and no buffer limit
			}
			b.Write(z.Raw()) // an unfinished tag or comment at the end, as it was
			break
		}
		raw := z.Raw()
		if (tt != html.StartTagToken && tt != html.SelfClosingTagToken) || !anchor(raw) {
			b.Write(raw)
			continue
		}
		raw = append([]byte(nil), raw...) // Token reuses the buffer
		tok := z.Token()
		out, changed, err := rewriteAnchor(&tok, short, template, &n)
		if err != nil {
			return "", err
		}
		if changed {
			b.WriteString(out)
		} else {
			b.Write(raw)
		}
	}
	return Unmark(b.String()), nil
}

// anchor reports whether a raw start tag is an <a>.
func anchor(raw []byte) bool {
	return len(raw) > 2 && (raw[1] == 'a' || raw[1] == 'A') &&
		(raw[2] == ' ' || raw[2] == '\t' || raw[2] == '\n' || raw[2] == '\r' || raw[2] == '\f' || raw[2] == '/' || raw[2] == '>')
}

func rewriteAnchor(tok *html.Token, short Shortener, template bool, n *int) (string, bool, error) {
	href, notrack := -1, false
	attrs := tok.Attr[:0:0]
	for _, a := range tok.Attr {
		if a.Namespace == "" && a.Key == NoTrackAttr {
			notrack = true
			continue
		}
		if a.Namespace == "" && a.Key == "href" && href < 0 {
			href = len(attrs)
		}
		attrs = append(attrs, a)
	}
	changed := notrack
	tok.Attr = attrs
	if href >= 0 {
		u := strings.TrimSpace(tok.Attr[href].Val)
		marked := false
		for _, m := range marks {
			if strings.HasSuffix(u, m) {
				marked = true
			}
		}
		switch {
		case notrack || marked:
			if marked {
				tok.Attr[href].Val, changed = Unmark(tok.Attr[href].Val), true
			}
		case !hasHTTPScheme(u) || template && templated(u):
		default:
			*n++
			if err := CheckURL(u); err != nil {
				return "", false, &URLError{Index: *n, Reason: err.Error()}
			}
			if short != nil {
				su, err := short(u)
				if err != nil {
					return "", false, err
				}
				tok.Attr[href].Val, changed = su, true
			}
		}
	}
	if !changed {
		return "", false, nil
	}
	return tok.String(), true, nil
}
