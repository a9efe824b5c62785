package ids_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/ids"
)

func TestV7Bounds(t *testing.T) {
	for range 100 {
		id := uuid.Must(uuid.NewV7())
		at := ids.V7Time(id)
		if d := time.Since(at); d < 0 || d > time.Minute {
			t.Fatalf("V7Time(%s) = %s, %s from now", id, at, d)
		}
		if first := ids.FirstV7(at); bytes.Compare(first[:], id[:]) > 0 {
			t.Errorf("FirstV7(V7Time(%s)) = %s, above the id", id, first)
		}
		if next := ids.FirstV7(at.Add(time.Millisecond)); bytes.Compare(next[:], id[:]) <= 0 {
			t.Errorf("FirstV7 of the next millisecond = %s, not above %s", next, id)
		}
		if first := ids.FirstV7(at); first.Version() != 7 || !ids.V7Time(first).Equal(at) {
			t.Errorf("FirstV7(%s) = %s: version %d, time %s", at, first, first.Version(), ids.V7Time(first))
		}
	}
	if got := ids.FirstV7(time.Time{}); got != uuid.Nil {
		t.Errorf("FirstV7 of the zero time = %s, want the nil UUID", got)
	}
}

func TestNewV7At(t *testing.T) {
	at := time.Date(2025, 6, 7, 8, 9, 10, 11_000_000, time.UTC)
	a, b := ids.NewV7At(at), ids.NewV7At(at)
	if a == b || a.Version() != 7 || a.Variant() != uuid.RFC4122 || !ids.V7Time(a).Equal(at) || !ids.V7Time(b).Equal(at) {
		t.Errorf("NewV7At(%s) = %s and %s: version %d, variant %s, times %s and %s",
			at, a, b, a.Version(), a.Variant(), ids.V7Time(a), ids.V7Time(b))
	}
}
