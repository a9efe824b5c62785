package templates

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// jsonData decodes s as the notifier would hand data over: JSON via google.protobuf.Struct,
// which yields map[string]any with float64 numbers.
func jsonData(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("test data: %v", err)
	}
	return m
}

func TestParseErrors(t *testing.T) {
	big := strings.Repeat("x", MaxSourceSize+1)
	tests := []struct {
		name  string
		parts Parts
		part  string
		want  error  // if set, errors.Is must hold
		text  string // else the message must contain this
	}{
		{"syntax error in push title", Parts{PushTitle: "Hi {{.name"}, PartPushTitle, nil, "push_title:1: unclosed action"},
		{"syntax error in push body", Parts{PushBody: "{{if}}"}, PartPushBody, nil, "missing value for if"},
		{"syntax error in sms body", Parts{SMSBody: "{{end}}"}, PartSMSBody, nil, "unexpected {{end}}"},
		{"syntax error in subject", Parts{EmailSubject: "{{.a b}}", EmailText: "x"}, PartEmailSubject, nil, "function \"b\" not defined"},
		{"syntax error in html", Parts{EmailHTML: "<p>{{range .x}}</p>"}, PartEmailHTML, nil, "unexpected EOF"},
		{"syntax error in text", Parts{EmailText: "{{.x}"}, PartEmailText, nil, "email_text:1:"},
		{"first bad part named", Parts{PushBody: "ok", SMSBody: "{{", EmailText: "{{"}, PartSMSBody, nil, "sms_body:1"},
		{"oversize push body", Parts{PushBody: big}, PartPushBody, ErrSourceTooLarge, ""},
		{"oversize html", Parts{EmailHTML: big}, PartEmailHTML, ErrSourceTooLarge, ""},
		{"invalid utf-8", Parts{SMSBody: "caf\xe9"}, PartSMSBody, errNotUTF8, ""},
		{"NUL", Parts{EmailText: "a\x00b"}, PartEmailText, errSourceNUL, ""},
		{"unknown function", Parts{PushBody: "{{env \"HOME\"}}"}, PartPushBody, nil, "function \"env\" not defined"},
		{"sandbox function", Parts{PushBody: "{{_heraldBudget}}"}, PartPushBody, nil, "not defined"},
		{"define", Parts{PushBody: `{{define "x"}}y{{end}}hi`}, PartPushBody, errDefine, ""},
		{"block", Parts{EmailHTML: `{{block "x" .}}y{{end}}`}, PartEmailHTML, errDefine, ""},
		{"template", Parts{SMSBody: `{{template "x"}}`}, PartSMSBody, errDefine, ""},
		{"html in html", Parts{EmailHTML: "{{.x | html}}"}, PartEmailHTML, errHTMLEscaper, ""},
		{"urlquery in html", Parts{EmailHTML: `<a href="/?q={{urlquery .x}}">`}, PartEmailHTML, errHTMLEscaper, ""},
		{"html escaping ambiguity", Parts{EmailHTML: `<a href="{{if .x}}">{{end}}`}, PartEmailHTML, nil, "branches end in different contexts"},
		{"ends inside an attribute", Parts{EmailHTML: `<a href="{{.x}}`}, PartEmailHTML, nil, "ends in a non-text context"},
		{"subject with a newline", Parts{EmailSubject: "Hello\n{{.name}}", EmailText: "x"}, PartEmailSubject, errSubjectLines, ""},
		{"subject with a carriage return", Parts{EmailSubject: "Hello\r"}, PartEmailSubject, errSubjectLines, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.parts)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v; want an *Error", err)
			}
			if e.Part != tc.part {
				t.Errorf("part %q; want %q (error %v)", e.Part, tc.part, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v; want %v", err, tc.want)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q; want it to contain %q", err, tc.text)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	for name, p := range map[string]Parts{
		"nothing":            {},
		"blank parts":        {PushBody: "  ", EmailHTML: "\n"},
		"largest part":       {PushBody: strings.Repeat("x", MaxSourceSize)},
		"trimmed subject":    {EmailSubject: "Hi\n  {{- .name -}}\n"},
		"subject from parts": {EmailSubject: "{{if .a}}{{.a}}{{else}}none{{end}}"},
		"every builtin": {PushBody: `{{and 1 0}}{{or 0 1}}{{not true}}{{len "ab"}}{{index .l 0}}{{slice "abc" 1}}` +
			`{{eq 1 1}}{{ne 1 2}}{{lt 1 2}}{{le 1 2}}{{gt 2 1}}{{ge 2 1}}{{print 1}}{{println 2}}{{printf "%d" 3}}` +
			`{{html "<"}}{{js "'"}}{{urlquery "&"}}`},
		"break and continue": {SMSBody: "{{range .l}}{{if .}}{{continue}}{{end}}{{break}}{{end}}"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReady(t *testing.T) {
	tests := []struct {
		name              string
		parts             Parts
		push, sms, emails bool
	}{
		{"empty", Parts{}, false, false, false},
		{"push title only", Parts{PushTitle: "t"}, false, false, false},
		{"push body", Parts{PushBody: "b"}, true, false, false},
		{"blank push body", Parts{PushBody: " \n"}, false, false, false},
		{"sms", Parts{SMSBody: "s"}, false, true, false},
		{"subject only", Parts{EmailSubject: "s"}, false, false, false},
		{"html without subject", Parts{EmailHTML: "h"}, false, false, false},
		{"subject and html", Parts{EmailSubject: "s", EmailHTML: "h"}, false, false, true},
		{"subject and text", Parts{EmailSubject: "s", EmailText: "t"}, false, false, true},
		{"all", Parts{"t", "b", "s", "s", "h", "t"}, true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.parts
			if p.PushReady() != tc.push || p.SMSReady() != tc.sms || p.EmailReady() != tc.emails {
				t.Errorf("push, sms, email ready = %v, %v, %v; want %v, %v, %v",
					p.PushReady(), p.SMSReady(), p.EmailReady(), tc.push, tc.sms, tc.emails)
			}
			tmpl, err := Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			if tmpl.Parts() != p {
				t.Errorf("Parts() = %+v; want %+v", tmpl.Parts(), p)
			}
		})
	}
}

// The golden tests render a template and compare every part (or the error) with
// testdata/<name>.golden; go test -run Golden -update rewrites the files.
var goldenTests = []struct {
	name  string
	parts Parts
	data  string
}{
	{
		name: "normal",
		parts: Parts{
			PushTitle:    "{{.sender}} sent you a message",
			PushBody:     "{{.preview}}{{if gt .more 0.0}} (+{{.more}} more){{end}}",
			SMSBody:      "{{.app}}: your code is {{.code}}. It expires in {{.minutes}} minutes.",
			EmailSubject: "Your order {{.order.id}} has shipped",
			EmailHTML: `<h1>Hello {{.name}}</h1>
<p>Order <a href="{{.order.url}}">{{.order.id}}</a> is on its way:</p>
<ul>
{{- range .order.items}}
  <li>{{.qty}} × {{.title}} — {{printf "%.2f" .price}} {{$.order.currency}}</li>
{{- end}}
</ul>
{{with .coupon}}<p>Your next order: {{.}}</p>{{else}}<p>No coupon this time.</p>{{end}}`,
			EmailText: `Hello {{.name}},

Order {{.order.id}} is on its way:
{{- range $item := .order.items}}
- {{$item.qty}} x {{$item.title}}: {{printf "%8.2f" $item.price}} {{$.order.currency}}
{{- end}}

Track it at {{.order.url}}{{if .note}}
Note: {{.note}}{{end}}`,
		},
		data: `{
			"sender": "Ada", "preview": "Are we still on for lunch?", "more": 2,
			"app": "Herald", "code": "493 817", "minutes": 10,
			"name": "Ada Lovelace", "coupon": null, "note": null,
			"order": {"id": "A-1001", "url": "https://shop.example/orders/A-1001?x=1&y=2", "currency": "EUR",
				"items": [{"qty": 1, "title": "Analytical Engine", "price": 1843.5}, {"qty": 2, "title": "Punch cards", "price": 0.25}]}
		}`,
	},
	{
		name: "hostile_html",
		parts: Parts{
			PushBody:     "{{.name}} said {{.quote}}",
			EmailSubject: "Message from {{.name}}",
			EmailHTML: `<p title="{{.quote}}">{{.name}} said {{.quote}}</p>
<p><a href="{{.url}}">profile</a> <a href="/users?name={{.name}}">search</a> <a href='{{.url2}}'>two</a></p>
<p><img src="{{.img}}" alt={{.quote}}></p>
<script>var name = {{.name}}; var quote = "{{.quote}}";</script>
<p style="color: {{.color}}">styled</p>
<!-- {{.name}} -->`,
			EmailText: "{{.name}} said {{.quote}}: {{.url}}",
		},
		data: `{
			"name": "<script>alert('x')</script>",
			"quote": "\"><img src=x onerror=alert(1)> ' & \"",
			"url": "javascript:alert(document.cookie)",
			"url2": " JaVaScRiPt:alert(1)",
			"img": "data:text/html;base64,PHNjcmlwdD4=",
			"color": "red; background: url(javascript:alert(1))"
		}`,
	},
	{
		name: "missing_key",
		parts: Parts{
			PushBody:     "Hi {{.name}}",
			EmailSubject: "Your order {{.order.id}} has shipped",
			EmailText:    "Order {{.order.id}}",
		},
		data: `{"name": "Ada", "order": {"number": 7}}`,
	},
	{
		name: "missing_key_html",
		parts: Parts{
			EmailSubject: "Hi",
			EmailHTML:    "<p>{{range .items}}{{.title}} {{.price}}{{end}}</p>",
		},
		data: `{"items": [{"title": "a", "price": 1}, {"title": "b"}]}`,
	},
	{
		name: "unicode",
		parts: Parts{
			PushTitle:    "{{.greeting}}, {{.name}}!",
			PushBody:     "{{printf \"%-6s|%6s|\" .short .short}} {{len .name}} bytes {{slice .ascii 0 3}}",
			SMSBody:      "{{.rtl}} — {{.cjk}} — {{.emoji}} — {{.combining}}",
			EmailSubject: "{{.emoji}} {{.cjk}}",
			EmailHTML:    `<p lang="ar">{{.rtl}}</p><p>{{.cjk}} {{.emoji}}</p><a href="https://例え.jp/{{.cjk}}?q={{.emoji}}">{{.name}}</a>`,
			EmailText:    "Grüße, {{.name}} {{.zwj}}",
		},
		data: `{
			"greeting": "Grüß Gott", "name": "Zoë Ñúñez", "short": "äö", "ascii": "abcdef",
			"rtl": "مرحبا بالعالم", "cjk": "你好，世界", "emoji": "🎉🚀", "combining": "e\u0301",
			"zwj": "👩‍👩‍👧"
		}`,
	},
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenTests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Parse(tc.parts)
			if err != nil {
				t.Fatal(err)
			}
			got := formatRendered(tmpl.Render(jsonData(t, tc.data)))
			path := filepath.Join("testdata", tc.name+".golden")
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
		})
	}
}

// formatRendered lays out a render's parts, or its error, in sections like txtar.
func formatRendered(r Rendered, err error) string {
	var b strings.Builder
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return "-- unexpected error type --\n" + err.Error() + "\n"
		}
		b.WriteString("-- error in " + e.Part + " --\n" + e.Err.Error() + "\n")
		return b.String()
	}
	for i, s := range r.fields() {
		b.WriteString("-- " + partNames[i] + " --\n" + *s + "\n")
	}
	return b.String()
}

func TestRenderErrors(t *testing.T) {
	longList := make([]any, 2000)
	for i := range longList {
		longList[i] = strings.Repeat("x", 200)
	}
	tests := []struct {
		name  string
		parts Parts
		data  map[string]any
		part  string
		want  error  // if set, errors.Is must hold
		text  string // else the message must contain this
	}{
		{"missing key", Parts{SMSBody: "{{.code}}"}, map[string]any{}, PartSMSBody, nil, `map has no entry for key "code"`},
		{"missing nested key", Parts{PushBody: "{{.a.b}}"}, map[string]any{"a": map[string]any{}}, PartPushBody, nil, `no entry for key "b"`},
		{"nil data", Parts{PushTitle: "{{.a}}"}, nil, PartPushTitle, nil, `no entry for key "a"`},
		{"missing key in html", Parts{EmailHTML: "<b>{{.a}}</b>"}, nil, PartEmailHTML, nil, `no entry for key "a"`},
		{"newline from data in subject", Parts{EmailSubject: "Hi {{.name}}"}, map[string]any{"name": "x\r\nBcc: victim@example.com"}, PartEmailSubject, errSubjectCtl, ""},
		{"line separator in subject", Parts{EmailSubject: "{{.s}}"}, map[string]any{"s": "a\u2028b"}, PartEmailSubject, errSubjectCtl, ""},
		{"output too large", Parts{PushBody: "{{range .l}}{{.}}{{end}}"}, map[string]any{"l": longList}, PartPushBody, ErrOutputTooLarge, ""},
		{"output too large from text", Parts{EmailText: "{{range 100}}" + strings.Repeat("y", 4000) + "{{end}}"}, nil, PartEmailText, ErrOutputTooLarge, ""},
		{"output too large in html", Parts{EmailHTML: "{{range .l}}<p>{{.}}</p>{{end}}"}, map[string]any{"l": longList}, PartEmailHTML, ErrOutputTooLarge, ""},
		{"range over a huge integer", Parts{PushBody: "{{range 1000000000}}{{end}}"}, nil, PartPushBody, ErrTooMuchWork, ""},
		{"range over a huge integer in html", Parts{EmailHTML: "{{range 1000000000}}{{end}}"}, nil, PartEmailHTML, ErrTooMuchWork, ""},
		{"nested ranges", Parts{SMSBody: "{{range .l}}{{range $.l}}{{end}}{{end}}"}, map[string]any{"l": longList}, PartSMSBody, ErrTooMuchWork, ""},
		{"doubling a string", Parts{PushBody: `{{$s := "ab"}}{{range 64}}{{$s = print $s $s}}{{end}}`}, nil, PartPushBody, ErrTooMuchWork, ""},
		{"doubling with printf", Parts{PushBody: `{{$s := "ab"}}{{range 64}}{{$s = printf "%s%s" $s $s}}{{end}}`}, nil, PartPushBody, ErrTooMuchWork, ""},
		{"escaping repeatedly", Parts{SMSBody: `{{$s := printf "%1000s" "<"}}{{range 2000}}{{$x := html $s}}{{end}}`}, nil, PartSMSBody, ErrTooMuchWork, ""},
		{"star width", Parts{PushBody: `{{printf "%*d" 100000000 1}}`}, nil, PartPushBody, nil, "'*' widths"},
		{"huge width", Parts{PushBody: `{{printf "%999999d" 1}}`}, nil, PartPushBody, nil, "add up to more than"},
		{"many widths", Parts{PushBody: `{{printf "` + strings.Repeat("%900d", 2) + `" 1 2}}`}, nil, PartPushBody, nil, "add up to more than"},
		{"huge precision", Parts{PushBody: `{{printf "%.5000f" 1.0}}`}, nil, PartPushBody, nil, "add up to more than"},
		{"printf of a list", Parts{PushBody: `{{printf "%900v" .l}}`}, map[string]any{"l": longList}, PartPushBody, nil, "arguments must be"},
		{"range over a string", Parts{PushBody: `{{range .s}}{{end}}`}, map[string]any{"s": "secret"}, PartPushBody, errNotIterable, ""},
		{"range over a number", Parts{PushBody: `{{range .n}}{{end}}`}, map[string]any{"n": 4.0}, PartPushBody, errNotIterable, ""},
		{"eq on objects", Parts{PushBody: `{{eq .a .a}}`}, map[string]any{"a": map[string]any{"k": "secret"}}, PartPushBody, errCompareKind, ""},
		{"eq on lists", Parts{PushBody: `{{ne .a "x"}}`}, map[string]any{"a": []any{"secret"}}, PartPushBody, errCompareKind, ""},
		{"eq mixed types", Parts{PushBody: `{{eq .a "x"}}`}, map[string]any{"a": 1.0}, PartPushBody, nil, "incompatible types for comparison: float64 and string"},
		{"nul byte", Parts{SMSBody: `{{printf "%c" 0}}`}, nil, PartSMSBody, errRenderedNUL, ""},
		{"invalid utf-8", Parts{SMSBody: `{{slice .s 0 1}}`}, map[string]any{"s": "é"}, PartSMSBody, errRenderedUTF8, ""},
		{"calling data", Parts{PushBody: `{{call .f}}`}, map[string]any{"f": "secret"}, PartPushBody, nil, "non-function"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := Parse(tc.parts)
			if err != nil {
				t.Fatal(err)
			}
			r, err := tmpl.Render(tc.data)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v; want an *Error", err)
			}
			if r != (Rendered{}) {
				t.Errorf("a failed render returned %+v", r)
			}
			if e.Part != tc.part {
				t.Errorf("part %q; want %q (error %v)", e.Part, tc.part, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v; want %v", err, tc.want)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q; want it to contain %q", err, tc.text)
			}
			for _, leak := range []string{"secret", "victim", "herald budget"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q quotes %q", err, leak)
				}
			}
		})
	}
}

func TestRenderNullAndAbsent(t *testing.T) {
	tmpl, err := Parse(Parts{
		PushBody:  "[{{.n}}] [{{.o.n}}] [{{if .n}}set{{else}}unset{{end}}] [{{range .n}}x{{else}}none{{end}}]",
		SMSBody:   "  ",
		EmailHTML: `<p title="{{.n}}">[{{.n}}]</p>`,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := tmpl.Render(jsonData(t, `{"n": null, "o": {"n": null}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Rendered{PushBody: "[] [] [unset] [none]", EmailHTML: `<p title="">[]</p>`}
	if r != want {
		t.Errorf("got %+v; want %+v", r, want)
	}
}

func TestRenderEq(t *testing.T) {
	tmpl, err := Parse(Parts{PushBody: `{{eq .s "a"}} {{eq .s "b" "a"}} {{eq .f 1.0}} {{eq .n nil}} {{eq .o nil}} {{eq .l .n}} {{ne .s "a"}} {{eq 1 .u}} {{eq .b true}}`})
	if err != nil {
		t.Fatal(err)
	}
	r, err := tmpl.Render(map[string]any{"s": "a", "f": 1.0, "n": nil, "o": map[string]any{}, "l": []any(nil), "u": uint(1), "b": true})
	if err != nil {
		t.Fatal(err)
	}
	if want := "true true true true false true false true true"; r.PushBody != want {
		t.Errorf("got %q; want %q", r.PushBody, want)
	}
}

func TestRenderConcurrent(t *testing.T) {
	tc := goldenTests[0]
	tmpl, err := Parse(tc.parts)
	if err != nil {
		t.Fatal(err)
	}
	data := jsonData(t, tc.data)
	want, err := tmpl.Render(data)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if got, err := tmpl.Render(data); err != nil || got != want {
					t.Errorf("concurrent render: %v, %+v", err, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzParse(f *testing.F) {
	for _, tc := range goldenTests {
		for i, s := range tc.parts.fields() {
			f.Add(uint8(i), *s)
		}
	}
	for _, s := range []string{
		"{{range 1000000000}}{{end}}",
		`{{$s := "ab"}}{{range 64}}{{$s = print $s $s}}{{end}}`,
		`{{printf "%0999d" 1}}`,
		`{{define "a"}}{{template "a" .}}{{end}}`,
		`<a href="{{.url}}" onclick="f({{.name}})">{{.name}}</a>`,
		"{{range $i, $e := .list}}{{$i}}{{$e}}{{break}}{{end}}",
		"{{with $x := .name}}{{$x}}{{else with .order}}{{.}}{{end}}",
	} {
		f.Add(uint8(0), s)
		f.Add(uint8(htmlIndex), s)
	}
	data := map[string]any{
		"name": "<b>Ada</b>", "url": "javascript:x", "more": 2.0, "list": []any{"a", 1.0, nil, map[string]any{"k": "v"}},
		"order": map[string]any{"id": "A-1", "items": []any{map[string]any{"qty": 1.0}}}, "n": nil,
	}
	f.Fuzz(func(t *testing.T, part uint8, src string) {
		var p Parts
		*p.fields()[int(part)%len(partNames)] = src
		tmpl, err := Parse(p)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Part != partNames[int(part)%len(partNames)] {
				t.Fatalf("error %v is not an *Error for the part", err)
			}
			return
		}
		r, err := tmpl.Render(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		for i, s := range r.fields() {
			if len(*s) > MaxOutputSize {
				t.Fatalf("%s rendered %d bytes", partNames[i], len(*s))
			}
		}
	})
}

// scriptURL matches an attribute whose value is a javascript: URL.
var scriptURL = regexp.MustCompile(`(?i)\s(href|src)=['"]?\s*javascript:`)

func FuzzRender(f *testing.F) {
	tc := goldenTests[1] // hostile_html: data in every HTML context
	tmpl, err := Parse(tc.parts)
	if err != nil {
		f.Fatal(err)
	}
	benign, err := tmpl.Render(map[string]any{"name": "Ada", "quote": "hi", "url": "/", "url2": "/", "img": "/", "color": "red"})
	if err != nil {
		f.Fatal(err)
	}
	tags := strings.Count(benign.EmailHTML, "<")
	seed := jsonData(f, tc.data)
	f.Add(seed["name"].(string), seed["quote"].(string), seed["url"].(string), seed["color"].(string))
	f.Add("Ada", "hello", "https://example.com/", "red")
	f.Add("\x00", "\xff", "\r\n", strings.Repeat("<", 1000))
	f.Add("0", "0", "/jAvAsCript:", "0")
	f.Fuzz(func(t *testing.T, name, quote, url, color string) {
		data := map[string]any{"name": name, "quote": quote, "url": url, "url2": url, "img": url, "color": color}
		r, err := tmpl.Render(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			for _, s := range []string{name, quote, url, color} {
				if len(s) >= 8 && strings.Contains(err.Error(), s) {
					t.Fatalf("error %q quotes data %q", err, s)
				}
			}
			return
		}
		for i, s := range r.fields() {
			if len(*s) > MaxOutputSize {
				t.Fatalf("%s rendered %d bytes", partNames[i], len(*s))
			}
		}
		if strings.ContainsAny(r.EmailSubject, "\r\n") {
			t.Fatalf("subject has a line break: %q", r.EmailSubject)
		}
		// The template's own markup is fixed, so any further tag, attribute break-out or script
		// URL in the HTML came from the data unescaped.
		if strings.Count(r.EmailHTML, "<") != tags {
			t.Fatalf("data added markup: %q", r.EmailHTML)
		}
		if scriptURL.MatchString(r.EmailHTML) {
			t.Fatalf("script URL survived: %q", r.EmailHTML)
		}
	})
}
