package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
)

// TestReadBacklog follows a queue from messages no worker has received, through one received
// and unacknowledged, to none pending: the counts and the oldest pending message's time follow.
func TestReadBacklog(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	if err := queue.EnsureStreams(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, queue.Stream(delivery.SMS))
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for range 3 {
		ack, err := js.Publish(ctx, queue.Subject(delivery.SMS), []byte(uuid.NewString()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, m.Time)
	}
	check := func(when string, want queue.Backlog) {
		t.Helper()
		got, err := queue.ReadBacklog(ctx, js, delivery.SMS)
		if err != nil || got.Pending != want.Pending || got.InFlight != want.InFlight || !got.Oldest.Equal(want.Oldest) {
			t.Errorf("%s: ReadBacklog = %+v, %v; want %+v", when, got, err, want)
		}
	}
	check("before any consumer", queue.Backlog{Pending: 3, Oldest: times[0]})

	c, err := queue.EnsureConsumer(ctx, js, delivery.SMS, queue.ConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	check("nothing received", queue.Backlog{Pending: 3, Oldest: times[0]})
	batch, err := c.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	var first jetstream.Msg
	for m := range batch.Messages() {
		first = m
	}
	check("the first received, not acknowledged", queue.Backlog{Pending: 2, InFlight: 1, Oldest: times[1]})
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	batch, err = c.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check("every message received and acknowledged", queue.Backlog{})
	if _, err := queue.ReadBacklog(ctx, js, delivery.Channel("pigeon")); err == nil {
		t.Error("ReadBacklog of a channel without a stream: no error")
	}
}
