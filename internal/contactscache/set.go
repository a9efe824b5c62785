package contactscache

import (
	"hash/maphash"
	"slices"
	"sync"
)

// addressSet holds a 64-bit hash of every address that has a suppression (a superset: an
// address whose suppressions were lifted stays until the next load). It is complete only once
// loaded; until then, and after forget, it answers nothing.
//
// Memory: the loaded hashes are one sorted slice of exactly their number, 8 bytes an address
// (8 MB per million), plus the ones added since the load in a map (about 40 bytes each) that is
// merged into the slice once it holds an eighth as many. A load drops the old set first, and
// holds up to three times the new one's size for a moment while it reads and sorts the pages.
type addressSet struct {
	seed maphash.Seed
	max  int // more addresses than this are not held: lookups call instead

	mu      sync.RWMutex
	state   setState
	base    []uint64            // sorted
	added   map[uint64]struct{} // since the load
	pending []uint64            // changed while a load is under way
	gen     uint64              // bumped by beginLoad and forget, so a stale load is not installed
}

type setState int

const (
	setAbsent setState = iota
	setLoading
	setLoaded
)

func newAddressSet(max int) *addressSet {
	return &addressSet{seed: maphash.MakeSeed(), max: max}
}

// hash is the set's hash of an address, that of its feed key (AddressKey) written in parts so
// that nothing is allocated.
func (s *addressSet) hash(ch, address string) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString("a:")
	h.WriteString(ch)
	h.WriteByte(':')
	h.WriteString(address)
	return h.Sum64()
}

// hashKey is the set's hash of a feed key "a:<channel>:<address>".
func (s *addressSet) hashKey(key string) uint64 { return maphash.String(s.seed, key) }

// has reports whether h may have a suppression; known is false while the set is not loaded.
func (s *addressSet) has(h uint64) (member, known bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.state != setLoaded {
		return false, false
	}
	if _, ok := s.added[h]; ok {
		return true, true
	}
	_, ok := slices.BinarySearch(s.base, h)
	return ok, true
}

// add records that h's suppressions changed: it may have one now.
func (s *addressSet) add(h uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case setLoading:
		s.pending = append(s.pending, h)
	case setLoaded:
		s.added[h] = struct{}{}
		switch {
		case len(s.base)+len(s.added) > s.max:
			s.forgetLocked()
		case len(s.added) > 1024+len(s.base)/8:
			s.mergeLocked()
		}
	}
}

func (s *addressSet) mergeLocked() {
	merged := make([]uint64, 0, len(s.base)+len(s.added))
	merged = append(merged, s.base...)
	for h := range s.added {
		merged = append(merged, h)
	}
	slices.Sort(merged)
	s.base, s.added = slices.Compact(merged), map[uint64]struct{}{}
}

// sortedSet returns hashes sorted, without repeats, in a slice of exactly their number: the
// load's slice grew by doubling, which would keep up to twice the memory.
func sortedSet(hashes []uint64) []uint64 {
	slices.Sort(hashes)
	return slices.Clone(slices.Compact(hashes))
}

// forget drops everything: the set answers nothing until the next load is installed.
func (s *addressSet) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked()
}

func (s *addressSet) forgetLocked() {
	s.state, s.base, s.added, s.pending = setAbsent, nil, nil, nil
	s.gen++
}

// beginLoad starts recording changes for a load, and returns the load's generation. Changes
// added from now on are kept for install, so the load may read while they happen.
func (s *addressSet) beginLoad() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked()
	s.state = setLoading
	return s.gen
}

// install makes the loaded hashes (sorted, unique), with the changes recorded since beginLoad,
// the set; it reports false when a forget came in between (then nothing changes).
func (s *addressSet) install(gen uint64, hashes []uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.state != setLoading {
		return false
	}
	s.state, s.base, s.added = setLoaded, hashes, make(map[uint64]struct{}, len(s.pending))
	for _, h := range s.pending {
		s.added[h] = struct{}{}
	}
	s.pending = nil
	return true
}

// abandon ends the load of generation gen without a set.
func (s *addressSet) abandon(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen == s.gen {
		s.forgetLocked()
	}
}

// loaded reports whether the set answers.
func (s *addressSet) loaded() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state == setLoaded
}

// size returns how many addresses the set holds (0 when it is not loaded).
func (s *addressSet) size() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.base) + len(s.added)
}
