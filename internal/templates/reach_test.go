package templates

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestTemplatesReachNoFilesOrEnvironment: template source comes from apps, so every Go template
// feature that could reach past the data - a function that reads files, the environment or
// runs commands, {{template}} of a file name, calling or reflecting into methods of the data -
// is refused, at parse or at render, with an error that says what is wrong, in every kind of
// part (text/template and html/template alike).
func TestTemplatesReachNoFilesOrEnvironment(t *testing.T) {
	const marker = "herald-reach-test-secret"
	t.Setenv("HERALD_REACH_TEST", marker)
	file := t.TempDir() + "/secret.txt"
	if err := os.WriteFile(file, []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"name": "ada", "f": "x", "n": 3.0, "list": []any{"a"}, "obj": map[string]any{"k": "v"}}
	tests := []struct {
		name, src string
		parse     bool   // refused at parse, else at render
		want      string // the error says this
		is        error  // or errors.Is this
	}{
		{"env function", `{{env "HERALD_REACH_TEST"}}`, true, `function "env" not defined`, nil},
		{"getenv function", `{{getenv "HERALD_REACH_TEST"}}`, true, `function "getenv" not defined`, nil},
		{"package-qualified call", `{{os.Getenv "HERALD_REACH_TEST"}}`, true, `function "os" not defined`, nil},
		{"readFile function", `{{readFile "` + file + `"}}`, true, `function "readFile" not defined`, nil},
		{"include function", `{{include "` + file + `" .}}`, true, `function "include" not defined`, nil},
		{"exec function", `{{exec "cat" "` + file + `"}}`, true, `function "exec" not defined`, nil},
		{"template of a file name", `{{template "` + file + `"}}`, true, "", errDefine},
		{"template with data", `{{template "secret.txt" .}}`, true, "", errDefine},
		{"define", `{{define "` + file + `"}}x{{end}}`, true, "", errDefine},
		{"block", `{{block "x" .}}{{end}}`, true, "", errDefine},
		{"sandbox internals", `{{_heraldText "x"}}`, true, "not defined", nil},
		{"environment as data", `{{.Env.HERALD_REACH_TEST}}`, false, `map has no entry for key "Env"`, nil},
		{"environment from the root", `{{$.Env}}`, false, `map has no entry for key "Env"`, nil},
		{"call on data", `{{call .f}}`, false, "non-function .f of type string", nil},
		{"call on a number", `{{call .n}}`, false, "non-function .n of type float64", nil},
		{"method of a string", `{{.name.String}}`, false, "can't evaluate field String", nil},
		{"method of an indexed value", `{{(index . "name").Len}}`, false, "can't evaluate field Len in type string", nil},
		{"method of a list", `{{.list.Len}}`, false, "can't evaluate field Len", nil},
		{"method of an object", `{{.obj.Keys}}`, false, `map has no entry for key "Keys"`, nil},
		{"printf of the whole data", `{{printf "%v" .}}`, false, "arguments must be strings, numbers, booleans or null", nil},
	}
	for _, tc := range tests {
		for _, part := range []string{PartSMSBody, PartEmailHTML} {
			t.Run(tc.name+"/"+part, func(t *testing.T) {
				p := Parts{EmailSubject: "Hi"}
				switch part {
				case PartSMSBody:
					p.SMSBody = tc.src
				case PartEmailHTML:
					p.EmailHTML = "<p>" + tc.src + "</p>"
				}
				tmpl, err := Parse(p)
				if err == nil && !tc.parse {
					var r Rendered
					r, err = tmpl.Render(data)
					if strings.Contains(r.SMSBody+r.EmailHTML, marker) {
						t.Fatalf("rendered the secret: %+v", r)
					}
				}
				switch {
				case err == nil && tc.parse:
					t.Fatalf("parsed; want a parse error")
				case err == nil:
					t.Fatalf("rendered; want a render error")
				}
				var e *Error
				if !errors.As(err, &e) || e.Part != part {
					t.Fatalf("error %v; want an *Error for part %s", err, part)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %v; want %v", err, tc.is)
				}
				if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q; want it to say %q", err, tc.want)
				}
				if strings.Contains(err.Error(), marker) {
					t.Errorf("error %q holds the secret", err)
				}
			})
		}
	}
}
