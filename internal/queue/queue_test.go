package queue

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func ids(n int) []uuid.UUID {
	out := make([]uuid.UUID, n)
	for i := range out {
		out[i] = uuid.Must(uuid.NewV7())
	}
	return out
}

func TestBatchRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 999, MaxBatch} {
		in := ids(n)
		got, err := ParseBatch(EncodeBatch(in))
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("%d ids: ParseBatch(EncodeBatch(ids)) = %d ids, %v", n, len(got), err)
		}
	}
}

func TestParseBatch(t *testing.T) {
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	for _, tc := range []struct {
		name string
		body []byte
		want []uuid.UUID
	}{
		{"one id as text, as before batches", []byte(id.String()), []uuid.UUID{id}},
		{"empty", nil, nil},
		{"format byte alone", []byte{batchFormat}, nil},
		{"a partial id", append([]byte{batchFormat}, id[:15]...), nil},
		{"an id and a byte", append(append([]byte{batchFormat}, id[:]...), 0), nil},
		{"more than MaxBatch", append([]byte{batchFormat}, make([]byte, 16*(MaxBatch+1))...), nil},
		{"text that is no id", []byte("not-a-uuid"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBatch(tc.body)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("ParseBatch = %v, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseBatch = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestEncodeBatchRefusesTooMany(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("EncodeBatch of MaxBatch+1 ids did not panic")
		}
	}()
	EncodeBatch(ids(MaxBatch + 1))
}

// FuzzParseBatch checks that a message body is a batch of ids or an error, never a panic, and
// that a batch read back encodes to the body it came from.
func FuzzParseBatch(f *testing.F) {
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	for _, s := range [][]byte{[]byte(id.String()), []byte(strings.ToUpper(id.String())), []byte("urn:uuid:" + id.String()),
		EncodeBatch([]uuid.UUID{id}), EncodeBatch([]uuid.UUID{id, id}), {}, {batchFormat}, []byte("not-a-uuid")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ParseBatch(body)
		if err != nil {
			if got != nil {
				t.Fatalf("ParseBatch(%q) = %v with error %v", body, got, err)
			}
			return
		}
		if len(got) == 0 || len(got) > MaxBatch {
			t.Fatalf("ParseBatch(%q) = %d ids", body, len(got))
		}
		if body[0] == batchFormat && !bytes.Equal(EncodeBatch(got), body) {
			t.Fatalf("ParseBatch(%q) = %v, which encodes to another body", body, got)
		}
	})
}
