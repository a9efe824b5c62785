package queue

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/notifier"
)

// TestPublish: Publish returns once the broker has stored every message, and fails when the
// broker does not take one (for the caller to log, and the reconciler to repair).
func TestPublish(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	if err := queue.EnsureStreams(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js)
	pubs := []notifier.Publication{{DeliveryID: uuid.New(), Channel: delivery.Email}, {DeliveryID: uuid.New(), Channel: delivery.Email}}
	if err := p.Publish(ctx, pubs); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, queue.Stream(delivery.Email))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("after Publish the stream holds %v messages (%v), want 2", info.State.Msgs, err)
	}
	// No stream takes this subject: the broker never acknowledges.
	if err := p.Publish(ctx, []notifier.Publication{{DeliveryID: uuid.New(), Channel: delivery.Channel("pigeon")}}); err == nil {
		t.Fatal("Publish to a subject no stream takes: no error")
	}
}
