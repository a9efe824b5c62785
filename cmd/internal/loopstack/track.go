package loopstack

import (
	"encoding/binary"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Key names one delivery as both ends see it: the delivery id that Send answers and that
// SendGrid, FCM and APNs receive, or, for SMS (Twilio carries nothing of Herald's), the
// recipient's phone number, which is unique per send.
type Key [16]byte

// IDKey returns the Key of a delivery id; ok is false for one that is not a UUID.
func IDKey(id string) (Key, bool) {
	u, err := uuid.Parse(id)
	return Key(u), err == nil
}

// PhoneKey returns the Key of an E.164 number. Its version nibble (byte 6) is 0, which no
// delivery id (UUIDv7) has, so the two kinds never collide.
func PhoneKey(e164 string) (Key, bool) {
	if len(e164) < 2 || e164[0] != '+' {
		return Key{}, false
	}
	n, err := strconv.ParseUint(e164[1:], 10, 64)
	if err != nil {
		return Key{}, false
	}
	var k Key
	k[0] = 'p'
	binary.BigEndian.PutUint64(k[8:], n)
	return k, true
}

// entry is what the Tracker knows of one delivery: when Send answered, when the provider fake
// received it (nanoseconds since the Tracker's start, plus one, so that 0 means not yet), and
// how many times the fake received it.
type entry struct {
	accepted int64
	received int64
	n        uint32
}

const shards = 64

type shard struct {
	mu  sync.Mutex
	m   map[Key]entry
	e2e []int64 // accept-to-sent latencies, ns
	_   [40]byte
}

// Tracker matches the deliveries Send accepted with those the provider fakes received, in
// either order: with a fast provider the fake can see a delivery before the Send's answer
// reaches the load generator.
type Tracker struct {
	start  time.Time
	shards [shards]shard

	Queued     atomic.Int64 // deliveries accepted (answered QUEUED)
	Delivered  atomic.Int64 // of those, received by a fake
	Receipts   atomic.Int64 // every receipt at a fake, repeats included
	Duplicates atomic.Int64 // receipts of a delivery already received
	BadIDs     atomic.Int64 // receipts without a usable delivery id
	first      atomic.Int64 // first and last receipt, ns since start
	last       atomic.Int64
}

// NewTracker returns a Tracker whose times count from start.
func NewTracker(start time.Time) *Tracker {
	t := &Tracker{start: start}
	for i := range t.shards {
		t.shards[i].m = make(map[Key]entry)
	}
	return t
}

func (t *Tracker) since(at time.Time) int64 { return int64(at.Sub(t.start)) + 1 }

func (t *Tracker) shard(k Key) *shard { return &t.shards[int(k[15]^k[9])%shards] }

// Accept records that Send answered for the delivery k at at.
func (t *Tracker) Accept(k Key, at time.Time) {
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
	t.Queued.Add(1)
	if e.received != 0 {
		t.Delivered.Add(1)
	}
}

// Receive records that a provider fake received the delivery k at at.
func (t *Tracker) Receive(k Key, at time.Time) {
	r := t.since(at)
	t.Receipts.Add(1)
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
		t.Duplicates.Add(1)
		return
	}
	if e.accepted != 0 {
		t.Delivered.Add(1)
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

// Receiver passes what the provider fakes receive to the current Tracker, so that a warm-up
// and the measured run each count their own deliveries.
type Receiver struct{ Cur atomic.Pointer[Tracker] }

func (r *Receiver) ReceiveID(id string, at time.Time)    { r.Cur.Load().ReceiveID(id, at) }
func (r *Receiver) ReceivePhone(to string, at time.Time) { r.Cur.Load().ReceivePhone(to, at) }

// ReceiveID is Receive for the fakes that see the delivery id.
func (t *Tracker) ReceiveID(id string, at time.Time) {
	k, ok := IDKey(id)
	if !ok {
		t.BadIDs.Add(1)
		return
	}
	t.Receive(k, at)
}

// ReceivePhone is Receive for the SMS fake, which sees the number.
func (t *Tracker) ReceivePhone(to string, at time.Time) {
	k, ok := PhoneKey(to)
	if !ok {
		t.BadIDs.Add(1)
		return
	}
	t.Receive(k, at)
}

// Strays counts receipts of deliveries that no Send answered for.
func (t *Tracker) Strays() int {
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

// E2E returns every accept-to-sent latency recorded so far.
func (t *Tracker) E2E() []int64 {
	var out []int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		out = append(out, s.e2e...)
		s.mu.Unlock()
	}
	return out
}

// LastReceipt returns when the last delivery was received (zero before any).
func (t *Tracker) LastReceipt() time.Time {
	l := t.last.Load()
	if l == 0 {
		return time.Time{}
	}
	return t.start.Add(time.Duration(l - 1))
}

// FirstReceipt returns when the first delivery was received (zero before any).
func (t *Tracker) FirstReceipt() time.Time {
	f := t.first.Load()
	if f == 0 {
		return time.Time{}
	}
	return t.start.Add(time.Duration(f - 1))
}

// Each calls f with every delivery the Tracker knows of: whether Send answered for it and how
// many times a provider fake received it.
func (t *Tracker) Each(f func(k Key, accepted bool, receipts int)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			f(k, e.accepted != 0, int(e.n))
		}
		s.mu.Unlock()
	}
}
