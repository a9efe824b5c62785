package contactscache

import (
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// The set hashes an address as its feed key, so that a key from the feed and an address
// from a lookup or a load meet.
func TestHashIsTheFeedKeys(t *testing.T) {
	s := newAddressSet(10)
	for _, tg := range []Target{{"email", "ada@example.com"}, {"sms", "+14155550100"}, {"ios", ""}, {"email", "a:b@c"}} {
		if s.hash(string(tg.Channel), tg.Address) != s.hashKey(addressKey(tg.Channel, tg.Address)) {
			t.Errorf("%v: the address and its feed key hash apart", tg)
		}
	}
}

func TestSetLifecycle(t *testing.T) {
	s := newAddressSet(100)
	a, b, c := s.hash("email", "a@example.com"), s.hash("email", "b@example.com"), s.hash("sms", "+14155550100")
	if _, known := s.has(a); known {
		t.Fatal("a set never loaded answers")
	}
	s.add(a) // before any load: the load will read it
	gen := s.beginLoad()
	s.add(b) // while loading: kept for the install
	if _, known := s.has(b); known {
		t.Fatal("a set still loading answers")
	}
	if !s.install(gen, []uint64{a}) {
		t.Fatal("install refused")
	}
	for h, want := range map[uint64]bool{a: true, b: true, c: false} {
		if member, known := s.has(h); !known || member != want {
			t.Errorf("has(%x) = %v, %v; want %v", h, member, known, want)
		}
	}
	s.add(c)
	if member, _ := s.has(c); !member {
		t.Error("an address added after the load is not a member")
	}

	// A forget during a load voids it: its pages may predate changes no poll will report.
	gen = s.beginLoad()
	s.forget()
	if s.install(gen, []uint64{a}) {
		t.Fatal("installed a load that a forget voided")
	}
	if _, known := s.has(a); known || s.size() != 0 {
		t.Fatal("a forgotten set answers")
	}
}

// TestSetMerges: additions past an eighth of the loaded set move into the sorted slice, and
// every member stays one.
func TestSetMerges(t *testing.T) {
	s := newAddressSet(1 << 20)
	gen := s.beginLoad()
	base := make([]uint64, 8000)
	for i := range base {
		base[i] = uint64(i) * 2
	}
	s.install(gen, base)
	for i := range 3000 {
		s.add(uint64(i)*2 + 1)
	}
	if len(s.added) >= 3000 || !slices.IsSorted(s.base) {
		t.Fatalf("%d additions still in the map, base sorted: %v", len(s.added), slices.IsSorted(s.base))
	}
	for i := range uint64(6000) { // the even ones loaded, the odd ones added
		if member, _ := s.has(i); !member {
			t.Fatalf("%d is not a member", i)
		}
	}
	if member, _ := s.has(6001); member {
		t.Fatal("6001 is a member")
	}
	if s.size() != 11000 {
		t.Fatalf("size %d, want 11000", s.size())
	}
}

// TestSetBound: a set that grows past its bound is dropped (lookups then call) rather than
// kept.
func TestSetBound(t *testing.T) {
	s := newAddressSet(10)
	s.install(s.beginLoad(), []uint64{1, 2, 3})
	for h := range uint64(20) {
		s.add(100 + h)
	}
	if _, known := s.has(1); known {
		t.Fatal("a set past its bound still answers")
	}
}

// TestSetMemory measures the documented figure: a set of a million addresses, loaded as a
// load does it (the hashes appended page by page), takes 8 MB.
func TestSetMemory(t *testing.T) {
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := newAddressSet(2 * n)
	var hashes []uint64
	for i := range n {
		hashes = append(hashes, s.hash("email", strconv.Itoa(i)+"@example.com"))
	}
	s.install(s.beginLoad(), sortedSet(hashes))
	runtime.GC()
	runtime.ReadMemStats(&after)
	perAddress := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes an address", perAddress)
	if perAddress > 8.5 {
		t.Fatalf("%.1f bytes an address, documented as 8", perAddress)
	}
	runtime.KeepAlive(s)
}
