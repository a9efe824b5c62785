package templates

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCanonicalLocale(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"pt-BR", "pt-BR"},
		{"pt-br", "pt-BR"},
		{"PT_br", "pt-BR"},
		{"EN-us", "en-US"},
		{"zh-hant-tw", "zh-Hant-TW"},
		{"es-419", "es-419"},
		{"iw", "he"},
		{"de", "de"},
		{"", ""},
		{"und", ""},
		{"x-klingon", ""},
		{"pt BR", ""},
		{"e", ""},
		{strings.Repeat("a", 8) + strings.Repeat("-abcdefgh", 4), ""},
	}
	for _, tc := range tests {
		got, err := CanonicalLocale(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("CanonicalLocale(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

var (
	enParts = Parts{PushTitle: "Hi {{.name}}", PushBody: "Your code is {{.code}}", SMSBody: "Code {{.code}}",
		EmailSubject: "Your code", EmailHTML: "<p>Hello {{.name}}, your code is <b>{{.code}}</b>.</p>"}
	ptParts = Parts{PushTitle: "Olá {{.name}}", PushBody: "O seu código é {{.code}}", SMSBody: "Código {{.code}}",
		EmailSubject: "O seu código", EmailHTML: "<p>Olá {{.name}}, o seu código é <b>{{.code}}</b>.</p>"}
	ptBRParts = Parts{PushTitle: "Oi {{.name}}", PushBody: "Seu código é {{.code}}", SMSBody: "Código {{.code}}",
		EmailSubject: "Seu código", EmailHTML: "<p>Oi {{.name}}, seu código é <b>{{.code}}</b>.</p>"}
	zhParts = Parts{PushTitle: "{{.name}}，你好", PushBody: "你的验证码是 {{.code}}", SMSBody: "验证码 {{.code}}",
		EmailSubject: "你的验证码", EmailHTML: "<p>{{.name}}，你的验证码是 <b>{{.code}}</b>。</p>"}
)

func localizedSet(t testing.TB) *Set {
	t.Helper()
	s, err := ParseSet(enParts, []Translation{{"pt-br", ptBRParts}, {"pt", ptParts}, {"zh-Hant", zhParts}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSet(t *testing.T) {
	s := localizedSet(t)
	if got := strings.Join(s.Locales(), ","); got != "pt,pt-BR,zh-Hant" {
		t.Errorf("Locales() = %s", got)
	}
	if s.Default().Parts() != enParts {
		t.Errorf("Default().Parts() = %+v", s.Default().Parts())
	}
	if _, err := ParseSet(Parts{SMSBody: "x"}, nil); err != nil {
		t.Errorf("no translations: %v", err)
	}

	drop := func(p Parts, f func(*Parts)) Parts { f(&p); return p }
	tests := []struct {
		name   string
		tr     []Translation
		locale string
		part   string
		want   error // if set, errors.Is must hold
		text   string
	}{
		{"bad tag", []Translation{{"pt_BR!", ptParts}}, "pt_BR!", PartLocale, errLocale, ""},
		{"empty tag", []Translation{{"", ptParts}}, "", PartLocale, errLocale, ""},
		{"und", []Translation{{"und", ptParts}}, "und", PartLocale, errLocale, ""},
		{"duplicate", []Translation{{"pt-BR", ptBRParts}, {"pt-br", ptBRParts}}, "pt-br", PartLocale, errDuplicateLocale, ""},
		{"missing part", []Translation{{"pt", drop(ptParts, func(p *Parts) { p.SMSBody = " " })}}, "pt", PartSMSBody, errMissingPart, ""},
		{"extra part", []Translation{{"pt", drop(ptParts, func(p *Parts) { p.EmailText = "texto" })}}, "pt", PartEmailText, errExtraPart, ""},
		{"syntax error", []Translation{{"pt", drop(ptParts, func(p *Parts) { p.PushBody = "{{.code" })}}, "pt", PartPushBody, nil, "unclosed action"},
		{"subject with a newline", []Translation{{"de", drop(ptParts, func(p *Parts) { p.EmailSubject = "a\nb" })}}, "de", PartEmailSubject, errSubjectLines, ""},
		{"second translation", []Translation{{"pt", ptParts}, {"zh", drop(zhParts, func(p *Parts) { p.EmailHTML = "{{define \"x\"}}{{end}}" })}}, "zh", PartEmailHTML, errDefine, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSet(enParts, tc.tr)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v; want an *Error", err)
			}
			if e.Locale != tc.locale || e.Part != tc.part {
				t.Errorf("locale %q part %q; want %q %q (error %v)", e.Locale, e.Part, tc.locale, tc.part, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v; want %v", err, tc.want)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q; want it to contain %q", err, tc.text)
			}
			if tc.locale != "" && !strings.HasPrefix(err.Error(), "locales["+tc.locale+"].") {
				t.Errorf("error %q does not name the locale", err)
			}
		})
	}
	if _, err := ParseSet(Parts{PushBody: "{{"}, nil); err == nil || err.(*Error).Locale != "" {
		t.Errorf("default parts error = %v; want one without a locale", err)
	}
}

func TestResolve(t *testing.T) {
	s := localizedSet(t)
	for locale, want := range map[string]string{
		"pt-BR":           "pt-BR",
		"pt-br":           "pt-BR",
		"PT_BR":           "pt-BR",
		"pt-BR-u-nu-latn": "pt-BR",
		"pt-PT":           "pt",
		"pt-AO":           "pt",
		"pt":              "pt",
		"zh-Hant-TW":      "zh-Hant",
		"zh-hant":         "zh-Hant",
		"zh":              "", // never a more specific translation than asked for
		"zh-TW":           "", // no script subtag to drop to zh-Hant
		"fr-CA":           "",
		"en":              "",
		"":                "",
		"not a tag":       "",
		"und":             "",
	} {
		tag, tmpl := s.Resolve(locale)
		wantParts := map[string]Parts{"": enParts, "pt": ptParts, "pt-BR": ptBRParts, "zh-Hant": zhParts}[want]
		if tag != want || tmpl.Parts() != wantParts {
			t.Errorf("Resolve(%q) = %q with %+v; want %q", locale, tag, tmpl.Parts(), want)
		}
	}
}

// TestRenderLocalizedGolden renders one template set for several recipient locales into
// testdata/localized.golden (go test -run Golden -update rewrites it).
func TestRenderLocalizedGolden(t *testing.T) {
	s := localizedSet(t)
	data := jsonData(t, `{"name": "Ana <Maria>", "code": "493 817"}`)
	var b strings.Builder
	for _, locale := range []string{"pt-BR", "pt-pt", "PT_br", "zh-Hant-HK", "fr", ""} {
		tag, r, err := s.Render(locale, data)
		b.WriteString("== recipient locale " + cmp.Or(locale, "(none)") + " -> parts " + cmp.Or(tag, "(default)") + " ==\n")
		b.WriteString(formatRendered(r, err))
	}
	_, r, err := s.Render("pt-BR", map[string]any{"name": "Ana"})
	b.WriteString("== missing key in a translation ==\n")
	b.WriteString(formatRendered(r, err))
	if err == nil || err.(*Error).Locale != "pt-BR" {
		t.Errorf("render error %v; want one for locale pt-BR", err)
	}

	path := filepath.Join("testdata", "localized.golden")
	got := b.String()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("rendered output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestCheckStatic(t *testing.T) {
	long := strings.Repeat("a", 1531)
	tests := []struct {
		name   string
		def    Parts
		tr     []Translation
		locale string
		part   string // "" for no error
	}{
		{"dynamic parts are not checked", Parts{SMSBody: long + "{{.x}}"}, nil, "", ""},
		{"static sms over", Parts{SMSBody: long}, nil, "", PartSMSBody},
		{"static sms within", Parts{SMSBody: long[:1530]}, nil, "", ""},
		{"static sms in a translation", Parts{SMSBody: "{{.x}}"}, []Translation{{"de", Parts{SMSBody: long}}}, "de", PartSMSBody},
		{"static subject over", Parts{EmailSubject: strings.Repeat("s", 256), EmailText: "{{.x}}"}, nil, "", PartEmailSubject},
		{"static push title over, dynamic body", Parts{PushTitle: strings.Repeat("t", 4096), PushBody: "{{.x}}"}, nil, "", PartPushTitle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSet(tc.def, tc.tr)
			if err != nil {
				t.Fatal(err)
			}
			err = s.CheckStatic(Limits{})
			if tc.part == "" {
				if err != nil {
					t.Fatalf("CheckStatic: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Part != tc.part || e.Locale != tc.locale {
				t.Fatalf("CheckStatic = %v; want an *Error for %q %s", err, tc.locale, tc.part)
			}
		})
	}
}

func FuzzResolve(f *testing.F) {
	s := localizedSet(f)
	for _, l := range []string{"pt-BR", "pt_br", "zh-Hant-TW", "", "und", "x-a", "pt-BR-u-nu-latn", "a-b-c-d"} {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, locale string) {
		tag, tmpl := s.Resolve(locale)
		if tmpl == nil {
			t.Fatal("no template")
		}
		if tag == "" {
			return
		}
		canon, err := CanonicalLocale(locale)
		if err != nil || !(canon == tag || strings.HasPrefix(canon, tag+"-")) {
			t.Fatalf("Resolve(%q) = %q; canonical %q, %v", locale, tag, canon, err)
		}
	})
}
