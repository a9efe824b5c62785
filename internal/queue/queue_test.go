package queue

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// FuzzParseBody checks that a message body is a delivery id or an error, and that the id a
// message carries is the one the notifier published (its canonical form).
func FuzzParseBody(f *testing.F) {
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	for _, s := range []string{id.String(), strings.ToUpper(id.String()), "{" + id.String() + "}", "urn:uuid:" + id.String(),
		strings.ReplaceAll(id.String(), "-", ""), MsgID(id, 2), "", "not-a-uuid", id.String() + "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ParseBody(body)
		if err != nil {
			if got != uuid.Nil {
				t.Fatalf("ParseBody(%q) = %v with error %v", body, got, err)
			}
			return
		}
		again, err := ParseBody([]byte(got.String()))
		if err != nil || again != got {
			t.Fatalf("ParseBody(%q) = %v, whose canonical form parses as %v, %v", body, got, again, err)
		}
		if !strings.EqualFold(strings.ReplaceAll(string(body), "-", ""), strings.ReplaceAll(got.String(), "-", "")) &&
			!strings.Contains(strings.ToLower(string(body)), got.String()) {
			t.Fatalf("ParseBody(%q) = %v, not the id it names", body, got)
		}
	})
}

func TestMsgID(t *testing.T) {
	id := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	if got := MsgID(id, 0); got != id.String() {
		t.Errorf("MsgID(id, 0) = %q", got)
	}
	if got := MsgID(id, 3); got != id.String()+"/3" {
		t.Errorf("MsgID(id, 3) = %q", got)
	}
}
