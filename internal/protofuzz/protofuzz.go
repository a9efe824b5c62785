// Package protofuzz builds the requests of the fuzz targets that drive gRPC handlers: messages
// decoded from the fuzzer's bytes exactly as a gRPC server decodes them, with the fuzzer's text
// planted in one of their string fields. Wire bytes alone rarely reach a given field with a given
// value (a NUL in a category's description, say); planting lets the fuzzer put any text in any
// field the seeds populate.
package protofuzz

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
// past the strings it skips.
func plant(m protoreflect.Message, n *int, text string) bool {
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					if *n == 0 {
						l.Set(i, protoreflect.ValueOfString(text))
						found = true
					}
					*n--
				case protoreflect.MessageKind, protoreflect.GroupKind:
					found = plant(l.Get(i).Message(), n, text)
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if *n == 0 {
				m.Set(fd, protoreflect.ValueOfString(text))
				found = true
			}
			*n--
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			found = plant(v.Message(), n, text)
		}
		return !found
	})
	return found
}
