package queue

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
)

func newIDs(n int) []uuid.UUID {
	out := make([]uuid.UUID, n)
	for i := range out {
		out[i] = uuid.New()
	}
	return out
}

// TestPublish: Publish puts each channel's deliveries on its stream as batches of at most
// queue.MaxBatch ids, returns once the broker has stored every message, and fails when the
// broker does not take one (for the caller to log, and the reconciler to repair).
func TestPublish(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	if err := queue.EnsureStreams(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(js.Conn(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	email, sms := newIDs(queue.MaxBatch+1), newIDs(2)
	if err := p.Publish(ctx, map[delivery.Channel][]uuid.UUID{delivery.Email: email, delivery.SMS: sms}); err != nil {
		t.Fatal(err)
	}
	for ch, want := range map[delivery.Channel][][]uuid.UUID{
		delivery.Email: {email[:queue.MaxBatch], email[queue.MaxBatch:]},
		delivery.SMS:   {sms},
	} {
		s, err := js.Stream(ctx, queue.Stream(ch))
		if err != nil {
			t.Fatal(err)
		}
		for seq := range uint64(len(want)) {
			m, err := s.GetMsg(ctx, seq+1)
			if err != nil {
				t.Fatalf("%s message %d: %v", ch, seq+1, err)
			}
			got, err := queue.ParseBatch(m.Data)
			if err != nil || !slices.Equal(got, want[seq]) {
				t.Errorf("%s message %d holds %d ids (%v), want %d", ch, seq+1, len(got), err, len(want[seq]))
			}
			if m.Header.Get("Nats-Msg-Id") == "" {
				t.Errorf("%s message %d has no Nats-Msg-Id", ch, seq+1)
			}
		}
		if info, err := s.Info(ctx); err != nil || info.State.Msgs != uint64(len(want)) {
			t.Errorf("%s stream holds %v messages (%v), want %d", ch, info.State.Msgs, err, len(want))
		}
	}
	// No stream takes this subject: the broker never acknowledges.
	if err := p.Publish(ctx, map[delivery.Channel][]uuid.UUID{delivery.Channel("pigeon"): newIDs(1)}); err == nil {
		t.Fatal("Publish to a subject no stream takes: no error")
	}
}

// TestPublishGivesUpLostAcknowledgements: a message whose acknowledgement never comes (here a
// subscriber takes the subject and never answers, as a stream leader that dies with the message
// does not) fails the Publish, and leaves no pending publish behind: those that stayed would
// fill the client's limit of pending publishes, and every later publish would stall and fail.
func TestPublishGivesUpLostAcknowledgements(t *testing.T) {
	js := natstest.JetStream(t)
	nc := js.Conn()
	sub, err := nc.SubscribeSync(queue.Subject(delivery.Email))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p, err := NewPublisher(nc, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(t.Context(), map[delivery.Channel][]uuid.UUID{delivery.Email: newIDs(1)}); err == nil {
		t.Fatal("Publish with no acknowledgement: no error")
	}
	// The publish is given up once its own timer fires, which may be just after Publish returns.
	for i := 0; p.js.PublishAsyncPending() > 0; i++ {
		if i == 100 {
			t.Fatalf("%d publishes still pending after their acknowledgements were given up", p.js.PublishAsyncPending())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
