package links

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/templates"
)

// numbered shortens each link to S1, S2... and records the long ones.
func numbered(got *[]string) Shortener {
	return func(long string) (string, error) {
		*got = append(*got, long)
		return fmt.Sprintf("https://h.test/l/S%d", len(*got)), nil
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		long           []string
	}{
		{"none", "Your code is 1234", "Your code is 1234", nil},
		{"one", "See https://ex.com/a?b=1&c=2 now", "See https://h.test/l/S1 now", []string{"https://ex.com/a?b=1&c=2"}},
		{"sentence end", "Go to http://ex.com/x.", "Go to https://h.test/l/S1.", []string{"http://ex.com/x"}},
		{"parenthesis", "(see https://ex.com/a_(b)) ok", "(see https://h.test/l/S1) ok", []string{"https://ex.com/a_(b)"}},
		{"two", "https://a.com and HTTPS://b.com", "https://h.test/l/S1 and https://h.test/l/S2", []string{"https://a.com", "HTTPS://b.com"}},
		{"opted out", "Keep https://ex.com/k" + templates.NoTrackMark + ", go https://ex.com/g",
			"Keep https://ex.com/k, go https://h.test/l/S1", []string{"https://ex.com/g"}},
		{"not http", "mailto:a@b.c tel:+1 ftp://x.com", "mailto:a@b.c tel:+1 ftp://x.com", nil},
		{"glued", "xhttps://ex.com", "xhttps://ex.com", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var long []string
			got, err := Text(tc.in, numbered(&long))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || fmt.Sprint(long) != fmt.Sprint(tc.long) {
				t.Errorf("Text(%q) = %q %q, want %q %q", tc.in, got, long, tc.want, tc.long)
			}
		})
	}
}

func TestHTML(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		long           []string
	}{
		{"anchor", `<p>Hi <a href="https://ex.com/a?x=1&amp;y=2">there</a></p>`,
			`<p>Hi <a href="https://h.test/l/S1">there</a></p>`, []string{"https://ex.com/a?x=1&y=2"}},
		{"attribute kept", `<A class=btn HREF='http://ex.com'>x</A>`, `<a class="btn" href="https://h.test/l/S1">x</A>`, []string{"http://ex.com"}},
		{"opt-out attribute", `<a data-herald-notrack href="https://ex.com/k">k</a> <a href="https://ex.com/g">g</a>`,
			`<a href="https://ex.com/k">k</a> <a href="https://h.test/l/S1">g</a>`, []string{"https://ex.com/g"}},
		{"opt-out mark", `<a href="https://ex.com/k%ee%80%80">k</a>`, `<a href="https://ex.com/k">k</a>`, nil},
		{"mailto and tel", `<a href="mailto:a@b.c">m</a><a href="tel:+14155550100">t</a><a href="/rel">r</a>`,
			`<a href="mailto:a@b.c">m</a><a href="tel:+14155550100">t</a><a href="/rel">r</a>`, nil},
		{"text URL untouched", `<p>https://ex.com</p><script>var a = '<a href="https://ex.com">';</script>`,
			`<p>https://ex.com</p><script>var a = '<a href="https://ex.com">';</script>`, nil},
		{"no markup", "plain https://ex.com", "plain https://ex.com", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var long []string
			got, err := HTML(tc.in, numbered(&long))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || fmt.Sprint(long) != fmt.Sprint(tc.long) {
				t.Errorf("HTML(%q)\n = %q %q\nwant %q %q", tc.in, got, long, tc.want, tc.long)
			}
		})
	}
}

func TestBadLinksAreNamedNotQuoted(t *testing.T) {
	long := "https://ex.com/?secret=" + strings.Repeat("a", MaxURL)
	for name, err := range map[string]error{
		"text too long": CheckText("a https://ok.com b "+long, false),
		"html too long": CheckHTML(`<a href="`+long+`">x</a>`, false),
		"no host":       CheckText("see https:///path now", false),
	} {
		var ue *URLError
		if !errors.As(err, &ue) {
			t.Errorf("%s: err = %v, want a URLError", name, err)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error quotes the link: %v", name, err)
		}
	}
	if err := CheckText("https://x.com/{{.path}}?t={{.token}}", true); err != nil {
		t.Errorf("a templated link is checked before rendering: %v", err)
	}
}

// TestNoTrackThroughTemplates checks the opt-out function as html/template and text/template
// render it.
func TestNoTrackThroughTemplates(t *testing.T) {
	tpl, err := templates.Parse(templates.Parts{
		SMSBody:      `Keep {{notrack .keep}} go {{.go}}`,
		EmailSubject: "s",
		EmailHTML:    `<a href="{{notrack .keep}}">k</a> <a href="{{.go}}">g</a>`,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := tpl.Render(map[string]any{"keep": "https://ex.com/k?a=1", "go": "https://ex.com/g"})
	if err != nil {
		t.Fatal(err)
	}
	var long []string
	sms, err := Text(r.SMSBody, numbered(&long))
	if err != nil {
		t.Fatal(err)
	}
	html, err := HTML(r.EmailHTML, numbered(&long))
	if err != nil {
		t.Fatal(err)
	}
	if sms != "Keep https://ex.com/k?a=1 go https://h.test/l/S1" {
		t.Errorf("sms = %q", sms)
	}
	if html != `<a href="https://ex.com/k?a=1">k</a> <a href="https://h.test/l/S2">g</a>` {
		t.Errorf("html = %q", html)
	}
}
