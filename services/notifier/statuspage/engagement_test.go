package statuspage_test

import (
	"net/http"
	"testing"

	"github.com/heraldhq/herald/services/notifier/ops"
)

// TestPageShowsClickThrough: the engagement rows, inline content named as such, rates as
// percentages; and a row saying so when there are none.
func TestPageShowsClickThrough(t *testing.T) {
	t.Parallel()
	snap := busy()
	snap.Engagement = []ops.EngagementRow{
		{Template: "shipped", Category: "account", Channel: "sms", Sent: 200, Clicked: 31, ClickRate: 0.155},
		{Category: "marketing", Channel: "email", Sent: 3, Clicked: 0},
	}
	doc := parse(t, get(t, snap, http.MethodGet, "/status").Body.String())
	table := one(t, doc, "table", "id", "engagement")
	for _, c := range []struct{ field, want string }{
		{"template", "shipped"}, {"category", "account"}, {"channel", "sms"}, {"sent", "200"}, {"clicked", "31"}, {"click_rate", "15.5%"},
	} {
		cells := find(table, "td", "data-field", c.field)
		if len(cells) != 2 || text(cells[0]) != c.want {
			t.Errorf("%s: %d cells, first %q, want %q", c.field, len(cells), text(cells[0]), c.want)
		}
	}
	if got := text(find(table, "td", "data-field", "template")[1]); got != "(inline)" {
		t.Errorf("inline content shows as %q", got)
	}

	empty := parse(t, get(t, ops.Snapshot{}, http.MethodGet, "/status").Body.String())
	if n := len(find(one(t, empty, "table", "id", "engagement"), "tr", "class", "empty")); n != 1 {
		t.Errorf("%d empty rows without engagement, want 1", n)
	}
}
