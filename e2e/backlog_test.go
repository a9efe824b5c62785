package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
)

// TestBacklogIsNotPublishedAgain: while no worker runs, queued deliveries outlive the
// notifier's re-publish deadline, yet their messages are still in the queue, unreceived, so the
// reconciler holds them instead of publishing them again: the queue does not grow. Once the
// workers start, each is sent once.
func TestBacklogIsNotPublishedAgain(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	const n = 10
	for i := range n {
		if _, err := s.notify.Send(ctx, emailRequest(fmt.Sprintf("b%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Every delivery's first deadline (created + republishAfter) passes and a reconciler pass
	// takes it: held, its deadline moves on and its publish count stays 0; published, the
	// count would be 1.
	waitFor(t, "the reconciler to look at every queued delivery past its deadline", time.Minute, func() (bool, error) {
		var looked int
		err := s.pool.QueryRow(ctx, `
			SELECT count(*) FROM delivery.deliveries
			WHERE publishes > 0 OR due_at > created_at + interval '2 seconds'`).Scan(&looked)
		return looked == n, err
	})
	var published int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE publishes > 0`).Scan(&published); err != nil {
		t.Fatal(err)
	}
	if published != 0 {
		t.Errorf("%d of %d deliveries waiting in the queue were published again", published, n)
	}
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, queue.Stream(delivery.Email))
	if err != nil {
		t.Fatal(err)
	}
	if msgs := st.CachedInfo().State.Msgs; msgs != n {
		t.Errorf("the email queue holds %d messages, want %d", msgs, n)
	}

	s.startWorkers(t)
	waitFor(t, "every email sent", time.Minute, func() (bool, error) {
		return len(s.fake.Messages()) >= n, nil
	})
	waitFor(t, "every delivery recorded sent", time.Minute, func() (bool, error) {
		var sent int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.deliveries WHERE state = 'sent'`).Scan(&sent)
		return sent == n, err
	})
	if got := len(s.fake.Messages()); got != n {
		t.Errorf("the provider received %d emails, want %d", got, n)
	}
}
