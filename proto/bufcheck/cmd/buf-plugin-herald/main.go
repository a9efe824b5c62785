// Command buf-plugin-herald is a buf check plugin serving Herald's own rules (package bufcheck).
// buf starts it for `buf breaking` and `buf lint` once proto/buf.yaml names it; `make` builds it
// into bin/.
package main

import (
	"buf.build/go/bufplugin/check"

	"github.com/heraldhq/herald/proto/bufcheck"
)

func main() {
	check.Main(bufcheck.Spec)
}
