package consumer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// batch is one message of the channel's queue: the ids of deliveries to claim and send. The
// message is answered once every id is dealt with: acknowledged when each delivery was recorded
// or had nothing to do, handed back after a delay when some had to be given back unsent (the
// redelivered message then finds the recorded ones done).
type batch struct {
	msg jetstream.Msg
	ids []uuid.UUID
	// next counts the ids the claim loop has dealt with: claimed, found done, or abandoned.
	// Only the claim loop touches it.
	next int

	// open counts the deliveries handed on and not yet recorded, plus one while the claim loop
	// still has ids to deal with. The message is answered when it falls to zero.
	open atomic.Int32
	// retryIn is the longest delay asked for by a delivery given back, in nanoseconds; -1 when
	// none was.
	retryIn atomic.Int64
	// onDone runs once the message is answered.
	onDone func(*batch)
}

func newBatch(msg jetstream.Msg, ids []uuid.UUID, onDone func(*batch)) *batch {
	b := &batch{msg: msg, ids: ids, onDone: onDone}
	b.open.Store(1)
	b.retryIn.Store(-1)
	return b
}

// rest returns the ids not yet dealt with.
func (b *batch) rest() []uuid.UUID { return b.ids[b.next:] }

// take marks the next n ids dealt with and returns them.
func (b *batch) take(n int) []uuid.UUID {
	ids := b.ids[b.next : b.next+n]
	b.next += n
	return ids
}

// hand counts n deliveries of the batch passed on to be sent or recorded.
func (b *batch) hand(n int) { b.open.Add(int32(n)) }

// giveBack records that a delivery of the batch went back unsent and must come again after
// delay.
func (b *batch) giveBack(delay time.Duration) {
	for {
		cur := b.retryIn.Load()
		if int64(delay) <= cur || b.retryIn.CompareAndSwap(cur, int64(delay)) {
			return
		}
	}
}

// done counts n deliveries of the batch recorded (or given back); the last answers the message.
func (b *batch) done(n int) {
	if b.open.Add(-int32(n)) > 0 {
		return
	}
	b.onDone(b) // first, so that no heartbeat follows the answer
	if d := b.retryIn.Load(); d >= 0 {
		b.msg.NakWithDelay(time.Duration(d))
	} else {
		b.msg.Ack()
	}
}

// finish is the claim loop's word that it dealt with every id: those it did not claim are done,
// or were abandoned with giveBack.
func (b *batch) finish() { b.done(1) }

// openBatches is the set of messages being worked on, kept so that their ack wait can be
// extended while they take long (slow providers, rate limits).
type openBatches struct {
	mu  sync.Mutex
	set map[*batch]struct{}
}

func (o *openBatches) add(b *batch) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.set == nil {
		o.set = map[*batch]struct{}{}
	}
	o.set[b] = struct{}{}
}

func (o *openBatches) remove(b *batch) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.set, b)
}

// inProgress tells the server each open message is still being worked on.
func (o *openBatches) inProgress() {
	o.mu.Lock()
	msgs := make([]jetstream.Msg, 0, len(o.set))
	for b := range o.set {
		msgs = append(msgs, b.msg)
	}
	o.mu.Unlock()
	for _, m := range msgs {
		m.InProgress()
	}
}
