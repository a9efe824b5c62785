package postgres_test

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/links"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// TestLinksAndClicks stores links with their notification (and not with a duplicate), resolves
// them, and counts clicks: once per delivery and window, bots apart, scanners by timing, and a
// person's click in the delivery stats.
func TestLinksAndClicks(t *testing.T) {
	s, pool := open(t)
	ctx := t.Context()
	app := newID(t)
	first, err := s.ReserveLinkIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.ReserveLinkIDs(ctx)
	if err != nil || second-first != links.BlockSize {
		t.Fatalf("blocks %d then %d (%v), want %d apart", first, second, err, links.BlockSize)
	}

	now := time.Now().Truncate(time.Microsecond)
	n := notification(t, app, "k1", delivery.Queued)
	n.CreatedAt = now
	d := n.Deliveries[0]
	link := func(seq int64, url string) notifier.Link {
		return notifier.Link{ID: links.MakeID(now, seq), DeliveryID: d.ID, NotificationID: n.ID, AppID: app,
			Channel: d.Channel, Category: n.Category, URL: url, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	n.Links = []notifier.Link{link(first, "https://ex.com/a?t=1"), link(first+1, "https://ex.com/b")}
	create(t, s, n)
	dup := notification(t, app, "k1", delivery.Queued)
	dup.Links = []notifier.Link{link(first+2, "https://ex.com/c")}
	if created, err := createAll(t, s, dup); err != nil || created[0] {
		t.Fatalf("duplicate: created %v, %v", created, err)
	}

	got, err := s.Link(ctx, n.Links[0].ID)
	if err != nil || got.URL != "https://ex.com/a?t=1" || got.DeliveryID != d.ID || !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("Link = %+v, %v", got, err)
	}
	for _, id := range []int64{links.MakeID(now, first+2), links.MakeID(now, second)} {
		if _, err := s.Link(ctx, id); !errs.Is(err, errs.NotFound) {
			t.Errorf("Link(%d) err = %v, want NotFound", id, err)
		}
	}

	// The delivery went out now; the prefetch window is 2 s.
	if _, err := pool.Exec(ctx, `UPDATE delivery.deliveries SET state = 'sent', sent_at = $2 WHERE id = $1`, d.ID, now); err != nil {
		t.Fatal(err)
	}
	click := func(l notifier.Link, after time.Duration, bot string) links.Click {
		return links.Click{LinkID: l.ID, DeliveryID: d.ID, At: now.Add(after), Bot: bot}
	}
	for _, tc := range []struct {
		name   string
		clicks []links.Click
		want   []string
	}{
		{"scanner on arrival", []links.Click{click(n.Links[0], time.Second, "")}, []string{links.OutcomeBot}},
		{"person, and a previewer", []links.Click{click(n.Links[0], 10*time.Second, ""), click(n.Links[1], 65*time.Second, links.BotAgent)},
			[]string{links.OutcomePerson, links.OutcomeBot}},
		{"again within the window", []links.Click{click(n.Links[1], 30*time.Second, "")}, []string{links.OutcomeDuplicate}},
		{"after the window", []links.Click{click(n.Links[1], 75*time.Second, "")}, []string{links.OutcomePerson}},
		{"unknown link", []links.Click{{LinkID: links.MakeID(now, second), DeliveryID: d.ID, At: now.Add(80 * time.Second)}},
			[]string{links.OutcomeDuplicate}},
	} {
		out, err := s.InsertClicks(ctx, tc.clicks, time.Minute, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(out) != len(tc.want) {
			t.Fatalf("%s: outcomes %v, want %v", tc.name, out, tc.want)
		}
		for i := range out {
			if out[i] != tc.want[i] {
				t.Errorf("%s: outcomes %v, want %v", tc.name, out, tc.want)
			}
		}
	}
	stats, err := s.DeliveryStats(ctx, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].Clicked != 1 || stats[0].Sent != 1 {
		t.Errorf("stats = %+v, want one sent delivery, clicked", stats)
	}

	if pruned := pruneAll(t, pool, postgres.PruneLinks, now.Add(time.Hour), 1); pruned != 2 {
		t.Fatalf("PruneLinks pruned %d links, want 2", pruned)
	}
	if pruned := pruneAll(t, pool, postgres.PruneClicks, now.Add(time.Hour), 1); pruned != 4 {
		t.Fatalf("PruneClicks pruned %d clicks, want 4", pruned)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM notifier.link_clicks`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d clicks left after pruning (%v)", left, err)
	}

	// A deleted user's links go with the delivery history's content.
	gone := notification(t, app, "", delivery.Queued)
	gone.UserID, gone.CreatedAt = "deleted-user", now
	gone.Links = []notifier.Link{{ID: links.MakeID(now, second), DeliveryID: gone.Deliveries[0].ID, NotificationID: gone.ID,
		AppID: app, Channel: delivery.Email, Category: gone.Category, URL: "https://ex.com/me", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}
	create(t, s, gone)
	if err := s.EraseUser(ctx, "deleted-user"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Link(ctx, gone.Links[0].ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("a deleted user's link: err = %v, want NotFound", err)
	}
}
