package bufcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"buf.build/go/bufplugin/check/checktest"
)

func TestSpec(t *testing.T) {
	checktest.SpecTest(t, Spec)
}

// googleapis is the vendored google/api protos that Herald's own import, so the cases compile
// against the very google.api.http buf sees.
const googleapis = "../third_party/googleapis"

func TestHTTPBindingSame(t *testing.T) {
	const (
		send        = `rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things:send" body: "*" }; }`
		sendPlain   = `rpc Send(Request) returns (Response);`
		get         = `rpc Get(Request) returns (Response) { option (google.api.http) = { get: "/v1/things/{id}" }; }`
		sendAndFlag = `rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things:send" body: "*" additional_bindings { post: "/v1/things/{id}:send" body: "*" } }; }`
	)
	tests := []struct {
		name     string
		previous []string // the RPCs of the previous schema, one a line
		current  []string
		want     []string // the annotations' messages, on the current schema's line of the RPC
	}{
		{
			name:     "unchanged",
			previous: []string{send, get},
			current:  []string{send, get},
		},
		{
			name:     "changed path",
			previous: []string{send},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things:submit" body: "*" }; }`},
			want:     []string{`RPC "test.v1.TestService.Send" changed its HTTP binding {post: "/v1/things:send" body: "*"} to {post: "/v1/things:submit" body: "*"}.`},
		},
		{
			name:     "changed method",
			previous: []string{send},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { put: "/v1/things:send" body: "*" }; }`},
			want:     []string{`RPC "test.v1.TestService.Send" changed its HTTP binding {post: "/v1/things:send" body: "*"} to {put: "/v1/things:send" body: "*"}.`},
		},
		{
			name:     "changed body",
			previous: []string{send},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things:send" body: "thing" }; }`},
			want:     []string{`RPC "test.v1.TestService.Send" changed its HTTP binding {post: "/v1/things:send" body: "*"} to {post: "/v1/things:send" body: "thing"}.`},
		},
		{
			name:     "changed response_body",
			previous: []string{send},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things:send" body: "*" response_body: "thing" }; }`},
			want:     []string{`RPC "test.v1.TestService.Send" changed its HTTP binding {post: "/v1/things:send" body: "*"} to {post: "/v1/things:send" body: "*" response_body: "thing"}.`},
		},
		{
			name:     "changed custom method",
			previous: []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { custom: { kind: "SEND" path: "/v1/things" } body: "*" }; }`},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { custom: { kind: "PUSH" path: "/v1/things" } body: "*" }; }`},
			want:     []string{`RPC "test.v1.TestService.Send" changed its HTTP binding {custom: {kind: "SEND" path: "/v1/things"} body: "*"} to {custom: {kind: "PUSH" path: "/v1/things"} body: "*"}.`},
		},
		{
			name:     "removed binding",
			previous: []string{send, get},
			current:  []string{sendPlain, get},
			want:     []string{`RPC "test.v1.TestService.Send" lost its HTTP binding {post: "/v1/things:send" body: "*"}.`},
		},
		{
			name:     "removed additional binding",
			previous: []string{sendAndFlag},
			current:  []string{send},
			want:     []string{`RPC "test.v1.TestService.Send" lost its HTTP binding {post: "/v1/things/{id}:send" body: "*"}; it now has {post: "/v1/things:send" body: "*"}.`},
		},
		{
			// RPC_NO_DELETE, in every built-in category, reports it.
			name:     "removed RPC",
			previous: []string{send, get},
			current:  []string{get},
		},
		{
			name:     "added binding on an unbound RPC",
			previous: []string{sendPlain},
			current:  []string{send},
		},
		{
			name:     "added additional binding",
			previous: []string{send},
			current:  []string{sendAndFlag},
		},
		{
			name:     "primary binding moved to additional_bindings",
			previous: []string{sendAndFlag},
			current:  []string{`rpc Send(Request) returns (Response) { option (google.api.http) = { post: "/v1/things/{id}:send" body: "*" additional_bindings { post: "/v1/things:send" body: "*" } }; }`},
		},
		{
			name:     "variable's default template written out",
			previous: []string{get},
			current:  []string{`rpc Get(Request) returns (Response) { option (google.api.http) = { get: "/v1/things/{id=*}" }; }`},
		},
		{
			name:     "variable renamed",
			previous: []string{get},
			current:  []string{`rpc Get(Request) returns (Response) { option (google.api.http) = { get: "/v1/things/{name}" }; }`},
			want:     []string{`RPC "test.v1.TestService.Get" changed its HTTP binding {get: "/v1/things/{id}"} to {get: "/v1/things/{name}"}.`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			previous := writeSchema(t, tt.previous)
			current := writeSchema(t, tt.current)
			var want []checktest.ExpectedAnnotation
			for _, message := range tt.want {
				want = append(want, checktest.ExpectedAnnotation{
					RuleID:              HTTPBindingSameRuleID,
					Message:             message,
					FileLocation:        rpcLocation(t, tt.current, message),
					AgainstFileLocation: rpcLocation(t, tt.previous, message),
				})
			}
			checktest.CheckTest{
				Request: &checktest.RequestSpec{
					Files:        &checktest.ProtoFileSpec{DirPaths: []string{current, googleapis}, FilePaths: []string{schemaFile}},
					AgainstFiles: &checktest.ProtoFileSpec{DirPaths: []string{previous, googleapis}, FilePaths: []string{schemaFile}},
				},
				Spec:                Spec,
				ExpectedAnnotations: want,
			}.Run(t)
		})
	}
}

const schemaFile = "test/v1/test.proto"

// schemaHeader precedes the RPCs, one a line, and the closing brace.
const schemaHeader = `syntax = "proto3";

package test.v1;

import "google/api/annotations.proto";

message Request {
  string id = 1;
  string thing = 2;
}

message Response {
  string thing = 1;
}

service TestService {
`

// writeSchema writes a schema with the given RPCs into a new directory and returns it.
func writeSchema(t *testing.T, rpcs []string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, filepath.FromSlash(schemaFile))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	src := schemaHeader + "  " + strings.Join(rpcs, "\n  ") + "\n}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rpcLocation is where buf points for the RPC that message names: its whole line in the schema
// writeSchema makes of rpcs (zero-based, as checktest counts).
func rpcLocation(t *testing.T, rpcs []string, message string) *checktest.ExpectedFileLocation {
	t.Helper()
	headerLines := strings.Count(schemaHeader, "\n")
	for i, rpc := range rpcs {
		name := strings.Fields(rpc)[1]
		name = name[:strings.Index(name, "(")]
		if strings.Contains(message, fmt.Sprintf(`TestService.%s"`, name)) {
			return &checktest.ExpectedFileLocation{
				FileName:    schemaFile,
				StartLine:   headerLines + i,
				StartColumn: 2,
				EndLine:     headerLines + i,
				EndColumn:   2 + len(rpc),
			}
		}
	}
	t.Fatalf("no RPC of %q is named in %q", rpcs, message)
	return nil
}
