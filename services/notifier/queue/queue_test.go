package queue

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/notifier"
)

// syncBuffer is a log sink safe for the publisher's background goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newPublisher(t *testing.T) (*Publisher, jetstream.JetStream, *syncBuffer) {
	t.Helper()
	js := natstest.JetStream(t)
	logs := &syncBuffer{}
	p := NewPublisher(js, slog.New(slog.NewTextHandler(logs, nil)))
	p.Timeout = 2 * time.Second
	return p, js, logs
}

// waitFor polls cond until it holds; the deadline only bounds a broken run.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPublishDoesNotWaitForTheBroker: Publish returns once the client holds the messages; the
// broker stores them, and a publish it refuses is logged (for the reconciler to repair).
func TestPublishDoesNotWaitForTheBroker(t *testing.T) {
	ctx := context.Background()
	p, js, logs := newPublisher(t)
	if err := queue.EnsureStreams(ctx, js, queue.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	pubs := []notifier.Publication{{DeliveryID: uuid.New(), Channel: delivery.Email}, {DeliveryID: uuid.New(), Channel: delivery.Email}}
	if err := p.Publish(ctx, pubs); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, queue.Stream(delivery.Email))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both messages in the stream", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})

	// No stream takes this subject: the broker never acknowledges.
	if err := p.Publish(ctx, []notifier.Publication{{DeliveryID: uuid.New(), Channel: delivery.Channel("pigeon")}}); err != nil {
		t.Fatalf("Publish = %v; want nil, the failure logged", err)
	}
	waitFor(t, "the failed publish logged", func() bool {
		return strings.Contains(logs.String(), "publish failed; the reconciler will publish again")
	})
	if strings.Count(logs.String(), "publish failed") != 1 {
		t.Errorf("logs = %s; want one failure, for the message no stream took", logs)
	}
}
