package main

import (
	"encoding/binary"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// key names one delivery as both ends see it: the delivery id that Send answers and that
// SendGrid, FCM and APNs receive, or, for SMS (Twilio carries nothing of Herald's), the
// recipient's phone number, which is unique per send.
type key [16]byte

// idKey returns the key of a delivery id; ok is false for one that is not a UUID.
func idKey(id string) (key, bool) {
	u, err := uuid.Parse(id)
	return key(u), err == nil
}

// phoneKey returns the key of an E.164 number. Its version nibble (byte 6) is 0, which no
// delivery id (UUIDv7) has, so the two kinds never collide.
func phoneKey(e164 string) (key, bool) {
	if len(e164) < 2 || e164[0] != '+' {
		return key{}, false
	}
	n, err := strconv.ParseUint(e164[1:], 10, 64)
	if err != nil {
		return key{}, false
	}
	var k key
	k[0] = 'p'
	binary.BigEndian.PutUint64(k[8:], n)
	return k, true
}

// entry is what the tracker knows of one delivery: when Send answered, when the provider fake
// received it (nanoseconds since the tracker's start, plus one, so that 0 means not yet), and
// how many times the fake received it.
type entry struct {
	accepted int64
	received int64
	n        uint32
}

const shards = 64

type shard struct {
	mu  sync.Mutex
	m   map[key]entry
	e2e []int64 // accept-to-sent latencies, ns
	_   [40]byte
}

// tracker matches the deliveries Send accepted with those the provider fakes received, in
// either order: with a fast provider the fake can see a delivery before the Send's answer
// reaches the load generator.
type tracker struct {
	start  time.Time
	shards [shards]shard

	queued     atomic.Int64 // deliveries accepted (answered QUEUED)
	delivered  atomic.Int64 // of those, received by a fake
	receipts   atomic.Int64 // every receipt at a fake, repeats included
	duplicates atomic.Int64 // receipts of a delivery already received
	badIDs     atomic.Int64 // receipts without a usable delivery id
	first      atomic.Int64 // first and last receipt, ns since start
	last       atomic.Int64
}

func newTracker(start time.Time) *tracker {
	t := &tracker{start: start}
	for i := range t.shards {
		t.shards[i].m = make(map[key]entry)
	}
	return t
}

func (t *tracker) since(at time.Time) int64 { return int64(at.Sub(t.start)) + 1 }

func (t *tracker) shard(k key) *shard { return &t.shards[int(k[15]^k[9])%shards] }

// accept records that Send answered for the delivery k at at.
func (t *tracker) accept(k key, at time.Time) {
	a := t.since(at)
	s := t.shard(k)
	s.mu.Lock()
	e := s.m[k]
	e.accepted = a
	s.m[k] = e
	if e.received != 0 {
		s.e2e = append(s.e2e, max(0, e.received-a))
	}
	s.mu.Unlock()
	t.queued.Add(1)
	if e.received != 0 {
		t.delivered.Add(1)
	}
}

// receive records that a provider fake received the delivery k at at.
func (t *tracker) receive(k key, at time.Time) {
	r := t.since(at)
	t.receipts.Add(1)
	s := t.shard(k)
	s.mu.Lock()
	e := s.m[k]
	e.n++
	first := e.n == 1
	if first {
		e.received = r
		if e.accepted != 0 {
			s.e2e = append(s.e2e, max(0, r-e.accepted))
		}
	}
	s.m[k] = e
	s.mu.Unlock()
	if !first {
		t.duplicates.Add(1)
		return
	}
	if e.accepted != 0 {
		t.delivered.Add(1)
	}
	for {
		f := t.first.Load()
		if (f != 0 && f <= r) || t.first.CompareAndSwap(f, r) {
			break
		}
	}
	for {
		l := t.last.Load()
		if r <= l || t.last.CompareAndSwap(l, r) {
			break
		}
	}
}

// receiver passes what the provider fakes receive to the current tracker, so that a warm-up
// and the measured run each count their own deliveries.
type receiver struct{ cur atomic.Pointer[tracker] }

func (r *receiver) receiveID(id string, at time.Time)    { r.cur.Load().receiveID(id, at) }
func (r *receiver) receivePhone(to string, at time.Time) { r.cur.Load().receivePhone(to, at) }

// receiveID is receive for the fakes that see the delivery id.
func (t *tracker) receiveID(id string, at time.Time) {
	k, ok := idKey(id)
	if !ok {
		t.badIDs.Add(1)
		return
	}
	t.receive(k, at)
}

// receivePhone is receive for the SMS fake, which sees the number.
func (t *tracker) receivePhone(to string, at time.Time) {
	k, ok := phoneKey(to)
	if !ok {
		t.badIDs.Add(1)
		return
	}
	t.receive(k, at)
}

// strays counts receipts of deliveries that no Send answered for.
func (t *tracker) strays() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			if e.accepted == 0 {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// e2e returns every accept-to-sent latency recorded so far.
func (t *tracker) e2e() []int64 {
	var out []int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		out = append(out, s.e2e...)
		s.mu.Unlock()
	}
	return out
}

// lastReceipt returns when the last delivery was received (zero before any).
func (t *tracker) lastReceipt() time.Time {
	l := t.last.Load()
	if l == 0 {
		return time.Time{}
	}
	return t.start.Add(time.Duration(l - 1))
}

// firstReceipt returns when the first delivery was received (zero before any).
func (t *tracker) firstReceipt() time.Time {
	f := t.first.Load()
	if f == 0 {
		return time.Time{}
	}
	return t.start.Add(time.Duration(f - 1))
}
