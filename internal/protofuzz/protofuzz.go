// Package protofuzz serves the fuzz targets that drive gRPC handlers. It builds their requests:
// messages decoded from the fuzzer's bytes exactly as a gRPC server decodes them, with the
// fuzzer's text planted in one of their string fields; and it checks the answers as a client
// sees them. Wire bytes alone rarely reach a given field with a given
// value (a NUL in a category's description, say); planting lets the fuzzer put any text in any
// field the seeds populate.
package protofuzz

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/server"
)

// Request decodes raw into m, then sets the field-th string that m holds (counting set string
// fields and the elements of repeated ones, depth first, in field order; maps are left alone)
// to text, when m holds that many. It reports whether m is a request a gRPC server could pass
// to its handler: one that decodes, and re-encodes within server.MaxMessageSize (proto3 strings
// must be UTF-8).
func Request(m proto.Message, raw []byte, field int, text string) bool {
	if len(raw)+len(text) > server.MaxMessageSize || proto.Unmarshal(raw, m) != nil {
		return false
	}
	n := field
	plant(m.ProtoReflect(), &n, text)
	b, err := proto.Marshal(m)
	if err != nil || len(b) > server.MaxMessageSize {
		return false
	}
	proto.Reset(m)
	return proto.Unmarshal(b, m) == nil
}

// plant sets the n-th string of m to text and reports whether it found it; it counts n down
// past the strings it skips. It walks the fields in their declared order: Range's order changes
// from one build to the next, and a saved crasher must reach the same field in every build.
func plant(m protoreflect.Message, n *int, text string) bool {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsMap() || !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for j := 0; j < l.Len(); j++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					if *n == 0 {
						l.Set(j, protoreflect.ValueOfString(text))
						return true
					}
					*n--
				case protoreflect.MessageKind, protoreflect.GroupKind:
					if plant(l.Get(j).Message(), n, text) {
						return true
					}
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if *n == 0 {
				m.Set(fd, protoreflect.ValueOfString(text))
				return true
			}
			*n--
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if plant(v.Message(), n, text) {
				return true
			}
		}
	}
	return false
}

// MaxAnswer bounds the message of an error answer: a message must not grow with the request.
const MaxAnswer = 32 << 10

// Answer checks an error as the client sees it (errs.Status) and returns its code, OK for nil.
// It fails t unless the code is one the API documents for the caller's mistakes, never
// INTERNAL; an INVALID_ARGUMENT must carry a bounded list of field violations, each named in
// the message; and no message may be longer than MaxAnswer.
func Answer(t testing.TB, what string, err error) codes.Code {
	t.Helper()
	if err == nil {
		return codes.OK
	}
	st := errs.Status(err)
	if len(st.Message()) > MaxAnswer {
		t.Fatalf("%s: an answer of %d bytes", what, len(st.Message()))
	}
	switch st.Code() {
	case codes.InvalidArgument:
		var br *errdetails.BadRequest
		for _, d := range st.Details() {
			if x, ok := d.(*errdetails.BadRequest); ok {
				br = x
			}
		}
		if br == nil || len(br.FieldViolations) == 0 || len(br.FieldViolations) > errs.MaxViolations+1 {
			t.Fatalf("%s: INVALID_ARGUMENT %q without a bounded list of field violations", what, st.Message())
		}
		for _, fv := range br.FieldViolations {
			if fv.Field == "" || fv.Description == "" || !strings.Contains(st.Message(), fv.Field+": ") {
				t.Fatalf("%s: violation %+v is not named in %q", what, fv, st.Message())
			}
		}
	case codes.NotFound, codes.PermissionDenied, codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
	default:
		t.Fatalf("%s: answered %s %q (%v)", what, st.Code(), st.Message(), err)
	}
	return st.Code()
}
