package notifier_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
)

// violation returns the one field violation of an Invalid error, or fails the test.
func violation(t *testing.T, err error) errs.FieldViolation {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) != 1 {
		t.Fatalf("error %v; want Invalid with one field violation", err)
	}
	return e.Fields[0]
}

var (
	otpDefault = templates.Parts{PushTitle: "Hi {{.name}}", PushBody: "Your code is {{.code}}", SMSBody: "Code {{.code}}",
		EmailSubject: "Your code", EmailText: "Hello {{.name}}, your code is {{.code}}."}
	otpPT = templates.Parts{PushTitle: "Olá {{.name}}", PushBody: "O seu código é {{.code}}", SMSBody: "Código {{.code}}",
		EmailSubject: "O seu código", EmailText: "Olá {{.name}}, o seu código é {{.code}}."}
	otpPTBR = templates.Parts{PushTitle: "Oi {{.name}}", PushBody: "Seu código é {{.code}}", SMSBody: "Seu código: {{.code}}",
		EmailSubject: "Seu código", EmailText: "Oi {{.name}}, seu código é {{.code}}."}
)

// createOTP stores the localized test template, its translations given out of order and in
// other case, and checks that they are stored canonical and sorted.
func createOTP(t *testing.T, h *harness) {
	t.Helper()
	got, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "otp", Parts: otpDefault,
		Locales: []templates.Translation{{Locale: "pt-br", Parts: otpPTBR}, {Locale: "PT", Parts: otpPT}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []templates.Translation{{Locale: "pt", Parts: otpPT}, {Locale: "pt-BR", Parts: otpPTBR}}
	if got.Version != 1 || !reflect.DeepEqual(got.Locales, want) {
		t.Fatalf("CreateTemplate = %+v; want version 1 with locales %+v", got, want)
	}
}

func TestSendTemplateLocale(t *testing.T) {
	h := newHarness()
	createOTP(t, h)
	h.dir.users = map[string]notifier.User{}
	for _, l := range []string{"pt-BR", "pt-PT", "pt", "fr-CA", ""} {
		h.dir.users["u-"+l] = notifier.User{ID: "u-" + l, Phone: "+14155550123", Locale: l}
	}
	data := map[string]any{"name": "Ana", "code": "4711"}
	tests := []struct {
		name    string
		user    string
		locale  string // TemplateRef.Locale
		wantSMS string
	}{
		{"user in pt-BR", "u-pt-BR", "", "Seu código: 4711"},
		{"user in pt-PT falls back to pt", "u-pt-PT", "", "Código 4711"},
		{"user in pt", "u-pt", "", "Código 4711"},
		{"user in fr-CA falls back to default", "u-fr-CA", "", "Code 4711"},
		{"user without a locale", "u-", "", "Code 4711"},
		{"request locale wins over the user's", "u-pt-BR", "pt-PT", "Código 4711"},
		{"request locale in any case", "u-", "PT-br", "Seu código: 4711"},
		{"request locale without translation", "u-pt-BR", "en", "Code 4711"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := send(t, h, billing, &notifier.SendRequest{UserID: tt.user, Category: "otp",
				Template: &notifier.TemplateRef{Name: "otp", Locale: tt.locale}, Data: data})
			n := res.Notification
			if len(n.Deliveries) != 1 || n.Deliveries[0].Content.Body != tt.wantSMS {
				t.Fatalf("deliveries %+v; want one SMS %q", n.Deliveries, tt.wantSMS)
			}
			wantLocale := map[string]string{"": "", "pt-PT": "pt-PT", "PT-br": "pt-BR", "en": "en"}[tt.locale]
			if n.Template.Locale != wantLocale || n.Template.Version != 1 {
				t.Errorf("template ref %+v; want locale %q (as requested, canonical)", n.Template, wantLocale)
			}
		})
	}

	_, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{UserID: "u-pt-BR", Category: "otp",
		Template: &notifier.TemplateRef{Name: "otp", Locale: "not a tag"}, Data: data})
	if v := violation(t, err); v.Field != "template.locale" {
		t.Errorf("bad request locale: field %q", v.Field)
	}
	_, err = h.svc.Send(t.Context(), billing, &notifier.SendRequest{UserID: "u-pt-BR", Category: "otp",
		Template: &notifier.TemplateRef{Name: "otp"}, Data: map[string]any{"name": "Ana"}})
	if v := violation(t, err); v.Field != "template.push_body" || !strings.Contains(v.Reason, "pt-BR translation") {
		t.Errorf("missing key in a translation: %+v", v)
	}
}

func TestSendTemplateLimits(t *testing.T) {
	h := newHarness()
	for name, p := range map[string]templates.Parts{
		// Data travels in the push payload too, so the body is built from small data.
		"push": {PushTitle: "{{.title}}", PushBody: strings.Repeat(`{{printf "%900s" .a}}`, 3) +
			`{{if .more}}` + strings.Repeat(`{{printf "%900s" .a}}`, 2) + `{{end}}`},
		"sms":     {SMSBody: "{{.body}}"},
		"email":   {EmailSubject: "{{.subject}}", EmailText: "{{.body}}"},
		"all":     {PushBody: "{{.body}}", SMSBody: "{{.body}}", EmailSubject: "s", EmailText: "{{.body}}"},
		"pt-sms":  {SMSBody: "{{.body}}"},
		"padding": {SMSBody: "{{.body}}"},
	} {
		tmpl := &notifier.Template{Name: name, Parts: p}
		if name == "pt-sms" {
			tmpl.Locales = []templates.Translation{{Locale: "pt", Parts: templates.Parts{SMSBody: "Olá! {{.body}}"}}}
		}
		if _, err := h.templates.CreateTemplate(t.Context(), billing, tmpl); err != nil {
			t.Fatal(err)
		}
	}
	addr := &notifier.Address{Email: "a@example.com", Phone: "+14155550123", IOSTokens: []string{iosToken}}
	// GSM-7 fits 1530 characters in ten segments; the translation adds five.
	tests := []struct {
		name     string
		template string
		locale   string
		channels []delivery.Channel
		data     map[string]any
		field    string // "" for success
	}{
		{"push within", "push", "", nil, map[string]any{"title": "t", "a": "b", "more": false}, ""},
		{"push body over", "push", "", nil, map[string]any{"title": "t", "a": "b", "more": true}, "template.push_body"},
		{"data over with push", "push", "", nil, map[string]any{"title": "t", "a": "b", "more": false, "blob": strings.Repeat("d", 4100)}, "data"},
		{"data over without push channel", "all", "", []delivery.Channel{delivery.Email}, map[string]any{"body": "b", "blob": strings.Repeat("d", 4100)}, ""},
		{"sms within", "sms", "", nil, map[string]any{"body": strings.Repeat("a", 1530)}, ""},
		{"sms over", "sms", "", nil, map[string]any{"body": strings.Repeat("a", 1531)}, "template.sms_body"},
		{"sms over in UCS-2", "sms", "", nil, map[string]any{"body": "🎉" + strings.Repeat("a", 670)}, "template.sms_body"},
		{"sms over only in the translation", "pt-sms", "pt", nil, map[string]any{"body": strings.Repeat("a", 1526)}, "template.sms_body"},
		{"sms within in the default", "pt-sms", "", nil, map[string]any{"body": strings.Repeat("a", 1526)}, ""},
		{"sms over, email only", "all", "", []delivery.Channel{delivery.Email}, map[string]any{"body": strings.Repeat("a", 2000)}, ""},
		{"sms over, all channels", "all", "", nil, map[string]any{"body": strings.Repeat("a", 1600)}, "template.sms_body"},
		{"subject within", "email", "", nil, map[string]any{"subject": strings.Repeat("ü", 255), "body": "b"}, ""},
		{"subject over", "email", "", nil, map[string]any{"subject": strings.Repeat("s", 256), "body": "b"}, "template.email_subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{Address: addr, Category: "otp", Channels: tt.channels,
				Template: &notifier.TemplateRef{Name: tt.template, Locale: tt.locale}, Data: tt.data})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if len(res.Notification.Deliveries) == 0 {
					t.Fatal("no deliveries")
				}
				return
			}
			v := violation(t, err)
			if v.Field != tt.field {
				t.Errorf("field %q (%s); want %q", v.Field, v.Reason, tt.field)
			}
			if strings.Contains(v.Reason, "aaaaaaaa") || strings.Contains(v.Reason, "dddddddd") {
				t.Errorf("reason %q quotes the data", v.Reason)
			}
		})
	}
}

func TestCreateTemplateErrors(t *testing.T) {
	long := strings.Repeat("a", 1531)
	tests := []struct {
		name  string
		t     notifier.Template
		field string
	}{
		{"bad name", notifier.Template{Name: "Bad Name", Parts: otpDefault}, "template.name"},
		{"description with NUL", notifier.Template{Name: "x", Description: "a\x00", Parts: otpDefault}, "template.description"},
		{"no channel", notifier.Template{Name: "x"}, "template.parts"},
		{"bad default part", notifier.Template{Name: "x", Parts: with(otpDefault, func(p *templates.Parts) { p.SMSBody = "{{" })}, "template.parts.sms_body"},
		{"bad locale", notifier.Template{Name: "x", Parts: otpDefault,
			Locales: []templates.Translation{{Locale: "pt", Parts: otpPT}, {Locale: "pt_BR!", Parts: otpPTBR}}}, "template.locales[1].locale"},
		{"repeated locale", notifier.Template{Name: "x", Parts: otpDefault,
			Locales: []templates.Translation{{Locale: "pt-BR", Parts: otpPTBR}, {Locale: "pt", Parts: otpPT}, {Locale: "pt-br", Parts: otpPTBR}}}, "template.locales[2].locale"},
		{"translation lacks a part", notifier.Template{Name: "x", Parts: otpDefault,
			Locales: []templates.Translation{{Locale: "pt", Parts: otpPT}, {Locale: "pt-BR", Parts: with(otpPTBR, func(p *templates.Parts) { p.EmailText = "" })}}},
			"template.locales[1].parts.email_text"},
		{"translation has an extra part", notifier.Template{Name: "x", Parts: otpDefault,
			Locales: []templates.Translation{{Locale: "pt", Parts: with(otpPT, func(p *templates.Parts) { p.EmailHTML = "<p>oi</p>" })}}},
			"template.locales[0].parts.email_html"},
		{"translation does not parse", notifier.Template{Name: "x", Parts: otpDefault,
			Locales: []templates.Translation{{Locale: "pt", Parts: with(otpPT, func(p *templates.Parts) { p.PushTitle = "{{.x" })}}},
			"template.locales[0].parts.push_title"},
		{"static sms over the limit", notifier.Template{Name: "x", Parts: templates.Parts{SMSBody: long}}, "template.parts.sms_body"},
		{"static subject over the limit in a translation", notifier.Template{Name: "x",
			Parts:   templates.Parts{EmailSubject: "{{.s}}", EmailText: "t"},
			Locales: []templates.Translation{{Locale: "de", Parts: templates.Parts{EmailSubject: strings.Repeat("s", 256), EmailText: "t"}}}},
			"template.locales[0].parts.email_subject"},
		{"static push over the limit", notifier.Template{Name: "x", Parts: templates.Parts{PushBody: strings.Repeat("p", 4096)}}, "template.parts.push_body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			_, err := h.templates.CreateTemplate(t.Context(), billing, &tt.t)
			if v := violation(t, err); v.Field != tt.field {
				t.Errorf("field %q (%s); want %q", v.Field, v.Reason, tt.field)
			}
			if len(h.store.templates) != 0 {
				t.Error("a template was stored")
			}
		})
	}
	// A dynamic part that could exceed a limit is accepted: only a render can tell.
	h := newHarness()
	if _, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "x", Parts: templates.Parts{SMSBody: long + "{{.x}}"}}); err != nil {
		t.Errorf("dynamic part: %v", err)
	}
}

func TestRenderTemplate(t *testing.T) {
	h := newHarness()
	createOTP(t, h)
	if _, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "otp", Parts: otpDefault,
		Locales: []templates.Translation{{Locale: "pt-BR", Parts: with(otpPTBR, func(p *templates.Parts) { p.SMSBody = "🎉 {{.code}}" })}}}); err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"name": "Ana", "code": "4711"}
	tests := []struct {
		name     string
		version  int
		locale   string
		data     map[string]any
		want     notifier.Preview
		wantKind errs.Kind
		field    string
	}{
		{"latest, default", 0, "", data, notifier.Preview{Version: 2, Locale: "", SMSEncoding: "GSM-7", SMSSegments: 1,
			Content: templates.Rendered{PushTitle: "Hi Ana", PushBody: "Your code is 4711", SMSBody: "Code 4711",
				EmailSubject: "Your code", EmailText: "Hello Ana, your code is 4711."}}, 0, ""},
		{"latest, pt-BR", 0, "pt-br", data, notifier.Preview{Version: 2, Locale: "pt-BR", SMSEncoding: "UCS-2", SMSSegments: 1,
			Content: templates.Rendered{PushTitle: "Oi Ana", PushBody: "Seu código é 4711", SMSBody: "🎉 4711",
				EmailSubject: "Seu código", EmailText: "Oi Ana, seu código é 4711."}}, 0, ""},
		{"version 1, pt-PT falls back to pt", 1, "pt-PT", data, notifier.Preview{Version: 1, Locale: "pt", SMSEncoding: "UCS-2", SMSSegments: 1, // ó is not GSM
			Content: templates.Rendered{PushTitle: "Olá Ana", PushBody: "O seu código é 4711", SMSBody: "Código 4711",
				EmailSubject: "O seu código", EmailText: "Olá Ana, o seu código é 4711."}}, 0, ""},
		{"version 2 has no pt", 2, "pt-PT", data, notifier.Preview{Version: 2, SMSEncoding: "GSM-7", SMSSegments: 1,
			Content: templates.Rendered{PushTitle: "Hi Ana", PushBody: "Your code is 4711", SMSBody: "Code 4711",
				EmailSubject: "Your code", EmailText: "Hello Ana, your code is 4711."}}, 0, ""},
		{"unknown template", 0, "", data, notifier.Preview{}, errs.NotFound, ""},
		{"unknown version", 3, "", data, notifier.Preview{}, errs.NotFound, ""},
		{"bad locale", 0, "pt_BR!", data, notifier.Preview{}, errs.Invalid, "locale"},
		{"missing key", 0, "", map[string]any{"name": "Ana"}, notifier.Preview{}, errs.Invalid, "template.push_body"},
		{"data too large for push", 0, "", map[string]any{"name": "Ana", "code": "1", "blob": strings.Repeat("d", 5000)}, notifier.Preview{}, errs.Invalid, "data"},
		{"sms over the limit", 0, "", map[string]any{"name": "Ana", "code": strings.Repeat("1", 1600)}, notifier.Preview{}, errs.Invalid, "template.sms_body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "otp"
			if tt.name == "unknown template" {
				name = "nope"
			}
			got, err := h.templates.RenderTemplate(t.Context(), name, tt.version, tt.locale, tt.data)
			if tt.wantKind != 0 {
				if !errs.Is(err, tt.wantKind) {
					t.Fatalf("RenderTemplate = %+v, %v; want error kind %d", got, err, tt.wantKind)
				}
				if tt.field != "" {
					if v := violation(t, err); v.Field != tt.field {
						t.Errorf("field %q (%s); want %q", v.Field, v.Reason, tt.field)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("RenderTemplate = %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// with returns p changed by f.
func with(p templates.Parts, f func(*templates.Parts)) templates.Parts { f(&p); return p }
