package consumer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/consumer"
)

// TestRecordsWhateverTheProviderSays: a provider's answer is outside input. One whose error text
// holds a NUL and invalid UTF-8, then whose message id is longer than PostgreSQL indexes, once
// failed the statement that records the outcomes, so the delivery was sent again and again; it is
// recorded, cleaned and cut, on the first try.
func TestRecordsWhateverTheProviderSays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(t, consumer.Config{})
	id := e.create1(t)
	e.sender.script(script{
		err:        workers.Transient(0, errors.New("503 \x00 from \xff\xfe the provider")),
		providerID: strings.Repeat("m", 4000),
	}, id)
	e.publish(t, id)

	e.waitState(t, id, delivery.Retrying)
	e.reconcileUntil(t, []uuid.UUID{id})
	e.waitAnswered(t)
	checkCalls(t, e, id, 2)
	checkOutcomes(t, e, id, "1:retry", "2:sent")
	if r := e.row(t, id); r.State != "sent" || r.ProviderMessageID != strings.Repeat("m", 256) {
		t.Errorf("row %+v: want sent, with the first 256 bytes of the provider message id", r)
	}
	var errText string
	if err := e.pool.QueryRow(ctxT(t), `SELECT error FROM delivery.attempts WHERE delivery_id = $1 AND attempt = 1`,
		id).Scan(&errText); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "503  from \uFFFD the provider") {
		t.Errorf("attempt error %q", errText)
	}
}
