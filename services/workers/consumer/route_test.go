package consumer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/consumer"
)

// budgetSender is a Sender of several credentials (as route.Router is): its first answer is that
// every credential's budget is spent; then the second credential takes the message.
type budgetSender struct{ calls atomic.Int64 }

func (*budgetSender) Provider() string { return "sendgrid/primary" }

func (s *budgetSender) Send(context.Context, *workers.Message) (workers.Result, error) {
	if s.calls.Add(1) == 1 {
		return workers.Result{}, &workers.NotSentError{Reason: "rate_limited", RetryAfter: 10 * time.Millisecond}
	}
	return workers.Result{ProviderMessageID: "backup-id", Provider: "sendgrid/backup"}, nil
}

// TestSenderOfSeveralCredentials: the delivery's record names the credential that took it, not
// the Sender's default; and a send held back by spent budgets gives the delivery back without
// counting against the channel's circuit, even when one failure would open it.
func TestSenderOfSeveralCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := &budgetSender{}
	c, err := consumer.Start(ctxT(t), e.js, consumer.Config{Channel: ch, Sender: s, Store: e.store, Policy: fastPolicy,
		WorkerID: "worker-1", Log: testLogger(), BreakerFailures: 1, BreakerCooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	id := e.create1(t)
	e.publish(t, id)
	e.waitState(t, id, delivery.Sent)
	if r := e.row(t, id); r.Provider != "sendgrid/backup" || r.ProviderMessageID != "backup-id" || r.Attempts != 1 {
		t.Errorf("row = %+v, want sent through sendgrid/backup in one counted attempt", r)
	}
	if st := c.CircuitState(); st != "closed" {
		t.Errorf("channel circuit %s after a send held by spent budgets, want closed", st)
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("%d sends, want 2", n)
	}
}
