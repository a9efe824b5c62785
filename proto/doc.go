// Package proto holds Herald's public API definitions (herald/v1/*.proto) and the Go code
// generated from them (gen/herald/v1, package heraldv1). Regenerate with `make proto`; never edit
// gen/ by hand.
package proto
