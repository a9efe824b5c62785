package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/internal/templates"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// FuzzTemplateFile decodes arbitrary template files. A file is refused with an error that
// names it, or becomes a template the server would take as it is: a name, parts that parse,
// canonical locale tags in order, one per translation of the file. Writing that template back
// as a file and reading it again gives the same template.
func FuzzTemplateFile(f *testing.F) {
	for _, p := range []string{"../../examples/templates/welcome.yaml", "../../examples/templates/order-shipped.yaml",
		"../../examples/templates/activity-digest.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"name: a\nparts:\n  sms_body: hi\nlocales:\n  pt-br:\n    sms_body: oi\n  PT_BR:\n    sms_body: ola\n",
		"name: a\nparts:\n  email_subject: |\n    two\n    lines\n  email_text: x\n",
		"name: a\nparts:\n  sms_body: '{{.x'\n",
		"name: a\nparts: &p\n  sms_body: hi\nlocales:\n  de: *p\n  fr: *p\n",
		"name: a\nunknown: 1\n",
		"name: a\nparts:\n  sms_body: hi\n---\nname: b\n",
		"a: &a [x,x,x,x]\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > maxTemplateFile {
			return
		}
		l, err := decodeTemplate("t.yaml", raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "t.yaml: ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		checkLoaded(t, l)
		again, err := decodeTemplate("t.yaml", encodeTemplate(t, l.template))
		if err != nil || !proto.Equal(again.template, l.template) {
			t.Fatalf("%s: written back and read again as %v, %v; first %v", raw, again.template, err, l.template)
		}
	})
}

func checkLoaded(t *testing.T, l loaded) {
	t.Helper()
	tm := l.template
	if tm.Name == "" || len(l.locales) != len(tm.Locales) {
		t.Fatalf("loaded %v with file keys %q", tm, l.locales)
	}
	var translations []templates.Translation
	for i, loc := range tm.Locales {
		if canon, err := templates.CanonicalLocale(loc.Locale); err != nil || canon != loc.Locale ||
			i > 0 && tm.Locales[i-1].Locale >= loc.Locale {
			t.Fatalf("locales %v", tm.Locales)
		}
		translations = append(translations, templates.Translation{Locale: loc.Locale, Parts: partsOf(loc.Parts)})
	}
	if _, err := templates.ParseSet(partsOf(tm.Parts), translations); err != nil {
		t.Fatalf("loaded parts that do not parse: %v", err)
	}
}

func partsOf(p *heraldv1.TemplateParts) templates.Parts {
	return templates.Parts{PushTitle: p.GetPushTitle(), PushBody: p.GetPushBody(), SMSBody: p.GetSmsBody(),
		EmailSubject: p.GetEmailSubject(), EmailHTML: p.GetEmailHtml(), EmailText: p.GetEmailText()}
}

// encodeTemplate writes tm as a template file.
func encodeTemplate(t *testing.T, tm *heraldv1.Template) []byte {
	t.Helper()
	fileParts := func(p *heraldv1.TemplateParts) partsFile { return partsFile(partsOf(p)) }
	f := templateFile{Name: tm.Name, Description: tm.Description, Parts: fileParts(tm.Parts)}
	for _, l := range tm.Locales {
		if f.Locales == nil {
			f.Locales = map[string]partsFile{}
		}
		f.Locales[l.Locale] = fileParts(l.Parts)
	}
	b, err := yaml.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTemplateFileTooLarge: a file too large to send is refused before it is read whole.
func TestTemplateFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte("name: big\nparts:\n  sms_body: "+strings.Repeat("x", maxTemplateFile)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTemplate(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("loadTemplate = %v", err)
	}
}
