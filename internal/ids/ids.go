// Package ids maps times to Herald's ids and back. Ids are UUIDv7: their first 48 bits are the
// millisecond they were made in, so "made before t" is a range of a primary key, which
// statistics and retention read and delete by.
package ids

import (
	"crypto/rand"
	"time"

	"github.com/google/uuid"
)

// FirstV7 returns the smallest UUIDv7 of the millisecond t falls in: the ids made before t sort
// below it. A time before 1970 gives the nil UUID, which sorts below every id.
func FirstV7(t time.Time) uuid.UUID {
	var id uuid.UUID
	ms := t.UnixMilli()
	if ms < 0 {
		return id
	}
	for i := 5; i >= 0; i-- {
		id[i] = byte(ms)
		ms >>= 8
	}
	id[6] = 0x70 // version 7
	id[8] = 0x80 // RFC 9562 variant
	return id
}

// V7Time returns the millisecond the UUIDv7 id was made in.
func V7Time(id uuid.UUID) time.Time {
	var ms int64
	for _, b := range id[:6] {
		ms = ms<<8 | int64(b)
	}
	return time.UnixMilli(ms)
}

// NewV7At returns a new UUIDv7 of the millisecond of t, as uuid.NewV7 would have made it then:
// for rows that stand for the past (tests, imports).
func NewV7At(t time.Time) uuid.UUID {
	id := FirstV7(t)
	var r [10]byte
	rand.Read(r[:])
	id[6] |= r[0] & 0x0f
	id[7] = r[1]
	id[8] |= r[2] & 0x3f
	copy(id[9:], r[3:])
	return id
}
