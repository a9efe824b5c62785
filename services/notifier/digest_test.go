package notifier_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/internal/ratelimit"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
)

// TestSendDailyDigest: a category's daily digest closes at the next daily time in the user's
// time zone (UTC without one, and for a raw address), across a daylight saving change; the
// item is scheduled for its digest, its ttl counted from the close, and Explain shows when it
// would go.
func TestSendDailyDigest(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		now   time.Time
		user  string // "" sends to a raw address
		tz    string
		close time.Time
	}{
		// 2026-03-08: New York moves to daylight saving time at 02:00.
		{"later today, in the user's zone", time.Date(2026, 3, 7, 11, 0, 0, 0, time.UTC), "u1", "America/New_York",
			time.Date(2026, 3, 7, 8, 0, 0, 0, ny)},
		{"tomorrow, across the DST change", time.Date(2026, 3, 7, 14, 0, 0, 0, time.UTC), "u1", "America/New_York",
			time.Date(2026, 3, 8, 8, 0, 0, 0, ny)},
		{"exactly at the time: the next day", time.Date(2026, 3, 7, 13, 0, 0, 0, time.UTC), "u1", "America/New_York",
			time.Date(2026, 3, 8, 8, 0, 0, 0, ny)},
		{"a user without a zone: UTC", time.Date(2026, 3, 7, 7, 59, 0, 0, time.UTC), "u1", "",
			time.Date(2026, 3, 7, 8, 0, 0, 0, time.UTC)},
		{"an unknown zone: UTC", time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC), "u1", "Mars/Olympus",
			time.Date(2026, 3, 8, 8, 0, 0, 0, time.UTC)},
		{"a raw address: UTC", time.Date(2026, 3, 7, 9, 0, 0, 0, time.UTC), "", "",
			time.Date(2026, 3, 8, 8, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.svc.Now = func() time.Time { return tt.now }
			h.dir.users = map[string]notifier.User{"u1": {ID: "u1", Email: "u1@example.com", Timezone: tt.tz}}
			if err := h.store.PutCategory(t.Context(), preference.Category{Name: "digest.daily", DefaultOptIn: true,
				Digest: &delivery.Digest{DailyAt: "08:00", Template: "daily"}}); err != nil {
				t.Fatal(err)
			}
			req := &notifier.SendRequest{RequestHash: []byte("h"), UserID: tt.user, Category: "digest.daily",
				Channels: []delivery.Channel{delivery.Email}, Content: &notifier.Content{Subject: "S", Body: "B"}}
			if tt.user == "" {
				req.Address = &notifier.Address{Email: "raw@example.com"}
			}
			reader := billing
			reader.Contacts = appkey.ContactsRead
			explained, err := h.svc.Explain(t.Context(), reader, req)
			if err != nil {
				t.Fatal(err)
			}
			if d := explained.Deliveries[0]; d.State != delivery.Scheduled || d.Reason != delivery.ReasonDigest ||
				!d.SendTime(tt.now).Equal(tt.close) {
				t.Errorf("Explain: %s (%q) at %s, want scheduled (digest) at %s", d.State, d.Reason, d.SendTime(tt.now), tt.close)
			}
			res := send(t, h, billing, req)
			d := res.Notification.Deliveries[0]
			if d.State != delivery.Scheduled || d.Reason != delivery.ReasonDigest || d.DigestID == uuid.Nil {
				t.Fatalf("item: %s (%q) in digest %s, want scheduled (digest) in one", d.State, d.Reason, d.DigestID)
			}
			if want := tt.close.Add(delivery.DefaultTTL); !d.ExpiresAt.Equal(want) || !d.DueAt.Equal(want) {
				t.Errorf("item expires %s, due %s; want both at %s (the close plus the ttl)", d.ExpiresAt, d.DueAt, want)
			}
			g, err := h.store.deliveries.Digest(t.Context(), d.DigestID)
			if err != nil {
				t.Fatal(err)
			}
			if !g.CloseAt.Equal(tt.close) || g.Template != "daily" {
				t.Errorf("digest closes at %s (template %q), want %s (daily)", g.CloseAt.UTC(), g.Template, tt.close.UTC())
			}
		})
	}
}

// TestDigestQuietHours: a digest that would close in the recipient's quiet hours closes when
// they end, on the channels they hold (not email); a delivery that quiet hours would defer
// joins the digest; a future send time keeps its delivery out of any digest.
func TestDigestQuietHours(t *testing.T) {
	day := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, time.UTC) }
	morning := day(8, 7, 0) // the end of the quiet hours (22:00-07:00 UTC) that start on the 7th
	tests := []struct {
		name   string
		now    time.Time
		ch     delivery.Channel
		sendAt time.Time
		want   string    // the delivery's state and reason
		close  time.Time // its digest's close, when it is in one
	}{
		{"closes before the quiet hours", day(7, 20, 0), delivery.SMS, time.Time{}, "scheduled digest", day(7, 21, 0)},
		{"would close in them: closes when they end", day(7, 21, 30), delivery.SMS, time.Time{}, "scheduled digest", morning},
		{"sent in them: joins a digest closing when they end", day(7, 23, 0), delivery.SMS, time.Time{}, "scheduled digest", morning},
		{"email is not held by quiet hours", day(7, 21, 30), delivery.Email, time.Time{}, "scheduled digest", day(7, 22, 30)},
		{"a future send time stays out of digests", day(7, 20, 0), delivery.SMS, day(7, 23, 0), "scheduled quiet_hours", time.Time{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.svc.Now = func() time.Time { return tt.now }
			h.dir.users = map[string]notifier.User{"u1": {ID: "u1", Email: "u1@example.com", Phone: "+14155550100",
				Settings: &preference.Settings{QuietHours: &preference.QuietHours{Start: "22:00", End: "07:00"}}}}
			res := send(t, h, billing, &notifier.SendRequest{RequestHash: []byte(fmt.Sprint(i)), UserID: "u1",
				Category: "news", Channels: []delivery.Channel{tt.ch}, SendAt: tt.sendAt,
				Content: &notifier.Content{Subject: "S", Body: "B"}, Digest: &delivery.Digest{Window: time.Hour, Template: "t"}})
			d := res.Notification.Deliveries[0]
			if got := fmt.Sprintf("%s %s", d.State, d.Reason); got != tt.want {
				t.Fatalf("delivery %s, want %s", got, tt.want)
			}
			if tt.close.IsZero() {
				if d.DigestID != uuid.Nil {
					t.Errorf("in digest %s, want none", d.DigestID)
				}
				return
			}
			g, err := h.store.deliveries.Digest(t.Context(), d.DigestID)
			if err != nil {
				t.Fatal(err)
			}
			if !g.CloseAt.Equal(tt.close) {
				t.Errorf("digest closes at %s, want %s", g.CloseAt.UTC(), tt.close)
			}
			if want := tt.close.Add(delivery.DefaultTTL); !d.ExpiresAt.Equal(want) {
				t.Errorf("item expires %s, want %s (the close plus the ttl)", d.ExpiresAt, want)
			}
		})
	}
}

// TestSendDigestRules: a Send's digest overrides its category's; a critical category bypasses
// both; a digest with a fallback chain is refused, naming the field at fault; a delivery
// skipped at accept stays skipped; caps do not count a digest's items.
func TestSendDigestRules(t *testing.T) {
	h := newHarness()
	ctx := context.Background()
	cats := []preference.Category{
		{Name: "digest.cat", DefaultOptIn: true, Digest: &delivery.Digest{Window: time.Hour, Template: "cat"},
			Caps: []preference.Cap{{Limit: 1, Window: time.Hour}}},
		{Name: "critical", Critical: true, DefaultOptIn: true, Digest: &delivery.Digest{Window: time.Hour, Template: "cat"}},
		{Name: "chain", DefaultOptIn: true, Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}}},
	}
	for _, c := range cats {
		if err := h.store.PutCategory(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	h.svc.Limiter = fullCaps{} // every cap is full: only what caps do not count goes
	own := &delivery.Digest{Window: time.Minute, Template: "own"}
	addr := &notifier.Address{Email: "a@example.com", Phone: "+14155550100"}
	content := &notifier.Content{Title: "T", Body: "B"}
	tests := []struct {
		name     string
		req      notifier.SendRequest
		want     []string
		template string
		field    string
	}{
		{"the category's, its caps full: items are not capped", notifier.SendRequest{Category: "digest.cat"},
			[]string{"sms +14155550100 scheduled digest", "email a@example.com scheduled digest"}, "cat", ""},
		{"the Send's own", notifier.SendRequest{Category: "news", Digest: own},
			[]string{"sms +14155550100 scheduled digest", "email a@example.com scheduled digest"}, "own", ""},
		{"critical bypasses", notifier.SendRequest{Category: "critical", Digest: own},
			[]string{"sms +14155550100 queued", "email a@example.com queued"}, "", ""},
		{"with a chain of the Send", notifier.SendRequest{Category: "news", Digest: own,
			Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}}}, nil, "", "digest"},
		{"the category's with the Send's chain", notifier.SendRequest{Category: "digest.cat",
			Fallback: &delivery.Fallback{Channels: []delivery.Channel{delivery.Email, delivery.SMS}}}, nil, "", "fallback"},
		{"the Send's with the category's chain", notifier.SendRequest{Category: "chain", Digest: own}, nil, "", "digest"},
		{"a skipped channel stays skipped", notifier.SendRequest{Category: "news", Digest: own,
			Channels: []delivery.Channel{delivery.Email, delivery.IOS}},
			[]string{"email a@example.com scheduled digest", "ios  skipped no_address"}, "own", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.RequestHash, req.Address, req.Content = []byte(fmt.Sprint(i)), addr, content
			res, err := h.svc.Send(ctx, billing, &req)
			if tt.field != "" {
				if got := fields(err); !errs.Is(err, errs.Invalid) || !slices.Equal(got, []string{tt.field}) {
					t.Errorf("Send: %v (fields %q), want invalid %s", err, got, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(res.Notification); !slices.Equal(got, tt.want) {
				t.Errorf("deliveries %q, want %q", got, tt.want)
			}
			for _, d := range res.Notification.Deliveries {
				if d.Digest != nil && d.Digest.Template != tt.template {
					t.Errorf("%s: digest template %q, want %q", d.Channel, d.Digest.Template, tt.template)
				}
			}
		})
	}
}

// TestDigestCloser: a due digest closes into one published delivery whose content the digest
// template renders from the items (oldest first, with their own content), and whose
// notification is the digest's; a digest template that is gone sends a plain digest rather
// than hold the items back; nothing is published before the close time.
func TestDigestCloser(t *testing.T) {
	tests := []struct {
		name      string
		template  *templates.Parts
		subject   string
		textLines []string
	}{
		{"rendered by its template", &templates.Parts{EmailSubject: "{{.count}} new orders",
			EmailText: "{{range .items}}{{.subject}}: {{.data.order}} ({{.time}})\n{{end}}"},
			"3 new orders", []string{"Order 0: A-0 (2025-06-01T12:00:00Z)", "Order 1: A-1 (2025-06-01T12:00:01Z)",
				"Order 2: A-2 (2025-06-01T12:00:02Z)"}},
		{"its template gone: plain", nil, "3 new notifications", []string{"- Order 0", "- Order 1", "- Order 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			ctx := t.Context()
			if tt.template != nil {
				if _, err := h.templates.CreateTemplate(ctx, billing, &notifier.Template{Name: "orders-digest", Parts: *tt.template}); err != nil {
					t.Fatal(err)
				}
			}
			g := &delivery.Digest{Window: time.Minute, Template: "orders-digest"}
			var items []uuid.UUID
			for i := range 3 {
				at := now.Add(time.Duration(i) * time.Second)
				h.svc.Now = func() time.Time { return at }
				res := send(t, h, billing, &notifier.SendRequest{RequestHash: []byte{byte(i)}, Category: "orders", Digest: g,
					Address:  &notifier.Address{Email: "buyer@example.com"},
					Content:  &notifier.Content{Subject: fmt.Sprintf("Order %d", i), Body: "Thanks"},
					Data:     map[string]any{"order": fmt.Sprintf("A-%d", i)},
					Priority: []delivery.Priority{delivery.Low, delivery.High, delivery.Normal}[i]})
				items = append(items, res.Notification.Deliveries[0].ID)
			}
			if len(h.pub.published()) != 0 {
				t.Fatalf("an item was published: %v", h.pub.published())
			}
			// Explained later, a fourth item would go with the open digest, not a minute later.
			h.svc.Digests = h.store.deliveries
			h.svc.Now = func() time.Time { return now.Add(30 * time.Second) }
			explained, err := h.svc.Explain(ctx, billing, &notifier.SendRequest{Category: "orders", Digest: g,
				Address: &notifier.Address{Email: "buyer@example.com"}, Content: &notifier.Content{Subject: "Order 3", Body: "b"}})
			if err != nil {
				t.Fatal(err)
			}
			if at := explained.Deliveries[0].SendTime(now); !at.Equal(now.Add(time.Minute)) {
				t.Errorf("Explain: the item would go at %s, want with its open digest at %s", at, now.Add(time.Minute))
			}
			closer := &notifier.DigestCloser{Store: h.store, Templates: h.templates, Publisher: h.pub,
				Log: slog.New(slog.NewTextHandler(h.logs, nil)), RepublishAfter: republishAfter, Batch: 10, Parallel: 4}
			if n, err := closer.Close(ctx, now.Add(59*time.Second)); err != nil || n != 0 {
				t.Fatalf("Close before the close time: %d, %v; want nothing", n, err)
			}
			closeAt := now.Add(time.Minute)
			if n, err := closer.Close(ctx, closeAt); err != nil || n != 1 {
				t.Fatalf("Close: %d, %v; want 1", n, err)
			}
			pub := h.pub.published()
			if len(pub) != 1 || len(pub[0][delivery.Email]) != 1 {
				t.Fatalf("published %v, want one email", pub)
			}
			d, _ := h.store.deliveries.Get(pub[0][delivery.Email][0])
			if d.State != delivery.Queued || d.To != "buyer@example.com" || d.Priority != delivery.High ||
				!d.DueAt.Equal(closeAt.Add(republishAfter)) {
				t.Errorf("the digest's delivery: %s to %q, %s, due %s", d.State, d.To, d.Priority, d.DueAt)
			}
			if d.Content.Subject != tt.subject || strings.Split(strings.TrimSpace(d.Content.Text), "\n") == nil ||
				!slices.Equal(strings.Split(strings.TrimSpace(d.Content.Text), "\n"), tt.textLines) {
				t.Errorf("content %q / %q, want %q / %q\n%s", d.Content.Subject, d.Content.Text, tt.subject, tt.textLines, h.logs)
			}
			var digestN *notifier.Notification
			for _, n := range h.store.stored() {
				if n.ID == d.NotificationID {
					digestN = n
				}
			}
			if digestN == nil || digestN.Category != "orders" || digestN.AppID != billing.AppID {
				t.Fatalf("the digest's notification: %+v", digestN)
			}
			for _, id := range items {
				it, _ := h.store.deliveries.Get(id)
				if it.State != delivery.Digested {
					t.Errorf("item %s: %s, want digested", id, it.State)
				}
			}
			if n, err := closer.Close(ctx, closeAt.Add(time.Hour)); err != nil || n != 0 {
				t.Errorf("a second Close: %d, %v; want nothing", n, err)
			}
		})
	}
}

// fullCaps is a limiter whose caps are all full, and which admits every request.
type fullCaps struct{}

func (fullCaps) AllowRequest(context.Context, string, float64, int) (bool, time.Duration, error) {
	return true, 0, nil
}
func (fullCaps) Take(_ context.Context, caps []ratelimit.Cap) ([]bool, error) {
	return make([]bool, len(caps)), nil
}
func (fullCaps) Peek(_ context.Context, caps []ratelimit.Cap) ([]bool, error) {
	return make([]bool, len(caps)), nil
}
