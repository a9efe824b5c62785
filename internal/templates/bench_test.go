package templates

import (
	"strings"
	"testing"
)

// BenchmarkRender renders a typical template, and hostile ones that stop only at a limit: their
// time is what one render can cost at worst.
func BenchmarkRender(b *testing.B) {
	busy := strings.Repeat("{{if $.a}}{{end}}", 20)
	for _, bc := range []struct {
		name  string
		parts Parts
	}{
		{"normal", goldenTests[0].parts},
		{"empty range", Parts{PushBody: "{{range 1000000000}}{{end}}"}},
		{"busy range", Parts{EmailHTML: "{{range 1000000000}}" + busy + "{{end}}"}},
		{"nested ranges", Parts{SMSBody: "{{range 1000}}{{range 1000}}{{range 1000}}{{end}}{{end}}{{end}}"}},
		{"printf in a range", Parts{PushBody: `{{range 1000000}}{{$x := printf "%500s|%499s" "a" "b"}}{{end}}`}},
		{"largest output", Parts{EmailText: "{{range 100}}" + strings.Repeat("y", 4000) + "{{end}}"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tmpl, err := Parse(bc.parts)
			if err != nil {
				b.Fatal(err)
			}
			data := jsonData(b, goldenTests[0].data)
			data["a"] = ""
			for b.Loop() {
				tmpl.Render(data)
			}
		})
	}
}
