package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxLimit is the largest Cap.Limit Take accepts: the key's value holds Limit timestamps.
const MaxLimit = 10_000

// Cap is one frequency cap to check: at most Limit events per Window on Key.
type Cap struct {
	// Key names what is capped, as built by CapKey.
	Key string
	// Limit is the number of events allowed in any window; below 1 nothing is allowed.
	Limit int
	// Window is the sliding window's length: at least a millisecond, at most Config.MaxWindow.
	Window time.Duration
	// At is the event's time; the zero time means now.
	At time.Time
}

// CapKey returns the key for the cap on userID's notifications of category sent on channel;
// an empty channel means a cap across all channels of the category.
func CapKey(userID, category, channel string) string {
	sum := sha256.Sum256([]byte(userID))
	return "cap." + escape(category) + "." + escape(channel) + "." + userEncoding.EncodeToString(sum[:15])
}

var userEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// escape maps s to a key token: [A-Za-z0-9_-] as they are, any other byte as =XX, and the
// empty string as "=" (which no non-empty string maps to).
func escape(s string) string {
	if s == "" {
		return "="
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// Take records one event for each check that is under its cap, and reports, per check, whether
// it was taken (true) or capped (false). The checks are independent of each other and run
// concurrently. It returns an error wrapping ErrInvalid for a check that can never be answered,
// and one wrapping ErrUnavailable if the store does not answer in time; the results are then
// nil, though checks that did succeed have recorded their event.
func (l *Limiter) Take(ctx context.Context, checks []Cap) ([]bool, error) {
	for _, c := range checks {
		if c.Limit > MaxLimit || c.Window < time.Millisecond || c.Window > l.cfg.MaxWindow {
			return nil, fmt.Errorf("%w: cap %s: %d per %v (at most %d per %v)",
				ErrInvalid, c.Key, c.Limit, c.Window, MaxLimit, l.cfg.MaxWindow)
		}
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	taken := make([]bool, len(checks))
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i := range checks {
		if i == len(checks)-1 {
			taken[i], errs[i] = l.take(ctx, checks[i])
			break
		}
		wg.Go(func() { taken[i], errs[i] = l.take(ctx, checks[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return taken, nil
}

// Peek reports, per check, whether Take would take it now, recording nothing (for dry runs).
// Errors as Take's.
func (l *Limiter) Peek(ctx context.Context, checks []Cap) ([]bool, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	room := make([]bool, len(checks))
	for i, c := range checks {
		if c.Limit < 1 {
			continue
		}
		at := c.At
		if at.IsZero() {
			at = time.Now()
		}
		value, _, err := l.get(ctx, c.Key+"."+windowTag(c.Window))
		if err != nil {
			return nil, err
		}
		events := decodeLog(value)
		since := at.UnixMilli() - c.Window.Milliseconds()
		n := len(slices.DeleteFunc(events, func(t int64) bool { return t <= since }))
		room[i] = n < c.Limit
	}
	return room, nil
}

// take checks and records one cap, retrying on conflicting writes until ctx ends.
func (l *Limiter) take(ctx context.Context, c Cap) (bool, error) {
	if c.Limit < 1 {
		return false, nil
	}
	at := c.At
	if at.IsZero() {
		at = time.Now()
	}
	now, window := at.UnixMilli(), c.Window.Milliseconds()
	key := c.Key + "." + windowTag(c.Window)
	for attempt := 0; ; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return false, err
		}
		value, rev, err := l.get(ctx, key)
		if err != nil {
			return false, err
		}
		events := decodeLog(value)
		// Drop what has left the window. Events after `at` (from a replica whose clock is ahead,
		// or a caller replaying the past) stay and count.
		events = slices.DeleteFunc(events, func(t int64) bool { return t <= now-window })
		if len(events) >= c.Limit {
			return false, nil
		}
		i, _ := slices.BinarySearch(events, now)
		events = slices.Insert(events, i, now)
		// The key matters until its newest event leaves the window.
		ttl := c.Window + ttlSlack + max(0, time.Until(time.UnixMilli(events[len(events)-1])))
		err = l.put(ctx, key, encodeLog(events), rev, min(ttl, l.cfg.MaxWindow+ttlSlack))
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return false, err
		}
		return true, nil
	}
}

// windowTag names a window in a key: "86400s", or "1500ms" when not whole seconds.
func windowTag(w time.Duration) string {
	if w%time.Second == 0 {
		return strconv.FormatInt(int64(w/time.Second), 10) + "s"
	}
	return strconv.FormatInt(w.Milliseconds(), 10) + "ms"
}

const logVersion = 1

// encodeLog stores ascending Unix-millisecond times: a version byte, the first time as a
// varint, then the gaps as uvarints.
func encodeLog(events []int64) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(events)*4)
	b = append(b, logVersion)
	prev := int64(0)
	for i, t := range events {
		if i == 0 {
			b = binary.AppendVarint(b, t)
		} else {
			b = binary.AppendUvarint(b, uint64(t-prev))
		}
		prev = t
	}
	return b
}

// decodeLog reads what encodeLog wrote. A value it cannot read (another version, damage) counts
// as an empty log, so the next write replaces it instead of the key failing for ever.
func decodeLog(b []byte) []int64 {
	if len(b) == 0 || b[0] != logVersion {
		return nil
	}
	b = b[1:]
	var events []int64
	for len(b) > 0 {
		var t int64
		if len(events) == 0 {
			v, n := binary.Varint(b)
			if n <= 0 {
				return nil
			}
			t, b = v, b[n:]
		} else {
			prev := events[len(events)-1]
			d, n := binary.Uvarint(b)
			if n <= 0 || d > 1<<62 || prev > math.MaxInt64-int64(d) {
				return nil
			}
			t, b = prev+int64(d), b[n:]
		}
		events = append(events, t)
	}
	return events
}
