package links

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRewrite rewrites hostile text and HTML. Whatever the input: no panic; every link handed
// to the shortener passes CheckURL; a failure is a URLError that does not quote the input; the
// output holds no opt-out mark; the check-only passes agree with the rewriting ones; text
// rewritten with links that stay as they are is the input without its marks, and so is HTML
// without <a> tags.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{
		"See https://ex.com/a?b=1 now.",
		`<p>Hi <a href="https://ex.com/a?x=1&amp;y=2" data-herald-notrack>x</a><a href="mailto:a@b.c">m</a></p>`,
		"<a href=https://ex.com/k%ee%80%80>k</a><a\thref='http://x.io'>",
		"<script><a href='https://ex.com'></script><a href=\"javascript:alert(1)\">",
		"(https://ex.com/a_(b)) https://\uE000 http://[::1]:80/ https://x.com/" + strings.Repeat("a", 40),
		"<!-- <a href=https://c.com> --><![CDATA[<a href=https://d.com>]]><a href",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var long []string
		short := func(u string) (string, error) {
			if err := CheckURL(u); err != nil {
				t.Fatalf("shortener got a link CheckURL refuses (%v)", err)
			}
			long = append(long, u)
			return "https://h.test/l/ABCDEFGHIJK", nil
		}
		same := func(u string) (string, error) { return u, nil }
		for _, html := range []bool{false, true} {
			rewrite, check := Text, CheckText
			if html {
				rewrite, check = HTML, CheckHTML
			}
			out, err := rewrite(s, short)
			if cerr := check(s, false); (cerr == nil) != (err == nil) {
				t.Fatalf("html=%v: rewrite error %v, check error %v", html, err, cerr)
			}
			if err != nil {
				var ue *URLError
				if !errors.As(err, &ue) {
					t.Fatalf("html=%v: error %v is not a URLError", html, err)
				}
				if len(s) > 40 && strings.Contains(err.Error(), s) {
					t.Fatalf("the error quotes the input: %v", err)
				}
				continue
			}
			for _, m := range marks {
				if strings.Contains(out, m) {
					t.Fatalf("html=%v: output %q keeps the mark %q", html, out, m)
				}
			}
			if utf8.ValidString(s) && !utf8.ValidString(out) {
				t.Fatalf("html=%v: output %q is not UTF-8", html, out)
			}
			kept, err := rewrite(s, same)
			if err != nil {
				t.Fatal(err)
			}
			if (!html || !strings.Contains(strings.ToLower(s), "<a")) && kept != Unmark(s) {
				t.Fatalf("html=%v: with links unchanged, %q became %q", html, s, kept)
			}
		}
	})
}
