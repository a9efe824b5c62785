package bufcheck

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"buf.build/go/bufplugin/check"
	"buf.build/go/bufplugin/check/checkutil"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// HTTPBindingSameRuleID is the ID of the rule that keeps every HTTP route of an RPC.
const HTTPBindingSameRuleID = "HTTP_BINDING_SAME"

// httpBindingSame only looks at RPCs present in both schemas: a deleted RPC is RPC_NO_DELETE's to
// report (it is in every built-in breaking category), and one change should make one error.
var httpBindingSame = &check.RuleSpec{
	ID:      HTTPBindingSameRuleID,
	Default: true,
	Purpose: "Checks that every HTTP binding (google.api.http) of an RPC keeps its method, path template, body and response_body.",
	Type:    check.RuleTypeBreaking,
	Handler: checkutil.NewMethodPairRuleHandler(checkHTTPBindingSame, checkutil.WithoutImports()),
}

// checkHTTPBindingSame treats an RPC's bindings (the rule and its additional_bindings) as the set
// of HTTP routes it serves: an HTTP client calls one route and cannot tell a primary binding from
// an additional one, so each route of the previous schema must still be served, unchanged, and a
// new route breaks no one.
func checkHTTPBindingSame(
	_ context.Context,
	w check.ResponseWriter,
	_ check.Request,
	method protoreflect.MethodDescriptor,
	against protoreflect.MethodDescriptor,
) error {
	previous, err := methodBindings(against)
	if err != nil {
		return err
	}
	current, err := methodBindings(method)
	if err != nil {
		return err
	}
	for _, p := range previous {
		if slices.ContainsFunc(current, p.same) {
			continue
		}
		var message string
		switch c, ok := replacement(p, previous, current); {
		case len(current) == 0:
			message = fmt.Sprintf("RPC %q lost its HTTP binding %s.", against.FullName(), p)
		case ok:
			message = fmt.Sprintf("RPC %q changed its HTTP binding %s to %s.", against.FullName(), p, c)
		default:
			message = fmt.Sprintf("RPC %q lost its HTTP binding %s; it now has %s.", against.FullName(), p, list(current))
		}
		w.AddAnnotation(
			check.WithMessage(message),
			check.WithDescriptor(method),
			check.WithAgainstDescriptor(against),
		)
	}
	return nil
}

// replacement names the binding that took p's place, when it is plain which one did: the one on
// the same route (so its body changed), or the only one where there was only one.
func replacement(p binding, previous, current []binding) (binding, bool) {
	for _, c := range current {
		if c.method == p.method && canonicalPath(c.path) == canonicalPath(p.path) {
			return c, true
		}
	}
	if len(previous) == 1 && len(current) == 1 {
		return current[0], true
	}
	return binding{}, false
}

// binding is one HTTP route of an RPC and how its messages map to HTTP bodies.
type binding struct {
	method       string // GET, POST, ... or a custom pattern's kind
	custom       bool
	path         string // as written in the .proto
	body         string
	responseBody string
}

func (b binding) same(o binding) bool {
	return b.method == o.method && canonicalPath(b.path) == canonicalPath(o.path) &&
		b.body == o.body && b.responseBody == o.responseBody
}

// String spells b as it reads in the .proto, so the message can be searched for there.
func (b binding) String() string {
	var s strings.Builder
	s.WriteString("{")
	if b.custom {
		fmt.Fprintf(&s, "custom: {kind: %q path: %q}", b.method, b.path)
	} else {
		fmt.Fprintf(&s, "%s: %q", strings.ToLower(b.method), b.path)
	}
	if b.body != "" {
		fmt.Fprintf(&s, " body: %q", b.body)
	}
	if b.responseBody != "" {
		fmt.Fprintf(&s, " response_body: %q", b.responseBody)
	}
	s.WriteString("}")
	return s.String()
}

func list(bs []binding) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.String()
	}
	return strings.Join(s, ", ")
}

// methodBindings returns the routes of m's google.api.http option, none when it has none.
func methodBindings(m protoreflect.MethodDescriptor) ([]binding, error) {
	rule, err := httpRule(m)
	if err != nil || rule == nil {
		return nil, err
	}
	// http.proto forbids nesting additional_bindings, so one level is all there is.
	bs := []binding{newBinding(rule)}
	for _, r := range rule.GetAdditionalBindings() {
		bs = append(bs, newBinding(r))
	}
	return bs, nil
}

func newBinding(r *annotations.HttpRule) binding {
	b := binding{body: r.GetBody(), responseBody: r.GetResponseBody()}
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		b.method, b.path = "GET", p.Get
	case *annotations.HttpRule_Put:
		b.method, b.path = "PUT", p.Put
	case *annotations.HttpRule_Post:
		b.method, b.path = "POST", p.Post
	case *annotations.HttpRule_Delete:
		b.method, b.path = "DELETE", p.Delete
	case *annotations.HttpRule_Patch:
		b.method, b.path = "PATCH", p.Patch
	case *annotations.HttpRule_Custom:
		b.method, b.path, b.custom = p.Custom.GetKind(), p.Custom.GetPath(), true
	}
	return b
}

// singleSegmentVariable matches a path variable without a template: "{name}".
var singleSegmentVariable = regexp.MustCompile(`\{([^{}=]+)\}`)

// canonicalPath spells a path template the one way grpc-gateway reads it, so that writing a
// variable's default template out is not taken for a change: http.proto defines "{var}" as
// "{var=*}".
func canonicalPath(path string) string {
	return singleSegmentVariable.ReplaceAllString(path, "{${1}=*}")
}

// httpRule returns m's google.api.http option, or nil. The options are read back from their wire
// form because how a custom option arrives depends on who parsed the descriptor (buf's image, or
// checktest's compiler): as an extension of a dynamic type, or as unknown fields. Unmarshalling
// with the global registry, where importing annotations put google.api.http, reads it either way.
func httpRule(m protoreflect.MethodDescriptor) (*annotations.HttpRule, error) {
	raw, err := proto.Marshal(m.Options())
	if err != nil {
		return nil, fmt.Errorf("read options of %s: %w", m.FullName(), err)
	}
	options := &descriptorpb.MethodOptions{}
	if err := proto.Unmarshal(raw, options); err != nil {
		return nil, fmt.Errorf("read options of %s: %w", m.FullName(), err)
	}
	if !proto.HasExtension(options, annotations.E_Http) {
		return nil, nil
	}
	rule, ok := proto.GetExtension(options, annotations.E_Http).(*annotations.HttpRule)
	if !ok {
		return nil, fmt.Errorf("option google.api.http of %s is not a google.api.HttpRule", m.FullName())
	}
	return rule, nil
}
