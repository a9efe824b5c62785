package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/fakes/sendgridfake"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// createDigestTemplate creates a digest template that lists the items, one subject per line.
func createDigestTemplate(t *testing.T, s *stack, name string) {
	t.Helper()
	if _, err := s.tmpl.CreateTemplate(context.Background(), &heraldv1.CreateTemplateRequest{Template: &heraldv1.Template{
		Name: name, Parts: &heraldv1.TemplateParts{
			EmailSubject: "{{.count}} updates",
			EmailText:    "{{range .items}}* {{.subject}} at {{.time}}\n{{end}}",
		},
	}}); err != nil {
		t.Fatal(err)
	}
}

func digestRequest(to, subject string, g *heraldv1.Digest) *heraldv1.SendRequest {
	req := emailRequest(to)
	req.GetContent().Subject = subject
	req.Digest = g
	return req
}

func messagesTo(s *stack, to string) []sendgridfake.Message {
	var out []sendgridfake.Message
	for _, m := range s.fake.Messages() {
		if slices.Contains(m.To, to) {
			out = append(out, m)
		}
	}
	return out
}

// closeNow brings an open digest's close time forward to now, for the reconciler's next pass to
// close it: the tests' digests have a window far longer than their Sends take, however slow
// the machine, so that every item lands in one digest, and are then closed on cue.
func closeNow(t *testing.T, s *stack, digestID string) {
	t.Helper()
	tag, err := s.pool.Exec(context.Background(), `UPDATE delivery.digests SET close_at = now() WHERE id = $1 AND NOT closed`, digestID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("bring digest %s's close forward: %v, %d rows", digestID, err, tag.RowsAffected())
	}
}

// TestDigestExactlyOnceAcrossWorkerKills collects N notifications into one digest while the
// workers process runs and is killed with SIGKILL; lets the digest close with no workers, then
// starts them and kills them again at once, right after the close; and checks, once workers
// run again, that the provider received exactly one message for the digest (a second only if
// the kill found it in flight), that its body lists the N items, and that every item is
// DIGESTED, linked to the digest's delivery.
func TestDigestExactlyOnceAcrossWorkerKills(t *testing.T) {
	const n = 7
	const to = "digest-reader@example.com"
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	createDigestTemplate(t, s, "updates-digest")
	g := &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(time.Hour)}, Template: "updates-digest"}

	first := s.startWorkersProcess(t)
	var items []string
	for i := range n {
		res, err := s.notify.Send(ctx, digestRequest(to, fmt.Sprintf("Update %d", i), g))
		if err != nil {
			t.Fatal(err)
		}
		d := res.GetDeliveries()[0]
		if d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED || d.GetReason() != "digest" || d.GetDigestNotificationId() == "" {
			t.Fatalf("item %d: %s (%q) in digest %q, want SCHEDULED (digest) in one", i, d.GetState(), d.GetReason(), d.GetDigestNotificationId())
		}
		items = append(items, res.GetNotificationId())
	}
	first.kill() // while the items are collected

	// One open digest holds them all.
	var digestID uuid.UUID
	if err := s.pool.QueryRow(ctx, `SELECT DISTINCT digest_id FROM delivery.deliveries d
		JOIN notifier.notifications n ON n.id = d.notification_id WHERE n.id = ANY($1)`, items).Scan(&digestID); err != nil {
		t.Fatalf("the items are not in one digest: %v", err)
	}
	item := notification(t, s, items[0]).GetDeliveries()[0]
	if item.GetDigestNotificationId() != digestID.String() || item.GetDigestDeliveryId() != "" {
		t.Errorf("an item while its digest is open links %q / %q, want the digest %s and no delivery yet",
			item.GetDigestNotificationId(), item.GetDigestDeliveryId(), digestID)
	}

	closeNow(t, s, digestID.String())
	waitFor(t, "the digest to close", time.Minute, func() (bool, error) {
		var closed bool
		err := s.pool.QueryRow(ctx, `SELECT closed FROM delivery.digests WHERE id = $1`, digestID).Scan(&closed)
		return closed, err
	})
	second := s.startWorkersProcess(t)
	second.kill() // right after the close
	rows, _ := s.pool.Query(ctx, `SELECT id FROM delivery.deliveries WHERE notification_id = $1 AND state = 'sending'`, digestID)
	inFlight, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	s.startWorkersProcess(t)

	digest := waitFinal(t, s, digestID.String())
	if len(digest.GetDeliveries()) != 1 {
		t.Fatalf("the digest has %d deliveries, want 1", len(digest.GetDeliveries()))
	}
	dl := digest.GetDeliveries()[0]
	if dl.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_SENT {
		t.Fatalf("the digest's delivery: %s (%q), want SENT", dl.GetState(), dl.GetReason())
	}
	if digest.GetTemplate().GetName() != "updates-digest" || digest.GetCategory() != "account" {
		t.Errorf("the digest's notification: template %q, category %q", digest.GetTemplate().GetName(), digest.GetCategory())
	}
	msgs := messagesTo(s, to)
	if want := 1 + len(inFlight); len(msgs) < 1 || len(msgs) > want {
		t.Fatalf("the provider received %d messages for %s, want 1 (or %d with %d in flight at the kill)", len(msgs), to, want, len(inFlight))
	}
	m := msgs[0]
	if m.Subject != fmt.Sprintf("%d updates", n) {
		t.Errorf("subject %q, want %q", m.Subject, fmt.Sprintf("%d updates", n))
	}
	for i := range n {
		if !strings.Contains(m.Text, fmt.Sprintf("* Update %d at ", i)) {
			t.Errorf("the digest does not list item %d:\n%s", i, m.Text)
		}
	}
	if lines := strings.Count(m.Text, "\n"); lines != n {
		t.Errorf("the digest lists %d lines, want %d:\n%s", lines, n, m.Text)
	}
	for _, id := range items {
		d := notification(t, s, id).GetDeliveries()[0]
		if d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_DIGESTED || d.GetDigestDeliveryId() != dl.GetDeliveryId() ||
			d.GetDigestNotificationId() != digestID.String() {
			t.Errorf("item %s: %s linked to %q / %q, want DIGESTED in %s / %s", id, d.GetState(),
				d.GetDigestDeliveryId(), d.GetDigestNotificationId(), dl.GetDeliveryId(), digestID)
		}
	}
	t.Logf("in flight at the second kill: %d; provider messages for the digest: %d", len(inFlight), len(msgs))
}

// TestDigestCategory: a category's digest collects Sends of it; a critical category bypasses a
// Send's digest and goes at once; a digest with a fallback chain is refused; a Send's digest
// with a bad window names the field.
func TestDigestCategory(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	createDigestTemplate(t, s, "weekly")
	admin := heraldv1.NewAdminServiceClient(s.conn)
	g := &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(time.Hour)}, Template: "weekly"}
	if _, err := admin.PutCategory(ctx, &heraldv1.PutCategoryRequest{Category: &heraldv1.Category{
		Name: "social", DefaultOptIn: true, Digest: g,
	}}); err != nil {
		t.Fatal(err)
	}
	cats, err := admin.ListCategories(ctx, &heraldv1.ListCategoriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cats.GetCategories() {
		if c.GetName() == "social" && (c.GetDigest().GetWindow().AsDuration() != time.Hour || c.GetDigest().GetTemplate() != "weekly") {
			t.Errorf("the category's digest reads back as %v", c.GetDigest())
		}
	}

	const to = "social@example.com"
	var items []string
	for i := range 3 {
		req := digestRequest(to, fmt.Sprintf("Like %d", i), nil)
		req.Category = "social"
		res, err := s.notify.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, res.GetNotificationId())
	}
	critical := digestRequest("alert@example.com", "New sign-in", g)
	critical.Category = "security"
	res, err := s.notify.Send(ctx, critical)
	if err != nil {
		t.Fatal(err)
	}
	if st := res.GetDeliveries()[0].GetState(); st != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
		t.Errorf("a critical notification with a digest: %s, want QUEUED at once", st)
	}
	waitFinal(t, s, res.GetNotificationId())
	if got := messagesTo(s, "alert@example.com"); len(got) != 1 || got[0].Subject != "New sign-in" {
		t.Errorf("the critical notification reached the provider as %d messages", len(got))
	}

	digestID := notification(t, s, items[0]).GetDeliveries()[0].GetDigestNotificationId()
	for _, id := range items[1:] {
		if other := notification(t, s, id).GetDeliveries()[0].GetDigestNotificationId(); other != digestID || other == "" {
			t.Fatalf("items in digests %q and %q, want one", digestID, other)
		}
	}
	closeNow(t, s, digestID)
	waitFor(t, "the category's digest to be sent", time.Minute, func() (bool, error) {
		return len(messagesTo(s, to)) > 0, nil
	})
	for _, id := range items {
		waitFinal(t, s, id)
	}
	msgs := messagesTo(s, to)
	if len(msgs) != 1 || msgs[0].Subject != "3 updates" {
		t.Fatalf("messages to %s: %d (first %q), want one digest of 3", to, len(msgs), msgs[0].Subject)
	}

	for name, tc := range map[string]struct {
		req   *heraldv1.SendRequest
		field string
	}{
		"with a fallback": {func() *heraldv1.SendRequest {
			r := digestRequest(to, "x", g)
			r.Fallback = &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}}
			return r
		}(), "digest"},
		"window too short": {digestRequest(to, "x", &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(time.Millisecond)},
			Template: "weekly"}), "digest.window"},
		"bad daily time": {digestRequest(to, "x", &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "25:00"},
			Template: "weekly"}), "digest.daily_at"},
		"no template": {digestRequest(to, "x", &heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:00"}}), "digest.template"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.notify.Send(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Send: %v, want INVALID_ARGUMENT naming %s", err, tc.field)
			}
		})
	}
}

// TestDigestAcrossNotifierRestart: a digest's items live in PostgreSQL only. Its notifier stops
// while the digest is open and its close time passes; the next notifier closes it, without the
// item canceled meanwhile, and the provider receives one message listing the others.
func TestDigestAcrossNotifierRestart(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	createDigestTemplate(t, s, "restart-digest")
	g := &heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(time.Hour)}, Template: "restart-digest"}
	const to = "restart@example.com"
	var ids []string
	for i := range 3 {
		res, err := s.notify.Send(ctx, digestRequest(to, fmt.Sprintf("Note %d", i), g))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetNotificationId())
	}
	if _, err := s.notify.CancelNotification(ctx, &heraldv1.CancelNotificationRequest{NotificationId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	digestID := notification(t, s, ids[0]).GetDeliveries()[0].GetDigestNotificationId()

	s.notifier.Close()
	closeNow(t, s, digestID)
	s.notifier = s.startNotifier(t)
	s.notify = heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), s.key))

	waitFinal(t, s, ids[0])
	waitFinal(t, s, digestID)
	msgs := messagesTo(s, to)
	if len(msgs) != 1 {
		t.Fatalf("the provider received %d messages, want the digest alone", len(msgs))
	}
	if m := msgs[0]; m.Subject != "2 updates" || !strings.Contains(m.Text, "* Note 0 at ") || !strings.Contains(m.Text, "* Note 2 at ") ||
		strings.Contains(m.Text, "Note 1") {
		t.Errorf("the digest %q lists:\n%s\nwant notes 0 and 2, not the canceled 1", m.Subject, m.Text)
	}
	if d := notification(t, s, ids[1]).GetDeliveries()[0]; d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_CANCELED {
		t.Errorf("the canceled item: %s, want CANCELED", d.GetState())
	}
}
