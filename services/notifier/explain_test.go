package notifier_test

import (
	"testing"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/heraldhq/herald/services/notifier"
)

// TestSendToUserNeedsNoContactsAccess: an app that may not read contact data still sends to a
// user id; the notifier looks the user up itself.
func TestSendToUserNeedsNoContactsAccess(t *testing.T) {
	h := newHarness()
	h.dir.users = map[string]notifier.User{"u1": {ID: "u1", Email: "u1@example.com"}}
	sendOnly := billing
	sendOnly.Contacts = appkey.ContactsNone
	res := send(t, h, sendOnly, &notifier.SendRequest{UserID: "u1", Category: "news",
		Content: &notifier.Content{Title: "T", Body: "B"}})
	if got := summary(res.Notification); len(got) != 1 || got[0] != "email u1@example.com queued" {
		t.Errorf("deliveries %q", got)
	}
}

// TestExplainOfUserNeedsContactsRead: Explain of a user recipient shows the user's settings
// and suppressions, so it takes contacts read access (or an admin app), checked before the
// request is looked at: the refusal is the same for a user that exists, one that does not,
// and a request that is not even valid. Explain of an address needs no access.
func TestExplainOfUserNeedsContactsRead(t *testing.T) {
	h := newHarness()
	h.dir.users = map[string]notifier.User{"u1": {ID: "u1", Email: "u1@example.com",
		Settings: &preference.Settings{OptedOutChannels: []delivery.Channel{delivery.SMS}}}}
	explain := func(c appkey.Caller, user, category string) (*notifier.Notification, error) {
		return h.svc.Explain(t.Context(), c, &notifier.SendRequest{UserID: user, Category: category,
			Content: &notifier.Content{Title: "T", Body: "B"}})
	}
	with := func(a appkey.ContactsAccess) appkey.Caller {
		c := billing
		c.Contacts = a
		return c
	}
	admin := billing
	admin.Admin = true

	for name, c := range map[string]appkey.Caller{"read": with(appkey.ContactsRead), "write": with(appkey.ContactsWrite), "admin": admin} {
		n, err := explain(c, "u1", "news")
		if err != nil || len(n.Deliveries) != 1 {
			t.Errorf("%s: Explain = %+v, %v", name, n, err)
		}
	}
	existing, err := explain(billing, "u1", "news")
	if !errs.Is(err, errs.PermissionDenied) || existing != nil {
		t.Fatalf("no access: Explain = %+v, %v; want PermissionDenied", existing, err)
	}
	lookups := len(h.dir.lookups)
	for what, user := range map[string]string{"unknown user": "nobody", "user id over its limit": string(make([]byte, 1000))} {
		if _, other := explain(billing, user, "no such category!"); other == nil || other.Error() != err.Error() || !errs.Is(other, errs.PermissionDenied) {
			t.Errorf("%s: %v, want the same refusal as for an existing user: %v", what, other, err)
		}
	}
	if len(h.dir.lookups) != lookups {
		t.Error("a refused Explain looked the user up")
	}

	n, err := h.svc.Explain(t.Context(), billing, &notifier.SendRequest{Address: &notifier.Address{Email: "ada@example.com"},
		Category: "news", Content: &notifier.Content{Title: "T", Body: "B"}})
	if err != nil || len(n.Deliveries) != 1 {
		t.Errorf("Explain of an address without contacts access = %+v, %v", n, err)
	}
}
