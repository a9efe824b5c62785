package links

import (
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"
)

// Epoch is time zero of link ids: an id holds the seconds since Epoch in its high 32 bits.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// MakeID returns the link id issued at t with sequence number seq. Ids sort by the second they
// were issued in; within a second, by sequence. Two ids are equal only when 2^32 sequence numbers
// were issued within one second.
func MakeID(t time.Time, seq int64) int64 {
	secs := max(int64(t.Sub(Epoch)/time.Second), 0)
	return secs<<32 | seq&0xffffffff
}

// IDTime returns the second id was issued in.
func IDTime(id int64) time.Time {
	return Epoch.Add(time.Duration(id>>32) * time.Second)
}

// FirstID returns the smallest id issued at or after t: ids older than t are those below it.
func FirstID(t time.Time) int64 { return MakeID(t, 0) }

// CodeLen is the length of every code: 62^11 > 2^64, so each 64-bit value has one 11-character
// code, and a code of any other length is malformed without further work.
const CodeLen = 11

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var digit [256]int8

func init() {
	for i := range digit {
		digit[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		digit[alphabet[i]] = int8(i)
	}
}

// Codec turns link ids into codes and back with a keyed permutation of 64-bit values.
//
// The permutation is Triple DES on the id's 8 bytes: a standard 64-bit block cipher from the
// standard library, where a home-made Feistel network would need its own analysis. One block,
// never a stream, is enciphered per id, so the birthday bound that retires 64-bit ciphers for
// bulk data (Sweet32) does not apply, and a deciphering costs well under a microsecond. Without
// the key, a code says nothing of the codes issued before or after it: a guessed code is a random
// 64-bit value, which decodes to an id with a time outside the issued range almost always
// (Plausible), and such codes are refused without touching the database.
type Codec struct {
	block cipher.Block
}

// NewCodec returns a Codec keyed by secret (at least 16 bytes). The cipher key is derived from it
// with HMAC-SHA256, so any secret length works and the same secret yields the same codes on every
// replica.
func NewCodec(secret []byte) (*Codec, error) {
	if len(secret) < 16 {
		return nil, errors.New("the link key must be at least 16 bytes")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("herald short link ids v1"))
	key := m.Sum(nil)[:24]
	b, err := des.NewTripleDESCipher(key)
	if err != nil {
		return nil, err
	}
	return &Codec{block: b}, nil
}

// Encode returns the code of id.
func (c *Codec) Encode(id int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	c.block.Encrypt(b[:], b[:])
	v := binary.BigEndian.Uint64(b[:])
	var out [CodeLen]byte
	for i := CodeLen - 1; i >= 0; i-- {
		out[i] = alphabet[v%62]
		v /= 62
	}
	return string(out[:])
}

// Decode returns the id of a code, or false when the code is malformed: not CodeLen base62
// characters, or a value over 64 bits.
func (c *Codec) Decode(code string) (int64, bool) {
	if len(code) != CodeLen {
		return 0, false
	}
	var v uint64
	for i := 0; i < CodeLen; i++ {
		d := digit[code[i]]
		if d < 0 {
			return 0, false
		}
		hi := v * 62
		if hi/62 != v {
			return 0, false
		}
		v = hi + uint64(d)
		if v < hi {
			return 0, false
		}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	c.block.Decrypt(b[:], b[:])
	return int64(binary.BigEndian.Uint64(b[:])), true
}

// Plausible reports whether id could have been issued and not yet expired at now: a positive id
// issued between now-retention and now (with a minute's grace for clocks). A random 64-bit value
// passes with odds of about retention/2^32 s (0.2% for 90 days).
func Plausible(id int64, now time.Time, retention time.Duration) bool {
	if id <= 0 {
		return false
	}
	t := IDTime(id)
	return !t.After(now.Add(time.Minute)) && t.Add(retention).After(now.Add(-time.Second))
}
