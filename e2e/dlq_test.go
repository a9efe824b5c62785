package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/workers"
)

// TestDeadLetterAndRedrive: a provider that answers 503 forever turns a delivery DEAD after the
// configured attempts, with growing backoffs; once the provider recovers, a re-drive sends it
// exactly once.
func TestDeadLetterAndRedrive(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	s.fake.Fail(http.StatusServiceUnavailable, sendgridfake.Always)
	res, err := s.notify.Send(ctx, emailRequest("ada@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Deliveries[0].DeliveryId
	n := waitFinal(t, s, res.NotificationId)
	cfg := s.workersConfig()
	d := n.Deliveries[0]
	if d.State != heraldv1.DeliveryState_DELIVERY_STATE_DEAD || int(d.Attempts) != cfg.MaxAttempts {
		t.Fatalf("delivery = %s after %d attempts, want DEAD after %d", d.State, d.Attempts, cfg.MaxAttempts)
	}
	rows, _ := s.pool.Query(ctx, `SELECT started_at FROM delivery.attempts WHERE delivery_id = $1 ORDER BY attempt`, id)
	starts, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil || len(starts) != cfg.MaxAttempts {
		t.Fatalf("attempt log: %d rows (%v), want %d", len(starts), err, cfg.MaxAttempts)
	}
	policy := workers.Policy{MaxAttempts: cfg.MaxAttempts, BaseBackoff: cfg.BaseBackoff, MaxBackoff: cfg.MaxBackoff}
	for i := 1; i < len(starts); i++ {
		// The backoff after attempt i is at least its lower bound (jitter 0).
		if gap, low := starts[i].Sub(starts[i-1]), policy.Backoff(i, 0, 0); gap < low {
			t.Errorf("gap before attempt %d = %s, less than the backoff's lower bound %s", i+1, gap, low)
		}
	}
	admin := heraldv1.NewAdminServiceClient(s.conn)
	list, err := admin.ListDeadLetters(ctx, &heraldv1.ListDeadLettersRequest{Channel: heraldv1.Channel_CHANNEL_EMAIL})
	if err != nil || len(list.DeadLetters) != 1 || list.DeadLetters[0].Delivery.DeliveryId != id {
		t.Fatalf("ListDeadLetters = %v, %v", list, err)
	}
	if _, err := admin.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{}); err == nil {
		t.Fatal("a re-drive with no selection was accepted")
	}

	s.fake.Fail(0, 0) // the provider recovers
	red, err := admin.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{DeliveryIds: []string{id}})
	if err != nil || red.Redriven != 1 {
		t.Fatalf("RedriveDeadLetters = %v, %v", red, err)
	}
	n = waitFinal(t, s, res.NotificationId)
	if d := n.Deliveries[0]; d.State != heraldv1.DeliveryState_DELIVERY_STATE_SENT || d.Attempts != 1 {
		t.Fatalf("after the re-drive: %s after %d attempts, want SENT after 1", d.State, d.Attempts)
	}
	if got := s.fake.Count(id); got != 1 {
		t.Fatalf("the provider accepted the delivery %d times, want 1", got)
	}
	var logged int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM delivery.attempts WHERE delivery_id = $1`, id).Scan(&logged); err != nil || logged != cfg.MaxAttempts+1 {
		t.Fatalf("attempt log holds %d attempts (%v), want both drives: %d", logged, err, cfg.MaxAttempts+1)
	}
	if again, _ := admin.RedriveDeadLetters(ctx, &heraldv1.RedriveDeadLettersRequest{DeliveryIds: []string{id}}); again.GetRedriven() != 0 {
		t.Fatal("a sent delivery was re-driven")
	}
}
