package ratelimit

import (
	"slices"
	"testing"
	"time"
)

func TestLogRoundTrip(t *testing.T) {
	day := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC).UnixMilli()
	tests := map[string][]int64{
		"empty":     nil,
		"one":       {day},
		"three":     {day, day + 3_600_000, day + 7_200_000},
		"same time": {day, day, day},
		"negative":  {-5, 0, 7},
	}
	for name, events := range tests {
		b := encodeLog(events)
		if got := decodeLog(b); !slices.Equal(got, events) {
			t.Errorf("%s: decode(encode(%v)) = %v", name, events, got)
		}
	}
	if n := len(encodeLog(tests["three"])); n > 16 {
		t.Errorf("three events in a day take %d bytes", n)
	}
}

func TestDecodeDamaged(t *testing.T) {
	for name, b := range map[string][]byte{
		"other version": {2, 0},
		"cut varint":    {logVersion, 0x80},
		"huge gap":      append(encodeLog([]int64{1}), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
	} {
		if got := decodeLog(b); got != nil {
			t.Errorf("%s: decodeLog = %v, want an empty log", name, got)
		}
	}
}

func TestBucketRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 123456000, time.UTC)
	tokens, got, ok := decodeBucket(encodeBucket(12.5, at))
	if !ok || tokens != 12.5 || !got.Equal(at) {
		t.Errorf("decodeBucket = %v, %v, %v", tokens, got, ok)
	}
	for name, b := range map[string][]byte{
		"empty":    nil,
		"short":    {bucketVersion, 1, 2},
		"trailing": append(encodeBucket(1, at), 0),
		"negative": encodeBucket(-1, at),
	} {
		if _, _, ok := decodeBucket(b); ok {
			t.Errorf("%s: decodeBucket accepted %x", name, b)
		}
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog([]int64{1, 2, 3}))
	f.Add([]byte{logVersion, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		events := decodeLog(b)
		if !slices.IsSorted(events) {
			t.Errorf("decodeLog(%x) = %v: not sorted", b, events)
		}
		if events != nil && !slices.Equal(decodeLog(encodeLog(events)), events) {
			t.Errorf("round trip of %v changed it", events)
		}
	})
}
