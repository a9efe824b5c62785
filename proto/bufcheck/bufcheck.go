// Package bufcheck holds Herald's own buf check rules, which cmd/buf-plugin-herald serves to
// `buf breaking` (proto/buf.yaml registers the plugin). buf's built-in rules compare a schema's
// types and names but not custom options, so a change to the HTTP API, which lives in the
// google.api.http option, would otherwise pass as compatible.
//
// It is a module of its own, outside go.work, so that bufplugin's dependencies never raise the
// versions the services build with.
package bufcheck

import "buf.build/go/bufplugin/check"

// Spec is the plugin's whole rule set, for check.Main.
var Spec = &check.Spec{
	Rules: []*check.RuleSpec{httpBindingSame},
}
