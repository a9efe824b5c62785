package inbox_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	inboxpg "github.com/heraldhq/herald/internal/inbox/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/internal/pgtest"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/inbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func migrate(ctx context.Context, url string) error {
	pool, err := pgdb.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return inboxpg.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
}

// TestSend stores through the real store: a message once however often it is sent, a message
// without a user refused for good, a database that is gone a transient failure.
func TestSend(t *testing.T) {
	url := pgtest.DB(t, "inbox", migrate)
	pool, err := pgdb.Open(t.Context(), url, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := inboxpg.New(pool)
	closed, err := pgdb.Open(t.Context(), url, 1)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()

	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	id, nid := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	msg := &workers.Message{DeliveryID: id, NotificationID: nid, Channel: delivery.Inbox, To: "u-1", UserID: "u-1",
		Category: "news", Content: delivery.Content{Title: "T", Body: "B", Data: map[string]any{"k": "v"}}}
	for _, tc := range []struct {
		name    string
		sender  *inbox.Sender
		msg     *workers.Message
		outcome workers.Outcome
		reason  string
	}{
		{"stored", &inbox.Sender{Store: store}, msg, workers.OutcomeSent, ""},
		{"stored again", &inbox.Sender{Store: store}, msg, workers.OutcomeSent, ""},
		{"no user", &inbox.Sender{Store: store}, &workers.Message{DeliveryID: uuid.Must(uuid.NewV7()), Channel: delivery.Inbox},
			workers.OutcomeFailed, "no_user"},
		{"database gone", &inbox.Sender{Store: inboxpg.New(closed)}, msg, workers.OutcomeRetry, "provider_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.sender.Now = func() time.Time { return now }
			res, err := tc.sender.Send(t.Context(), tc.msg)
			o, reason, _ := workers.Classify(err)
			if o != tc.outcome || reason != tc.reason {
				t.Fatalf("Send = %+v, %v: outcome %v %q, want %v %q", res, err, o, reason, tc.outcome, tc.reason)
			}
			if o == workers.OutcomeSent && (res.ProviderMessageID != id.String() || tc.sender.Provider() != "inbox") {
				t.Fatalf("result %+v, provider %q", res, tc.sender.Provider())
			}
		})
	}
	got, err := store.After(t.Context(), "u-1", 0, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("stored %d messages, %v; want 1", len(got), err)
	}
	m := got[0]
	if m.ID != id || m.NotificationID != nid || m.Category != "news" || m.Title != "T" || m.Body != "B" ||
		m.Data["k"] != "v" || !m.CreatedAt.Equal(now) || m.ReadAt != nil {
		t.Fatalf("stored %+v", m)
	}
}
