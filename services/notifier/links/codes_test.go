package links

import (
	"context"
	"strings"
	"testing"
	"time"
)

func testCodec(t testing.TB) *Codec {
	c, err := NewCodec([]byte("0123456789abcdef-test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCodesRoundTripAndDoNotFollowTheIDs(t *testing.T) {
	c := testCodec(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var prev string
	for seq := int64(1); seq < 2000; seq++ {
		id := MakeID(now, seq)
		code := c.Encode(id)
		if len(code) != CodeLen {
			t.Fatalf("code %q has %d characters", code, len(code))
		}
		got, ok := c.Decode(code)
		if !ok || got != id {
			t.Fatalf("Decode(Encode(%d)) = %d, %v", id, got, ok)
		}
		if prev != "" && commonPrefix(prev, code) > 3 {
			t.Errorf("codes of consecutive ids share a long prefix: %s %s", prev, code)
		}
		prev = code
	}
	other, _ := NewCodec([]byte("another key of sixteen bytes"))
	if other.Encode(MakeID(now, 1)) == c.Encode(MakeID(now, 1)) {
		t.Error("two keys give the same code")
	}
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func TestDecodeRefusesMalformedCodes(t *testing.T) {
	c := testCodec(t)
	for name, code := range map[string]string{
		"empty": "", "short": "abc", "long": strings.Repeat("a", 12), "symbol": "abcdefghij!",
		"overflow": "zzzzzzzzzzz", "utf8": "abcdefghijé",
	} {
		if _, ok := c.Decode(code); ok {
			t.Errorf("%s: %q decoded", name, code)
		}
	}
}

func TestRandomCodesAreRarelyPlausible(t *testing.T) {
	c := testCodec(t)
	now := time.Now()
	plausible := 0
	const n = 20000
	for i := range n {
		code := c.Encode(int64(i)*7919 + 1<<62) // ids never issued
		code = code[:5] + string(alphabet[i%62]) + code[6:]
		if id, ok := c.Decode(code); ok && Plausible(id, now, 90*24*time.Hour) {
			plausible++
		}
	}
	if plausible > n/100 {
		t.Errorf("%d of %d random codes decode to plausible ids", plausible, n)
	}
	if !Plausible(MakeID(now, 5), now, time.Hour) || Plausible(MakeID(now.Add(-2*time.Hour), 5), now, time.Hour) ||
		Plausible(MakeID(now.Add(time.Hour), 5), now, 24*time.Hour) {
		t.Error("Plausible misjudges issued ids")
	}
}

func TestAllocatorReservesBlocks(t *testing.T) {
	next, calls := int64(1), 0
	a := &Allocator{Reserve: func(context.Context) (int64, error) {
		calls++
		v := next
		next += BlockSize
		return v, nil
	}}
	seen := map[int64]bool{}
	for range 2500 {
		ids, err := a.IDs(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if seen[ids[0]&0xffffffff] {
			t.Fatalf("sequence %d issued twice", ids[0]&0xffffffff)
		}
		seen[ids[0]&0xffffffff] = true
	}
	if calls != 3 {
		t.Errorf("2500 ids took %d reservations, want 3", calls)
	}
}
