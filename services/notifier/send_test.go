package notifier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/templates"
	"github.com/heraldhq/herald/services/notifier"
)

// now is the service's clock in these tests. It lies in the past, so that the one wall-clock
// check in validation (send_at within a year) never fires for times near it.
var now = time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)

const republishAfter = 2 * time.Minute

var (
	iosToken  = strings.Repeat("ab", 32)
	iosToken2 = strings.Repeat("cd", 32)
)

type harness struct {
	svc       *notifier.Sender
	templates *notifier.Templates
	store     *fakeStore
	pub       *fakePublisher
	dir       *fakeDirectory
	logs      *syncBuffer
}

// syncBuffer is a bytes.Buffer that the logger and the test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newHarness() *harness {
	h := &harness{store: newFakeStore(), pub: &fakePublisher{}, dir: &fakeDirectory{}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, nil))
	clock := func() time.Time { return now }
	h.templates = &notifier.Templates{Store: h.store}
	h.svc = &notifier.Sender{
		Store:          h.store,
		Templates:      h.templates,
		Categories:     &notifier.Categories{Store: h.store},
		Handoff:        &notifier.Handoff{Publisher: h.pub, Deliveries: h.store.deliveries, Log: log, Now: clock},
		Directory:      h.dir,
		Log:            log,
		RepublishAfter: republishAfter,
		Now:            clock,
	}
	return h
}

var billing = appkey.Caller{AppID: uuid.MustParse("0190b6f4-0000-7000-8000-000000000001"), AppName: "billing"}

// summary lists deliveries as "channel to state reason", in the order Send made them.
func summary(n *notifier.Notification) []string {
	var out []string
	for _, d := range n.Deliveries {
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", d.Channel, d.To, d.State, d.Reason)))
	}
	return out
}

func send(t *testing.T, h *harness, c appkey.Caller, req *notifier.SendRequest) *notifier.SendResult {
	t.Helper()
	res, err := h.svc.Send(context.Background(), c, req)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return res
}

func TestSendNormalisesAddresses(t *testing.T) {
	h := newHarness()
	req := &notifier.SendRequest{
		RequestHash: []byte("hash"),
		Address: &notifier.Address{
			Email:         " Ann.Lee@Example.COM ",
			Phone:         "+1 (415) 555-0123",
			IOSTokens:     []string{strings.ToUpper(iosToken)},
			AndroidTokens: []string{" fcm:token-1 "},
		},
		Category: "account.security",
		Content:  &notifier.Content{Title: "Sign-in", Body: "New sign-in from Berlin", HTML: "<p>New sign-in</p>"},
		Data:     map[string]any{"city": "Berlin"},
	}
	res := send(t, h, billing, req)
	n := res.Notification
	if res.Duplicate {
		t.Error("Duplicate = true for a new notification")
	}

	want := []string{
		"ios " + iosToken + " queued",
		"android fcm:token-1 queued",
		"sms +14155550123 queued",
		"email Ann.Lee@example.com queued",
	}
	if got := summary(n); !slices.Equal(got, want) {
		t.Errorf("deliveries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n.AppID != billing.AppID || n.Category != "account.security" || n.Priority != delivery.Normal ||
		string(n.RequestHash) != "hash" || !n.SendAt.Equal(now) || !n.CreatedAt.Equal(now) ||
		!n.ExpiresAt.Equal(now.Add(delivery.DefaultTTL)) || n.Template != nil || n.UserID != "" {
		t.Errorf("notification = %+v", n)
	}
	push := delivery.Content{Title: "Sign-in", Body: "New sign-in from Berlin", Data: map[string]any{"city": "Berlin"}}
	wantContent := map[delivery.Channel]delivery.Content{
		delivery.IOS:     push,
		delivery.Android: push,
		delivery.SMS:     {Body: "New sign-in from Berlin"},
		delivery.Email:   {Subject: "Sign-in", HTML: "<p>New sign-in</p>", Text: "New sign-in from Berlin"},
	}
	wantPubs := map[delivery.Channel][]uuid.UUID{}
	for _, d := range n.Deliveries {
		if d.NotificationID != n.ID || d.ID == uuid.Nil || d.DueAt == nil || !d.DueAt.Equal(now.Add(republishAfter)) ||
			!d.CreatedAt.Equal(now) || !d.UpdatedAt.Equal(now) {
			t.Errorf("delivery %+v", d)
		}
		if !reflect.DeepEqual(d.Content, wantContent[d.Channel]) {
			t.Errorf("%s content = %+v, want %+v", d.Channel, d.Content, wantContent[d.Channel])
		}
		wantPubs[d.Channel] = append(wantPubs[d.Channel], d.ID)
	}
	// Suppressions are looked up by the normalised addresses, the form they are stored in.
	wantLookup := []notifier.Target{
		{Channel: delivery.Email, Address: "Ann.Lee@example.com"}, {Channel: delivery.SMS, Address: "+14155550123"},
		{Channel: delivery.IOS, Address: iosToken}, {Channel: delivery.Android, Address: "fcm:token-1"},
	}
	sortTargets := func(ts []notifier.Target) []notifier.Target {
		return slices.SortedFunc(slices.Values(ts), func(a, b notifier.Target) int {
			return strings.Compare(string(a.Channel)+a.Address, string(b.Channel)+b.Address)
		})
	}
	if len(h.dir.lookups) != 1 || !slices.Equal(sortTargets(h.dir.lookups[0]), sortTargets(wantLookup)) {
		t.Errorf("directory looked up %v, want %v", h.dir.lookups, wantLookup)
	}
	if got := h.store.stored(); len(got) != 1 || got[0] != n {
		t.Errorf("stored %v, want the returned notification", got)
	}
	if got := h.pub.published(); len(got) != 1 || !reflect.DeepEqual(got[0], wantPubs) {
		t.Errorf("published %+v, want one call %+v", got, wantPubs)
	}
}

func TestSendTargets(t *testing.T) {
	content := &notifier.Content{Title: "T", Body: "B"} // push, SMS and email (subject from the title)
	tests := []struct {
		name     string
		address  notifier.Address
		channels []delivery.Channel
		content  *notifier.Content
		want     []string
	}{
		{
			name:    "two ios tokens, two deliveries",
			address: notifier.Address{IOSTokens: []string{iosToken, iosToken2}},
			want:    []string{"ios " + iosToken + " queued", "ios " + iosToken2 + " queued"},
		},
		{
			name:    "duplicate tokens collapse after normalisation",
			address: notifier.Address{IOSTokens: []string{iosToken, strings.ToUpper(iosToken), " " + iosToken + " "}},
			want:    []string{"ios " + iosToken + " queued"},
		},
		{
			name:    "duplicate android tokens collapse",
			address: notifier.Address{AndroidTokens: []string{"a:1", "a:2", " a:1"}},
			want:    []string{"android a:1 queued", "android a:2 queued"},
		},
		{
			name:    "implicit channels use only the reachable ones",
			address: notifier.Address{Phone: "+447911123456", AndroidTokens: []string{"a:1"}},
			want:    []string{"android a:1 queued", "sms +447911123456 queued"},
		},
		{
			name:     "explicit channel without an address is skipped",
			address:  notifier.Address{Email: "a@example.com"},
			channels: []delivery.Channel{delivery.Email, delivery.SMS, delivery.IOS},
			want:     []string{"email a@example.com queued", "sms  skipped no_address", "ios  skipped no_address"},
		},
		{
			name:     "explicit channels restrict the reachable ones",
			address:  notifier.Address{Email: "a@example.com", Phone: "+14155550123", IOSTokens: []string{iosToken}},
			channels: []delivery.Channel{delivery.SMS},
			want:     []string{"sms +14155550123 queued"},
		},
		{
			name:    "implicit channel without content is skipped",
			address: notifier.Address{Email: "a@example.com", Phone: "+14155550123"},
			content: &notifier.Content{Body: "no title, so no email subject"},
			want:    []string{"sms +14155550123 queued", "email a@example.com skipped no_content"},
		},
		{
			name:     "every explicit channel without an address",
			address:  notifier.Address{Email: "a@example.com"},
			channels: []delivery.Channel{delivery.SMS},
			want:     []string{"sms  skipped no_address"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			c := tt.content
			if c == nil {
				c = content
			}
			addr := tt.address
			res := send(t, h, billing, &notifier.SendRequest{Address: &addr, Category: "news", Channels: tt.channels, Content: c})
			if got := summary(res.Notification); !slices.Equal(got, tt.want) {
				t.Errorf("deliveries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			wantPubs := map[delivery.Channel][]uuid.UUID{}
			for _, d := range res.Notification.Deliveries {
				if d.State == delivery.Skipped {
					if d.DueAt != nil || !reflect.DeepEqual(d.Content, delivery.Content{}) {
						t.Errorf("skipped delivery %+v has a due time or content", d)
					}
					continue
				}
				wantPubs[d.Channel] = append(wantPubs[d.Channel], d.ID)
			}
			gotPubs := map[delivery.Channel][]uuid.UUID{}
			for _, call := range h.pub.published() {
				for ch, ids := range call {
					gotPubs[ch] = append(gotPubs[ch], ids...)
				}
			}
			if !reflect.DeepEqual(gotPubs, wantPubs) {
				t.Errorf("published %+v, want %+v", gotPubs, wantPubs)
			}
		})
	}
}

func TestSendSchedule(t *testing.T) {
	tests := []struct {
		name       string
		sendAt     time.Time
		ttl        time.Duration
		wantState  delivery.State
		wantSendAt time.Time
		wantDue    time.Time
		wantExpiry time.Time
	}{
		{"future send_at is scheduled", now.Add(2 * time.Hour), time.Hour,
			delivery.Scheduled, now.Add(2 * time.Hour), now.Add(2 * time.Hour), now.Add(3 * time.Hour)},
		{"future send_at with the default ttl", now.Add(time.Minute), 0,
			delivery.Scheduled, now.Add(time.Minute), now.Add(time.Minute), now.Add(time.Minute + delivery.DefaultTTL)},
		{"past send_at is sent now", now.Add(-time.Hour), time.Hour,
			delivery.Queued, now, now.Add(republishAfter), now.Add(time.Hour)},
		{"send_at now is sent now", now, time.Hour,
			delivery.Queued, now, now.Add(republishAfter), now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			res := send(t, h, billing, &notifier.SendRequest{
				Address:  &notifier.Address{Email: "a@example.com", IOSTokens: []string{iosToken}},
				Category: "reminders", Content: &notifier.Content{Title: "T", Body: "B"},
				SendAt: tt.sendAt, TTL: tt.ttl,
			})
			n := res.Notification
			if !n.SendAt.Equal(tt.wantSendAt) || !n.ExpiresAt.Equal(tt.wantExpiry) {
				t.Errorf("send_at %s expires_at %s, want %s and %s", n.SendAt, n.ExpiresAt, tt.wantSendAt, tt.wantExpiry)
			}
			for _, d := range n.Deliveries {
				if d.State != tt.wantState || d.DueAt == nil || !d.DueAt.Equal(tt.wantDue) {
					t.Errorf("%s delivery state %s due %v, want %s due %s", d.Channel, d.State, d.DueAt, tt.wantState, tt.wantDue)
				}
			}
			published := len(h.pub.published()) > 0
			if want := tt.wantState == delivery.Queued; published != want {
				t.Errorf("published = %v, want %v", published, want)
			}
		})
	}
}

func TestSendPublishFailureStillAccepts(t *testing.T) {
	h := newHarness()
	h.pub.err = errors.New("nats: no responders")
	res := send(t, h, billing, &notifier.SendRequest{
		Address: &notifier.Address{Phone: "+14155550123"}, Category: "otp", Content: &notifier.Content{Body: "123456"},
	})
	if len(h.store.stored()) != 1 || len(h.pub.published()) != 1 {
		t.Fatalf("stored %d, publish attempts %d; want 1 and 1", len(h.store.stored()), len(h.pub.published()))
	}
	// The reconciler finds the delivery by its due time and publishes it again: at its next
	// pass, not after the deadline the delivery was stored with.
	d := res.Notification.Deliveries[0]
	if d.State != delivery.Queued || d.DueAt == nil || !d.DueAt.Equal(now.Add(republishAfter)) {
		t.Errorf("delivery %+v, want queued and due at %s", d, now.Add(republishAfter))
	}
	if stored, _ := h.store.deliveries.Get(d.ID); stored.DueAt == nil || !stored.DueAt.Equal(now) {
		t.Errorf("stored delivery due at %v, want %s: marked for the reconciler's next pass", stored.DueAt, now)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "publish failed") || strings.Contains(logs, "+14155550123") {
		t.Errorf("logs = %q, want a warning that does not name the address", logs)
	}
}

func TestSendIdempotent(t *testing.T) {
	req := func(hash string) *notifier.SendRequest {
		return &notifier.SendRequest{
			IdempotencyKey: "order-7", RequestHash: []byte(hash),
			Address: &notifier.Address{Email: "a@example.com"}, Category: "orders",
			Content: &notifier.Content{Title: "Shipped", Body: "Your order shipped"},
		}
	}
	h := newHarness()
	first := send(t, h, billing, req("h1"))
	if first.Duplicate {
		t.Fatal("first Send is a duplicate")
	}

	t.Run("same request is a duplicate", func(t *testing.T) {
		res := send(t, h, billing, req("h1"))
		if !res.Duplicate || res.Notification.ID != first.Notification.ID {
			t.Errorf("replay = %+v, want the first notification as a duplicate", res)
		}
		if len(h.store.stored()) != 1 || len(h.pub.published()) != 1 {
			t.Errorf("stored %d, published %d times; want 1 and 1", len(h.store.stored()), len(h.pub.published()))
		}
	})
	t.Run("other request with the key conflicts", func(t *testing.T) {
		res, err := h.svc.Send(t.Context(), billing, req("h2"))
		if !errs.Is(err, errs.Conflict) {
			t.Errorf("Send = %+v, %v; want a Conflict error", res, err)
		}
	})
	t.Run("the key is per app", func(t *testing.T) {
		other := appkey.Caller{AppID: uuid.MustParse("0190b6f4-0000-7000-8000-000000000002"), AppName: "shop"}
		res := send(t, h, other, req("h2"))
		if res.Duplicate || res.Notification.ID == first.Notification.ID {
			t.Errorf("other app's Send = %+v, want a new notification", res)
		}
	})

	// A concurrent Send with the same key commits between this Send's look-up and its insert.
	for _, tt := range []struct {
		name    string
		hash    string
		wantErr errs.Kind
	}{
		{"lost race, same request", "r1", 0},
		{"lost race, other request", "r2", errs.Conflict},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.store.racer = &notifier.Notification{ID: uuid.New(), AppID: billing.AppID, IdempotencyKey: "order-7",
				RequestHash: []byte("r1")}
			res, err := h.svc.Send(t.Context(), billing, req(tt.hash))
			switch {
			case tt.wantErr != 0:
				if !errs.Is(err, tt.wantErr) {
					t.Errorf("Send = %+v, %v; want error kind %d", res, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("Send: %v", err)
			case !res.Duplicate || res.Notification != h.store.racer:
				t.Errorf("Send = %+v, want the racer's notification as a duplicate", res)
			}
			if got := h.pub.published(); len(got) != 0 {
				t.Errorf("published %+v for a notification this Send did not create", got)
			}
		})
	}
}

func TestSendToUser(t *testing.T) {
	h := newHarness()
	h.dir.users = map[string]notifier.User{
		"u1": {ID: "u1", Email: "u1@example.com", Phone: "+14155550123", Locale: "de"},
		"u2": {ID: "u2"},
	}
	res := send(t, h, billing, &notifier.SendRequest{UserID: "u1", Category: "news",
		Content: &notifier.Content{Title: "T", Body: "B"}})
	want := []string{"sms +14155550123 queued", "email u1@example.com queued"}
	if got := summary(res.Notification); !slices.Equal(got, want) || res.Notification.UserID != "u1" {
		t.Errorf("deliveries %q for user %q, want %q for u1", got, res.Notification.UserID, want)
	}

	tests := []struct {
		name    string
		user    string
		dir     notifier.Directory
		wantErr errs.Kind
		field   string
	}{
		{"unknown user", "nobody", h.dir, errs.NotFound, ""},
		{"user with no address", "u2", h.dir, errs.Invalid, "recipient"},
		{"directory down", "u1", &fakeDirectory{err: errs.E(errs.Unavailable, "contacts down")}, errs.Unavailable, ""},
		{"no directory", "u1", nil, errs.FailedPrecondition, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.svc.Directory = tt.dir
			res, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{UserID: tt.user, Category: "news",
				Content: &notifier.Content{Title: "T", Body: "B"}})
			if !errs.Is(err, tt.wantErr) {
				t.Fatalf("Send = %+v, %v; want error kind %d", res, err, tt.wantErr)
			}
			if tt.field != "" {
				if got := fields(err); !slices.Equal(got, []string{tt.field}) {
					t.Errorf("fields %q, want %q", got, tt.field)
				}
			}
			if len(h.store.stored()) != 0 {
				t.Error("a notification was stored")
			}
		})
	}
}

func TestSendTemplate(t *testing.T) {
	h := newHarness()
	for _, p := range []templates.Parts{
		{PushBody: "old"},
		{PushTitle: "Hi {{.name}}", PushBody: "Your code is {{.code}}", SMSBody: "Code {{.code}}",
			EmailSubject: "Code for {{.name}}", EmailHTML: "<b>{{.code}}</b>"},
	} {
		if _, err := h.templates.CreateTemplate(t.Context(), billing, &notifier.Template{Name: "otp", Parts: p}); err != nil {
			t.Fatal(err)
		}
	}
	data := map[string]any{"name": "Ann <3", "code": "4711"}
	res := send(t, h, billing, &notifier.SendRequest{
		Address:  &notifier.Address{Email: "a@example.com", Phone: "+14155550123", IOSTokens: []string{iosToken}},
		Category: "otp", Template: &notifier.TemplateRef{Name: "otp", Locale: "de"}, Data: data,
	})
	n := res.Notification
	if want := (&notifier.TemplateRef{Name: "otp", Version: 2, Locale: "de"}); !reflect.DeepEqual(n.Template, want) {
		t.Errorf("template ref %+v, want %+v", n.Template, want)
	}
	want := map[delivery.Channel]delivery.Content{
		delivery.IOS:   {Title: "Hi Ann <3", Body: "Your code is 4711", Data: data},
		delivery.SMS:   {Body: "Code 4711"},
		delivery.Email: {Subject: "Code for Ann <3", HTML: "<b>4711</b>"},
	}
	for _, d := range n.Deliveries {
		if !reflect.DeepEqual(d.Content, want[d.Channel]) || d.State != delivery.Queued {
			t.Errorf("%s delivery %s content %+v, want %+v", d.Channel, d.State, d.Content, want[d.Channel])
		}
	}

	tests := []struct {
		name    string
		ref     notifier.TemplateRef
		data    map[string]any
		wantErr errs.Kind
		field   string
	}{
		{"older version", notifier.TemplateRef{Name: "otp", Version: 1}, nil, 0, ""},
		{"unknown template", notifier.TemplateRef{Name: "nope"}, data, errs.NotFound, ""},
		{"unknown version", notifier.TemplateRef{Name: "otp", Version: 3}, data, errs.NotFound, ""},
		{"data missing a key", notifier.TemplateRef{Name: "otp"}, map[string]any{"name": "x"}, errs.Invalid, "template.push_body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := tt.ref
			res, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{
				Address: &notifier.Address{IOSTokens: []string{iosToken}}, Category: "otp", Template: &ref, Data: tt.data})
			if tt.wantErr == 0 {
				if err != nil || res.Notification.Template.Version != ref.Version {
					t.Errorf("Send = %+v, %v; want version %d", res, err, ref.Version)
				}
				return
			}
			if !errs.Is(err, tt.wantErr) {
				t.Fatalf("Send = %+v, %v; want error kind %d", res, err, tt.wantErr)
			}
			if got := fields(err); tt.field != "" && !slices.Equal(got, []string{tt.field}) {
				t.Errorf("fields %q, want %q", got, tt.field)
			}
		})
	}
}

func TestSendStoreFailure(t *testing.T) {
	h := newHarness()
	h.store.createErr = errs.Wrap(errs.Unavailable, errors.New("connection refused"), "the database is unavailable")
	_, err := h.svc.Send(t.Context(), billing, &notifier.SendRequest{
		Address: &notifier.Address{Email: "a@example.com"}, Category: "news", Content: &notifier.Content{Title: "T", Body: "B"}})
	if !errs.Is(err, errs.Unavailable) {
		t.Errorf("Send: %v, want Unavailable", err)
	}
	if got := h.pub.published(); len(got) != 0 {
		t.Errorf("published %+v before a commit", got)
	}
}

// fields returns the field names of err's violations.
func fields(err error) []string {
	var e *errs.Error
	if !errors.As(err, &e) {
		return nil
	}
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestSendValidation(t *testing.T) {
	valid := func() *notifier.SendRequest {
		return &notifier.SendRequest{
			Address:  &notifier.Address{Email: "a@example.com"},
			Category: "news",
			Content:  &notifier.Content{Title: "T", Body: "B"},
		}
	}
	tokens := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("tok-%d", i)
		}
		return out
	}
	tests := []struct {
		name   string
		change func(r *notifier.SendRequest)
		want   []string
	}{
		{"empty request", func(r *notifier.SendRequest) { *r = notifier.SendRequest{} },
			[]string{"recipient", "category", "message"}},
		{"user and address", func(r *notifier.SendRequest) { r.UserID = "u1" }, []string{"recipient"}},
		{"empty address", func(r *notifier.SendRequest) { r.Address = &notifier.Address{} }, []string{"recipient.address"}},
		{"bad email", func(r *notifier.SendRequest) { r.Address.Email = "Ann <a@example.com>" },
			[]string{"recipient.address.email"}},
		{"bad phone", func(r *notifier.SendRequest) { r.Address.Phone = "0301234567" }, []string{"recipient.address.phone"}},
		{"bad ios token", func(r *notifier.SendRequest) { r.Address.IOSTokens = []string{iosToken, "xyz"} },
			[]string{"recipient.address.ios_tokens[1]"}},
		{"bad android token", func(r *notifier.SendRequest) { r.Address.AndroidTokens = []string{"a b"} },
			[]string{"recipient.address.android_tokens[0]"}},
		{"too many tokens", func(r *notifier.SendRequest) { r.Address.AndroidTokens = tokens(101) },
			[]string{"recipient.address.android_tokens"}},
		{"user id too long", func(r *notifier.SendRequest) { r.Address, r.UserID = nil, strings.Repeat("u", 129) },
			[]string{"recipient.user_id"}},
		{"user id not UTF-8", func(r *notifier.SendRequest) { r.Address, r.UserID = nil, "u\xff" },
			[]string{"recipient.user_id"}},
		{"user id with NUL", func(r *notifier.SendRequest) { r.Address, r.UserID = nil, "u\x00" },
			[]string{"recipient.user_id"}},
		{"upper-case category", func(r *notifier.SendRequest) { r.Category = "News" }, []string{"category"}},
		{"unknown category", func(r *notifier.SendRequest) { r.Category = "nosuch" }, []string{"category"}},
		{"category too long", func(r *notifier.SendRequest) { r.Category = "n" + strings.Repeat("x", 64) }, []string{"category"}},
		{"repeated channel", func(r *notifier.SendRequest) {
			r.Channels = []delivery.Channel{delivery.Email, delivery.SMS, delivery.Email}
		}, []string{"channels[2]"}},
		{"template and content", func(r *notifier.SendRequest) { r.Template = &notifier.TemplateRef{Name: "t"} },
			[]string{"message"}},
		{"template without a name", func(r *notifier.SendRequest) { r.Content, r.Template = nil, &notifier.TemplateRef{} },
			[]string{"template.name"}},
		{"template with a negative version", func(r *notifier.SendRequest) {
			r.Content, r.Template = nil, &notifier.TemplateRef{Name: "t", Version: -1}
		}, []string{"template.version"}},
		{"template name with NUL", func(r *notifier.SendRequest) {
			r.Content, r.Template = nil, &notifier.TemplateRef{Name: "t\x00"}
		}, []string{"template.name"}},
		{"template locale with NUL", func(r *notifier.SendRequest) {
			r.Content, r.Template = nil, &notifier.TemplateRef{Name: "t", Locale: "de\x00"}
		}, []string{"template.locale"}},
		{"empty content", func(r *notifier.SendRequest) { r.Content = &notifier.Content{Subject: "only a subject"} },
			[]string{"content"}},
		{"title too long", func(r *notifier.SendRequest) { r.Content.Title = strings.Repeat("t", 1025) }, []string{"content.title"}},
		{"subject too long", func(r *notifier.SendRequest) { r.Content.Subject = strings.Repeat("s", 1025) },
			[]string{"content.subject"}},
		{"body too long", func(r *notifier.SendRequest) { r.Content.Body = strings.Repeat("b", 64<<10+1) }, []string{"content.body"}},
		{"html too long", func(r *notifier.SendRequest) { r.Content.HTML = strings.Repeat("h", 256<<10+1) }, []string{"content.html"}},
		{"body not UTF-8", func(r *notifier.SendRequest) { r.Content.Body = "\xc3" }, []string{"content.body"}},
		{"body with NUL", func(r *notifier.SendRequest) { r.Content.Body = "a\x00b" }, []string{"content.body"}},
		{"data with NUL", func(r *notifier.SendRequest) {
			r.Data = map[string]any{"list": []any{map[string]any{"x": "a\x00"}}}
		}, []string{"data"}},
		{"data key with NUL", func(r *notifier.SendRequest) { r.Data = map[string]any{"k\x00": 1.0} }, []string{"data"}},
		{"data with NaN", func(r *notifier.SendRequest) { r.Data = map[string]any{"n": math.NaN()} }, []string{"data"}},
		{"data with infinity", func(r *notifier.SendRequest) { r.Data = map[string]any{"n": []any{math.Inf(1)}} },
			[]string{"data"}},
		{"idempotency key too long", func(r *notifier.SendRequest) { r.IdempotencyKey = strings.Repeat("k", 257) },
			[]string{"idempotency_key"}},
		{"idempotency key with NUL", func(r *notifier.SendRequest) { r.IdempotencyKey = "k\x00" },
			[]string{"idempotency_key"}},
		{"negative ttl", func(r *notifier.SendRequest) { r.TTL = -time.Second }, []string{"ttl"}},
		{"ttl too long", func(r *notifier.SendRequest) { r.TTL = 31 * 24 * time.Hour }, []string{"ttl"}},
		// validate measures send_at against the wall clock, not Service.Now.
		{"send_at beyond a year", func(r *notifier.SendRequest) { r.SendAt = time.Now().Add(2 * 365 * 24 * time.Hour) },
			[]string{"send_at"}},
		{"explicit channel without content", func(r *notifier.SendRequest) {
			r.Content = &notifier.Content{Body: "no subject for email"}
			r.Channels = []delivery.Channel{delivery.Email}
		}, []string{"content"}},
		{"several at once", func(r *notifier.SendRequest) {
			r.Address.Email, r.Address.Phone, r.Category, r.TTL = "nope", "+1", "", -1
		}, []string{"recipient.address.email", "recipient.address.phone", "category", "ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			r := valid()
			tt.change(r)
			res, err := h.svc.Send(t.Context(), billing, r)
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("Send = %+v, %v; want an Invalid error", res, err)
			}
			if got := fields(err); !slices.Equal(got, tt.want) {
				t.Errorf("fields %q, want %q (%v)", got, tt.want, err)
			}
			if len(h.store.stored()) != 0 || len(h.pub.published()) != 0 {
				t.Error("an invalid request was stored or published")
			}
		})
	}
	t.Run("the valid base request", func(t *testing.T) {
		send(t, newHarness(), billing, valid())
	})
}

// scriptedReconcile answers Reconcile from a script, one batch per call; then with nothing.
type scriptedReconcile struct {
	answers []reconcileAnswer
}

type reconcileAnswer struct {
	due []delivery.Due
	err error
}

func (s *scriptedReconcile) Reconcile(context.Context, time.Time, time.Duration, int, map[delivery.Channel]time.Time) ([]delivery.Due, int, error) {
	if len(s.answers) == 0 {
		return nil, 0, nil
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a.due, 0, a.err
}

func TestReconcilerPass(t *testing.T) {
	due := func(n int, ch delivery.Channel) []delivery.Due {
		out := make([]delivery.Due, n)
		for i := range out {
			out[i] = delivery.Due{ID: uuid.New(), Channel: ch}
		}
		return out
	}
	ids := func(ds ...delivery.Due) []uuid.UUID {
		var out []uuid.UUID
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out
	}
	full1, full2, rest := due(3, delivery.Email), due(3, delivery.Email), due(1, delivery.SMS)
	mixed := append(due(2, delivery.IOS), delivery.Due{ID: uuid.New(), Channel: delivery.IOS, Held: true})
	email := func(ds []delivery.Due) map[delivery.Channel][]uuid.UUID {
		return map[delivery.Channel][]uuid.UUID{delivery.Email: ids(ds...)}
	}
	sms := map[delivery.Channel][]uuid.UUID{delivery.SMS: ids(rest...)}
	tests := []struct {
		name       string
		answers    []reconcileAnswer
		publishErr error
		want       int
		wantErr    bool
		wantCalls  []map[delivery.Channel][]uuid.UUID
	}{
		{"nothing due", nil, nil, 0, false, nil},
		{"takes batches until one is short", []reconcileAnswer{{due: full1}, {due: full2}, {due: rest}}, nil, 7, false,
			[]map[delivery.Channel][]uuid.UUID{email(full1), email(full2), sms}},
		{"a full last batch costs one empty call", []reconcileAnswer{{due: full1}}, nil, 3, false,
			[]map[delivery.Channel][]uuid.UUID{email(full1)}},
		{"held deliveries are not published", []reconcileAnswer{{due: mixed}}, nil, 2, false,
			[]map[delivery.Channel][]uuid.UUID{{delivery.IOS: ids(mixed[:2]...)}}},
		{"a publish failure does not stop the pass", []reconcileAnswer{{due: full1}, {due: rest}}, errors.New("broker down"),
			4, false, []map[delivery.Channel][]uuid.UUID{email(full1), sms}},
		{"a store failure ends the pass", []reconcileAnswer{{due: full1}, {err: errors.New("db down")}, {due: rest}}, nil,
			3, true, []map[delivery.Channel][]uuid.UUID{email(full1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{err: tt.publishErr}
			metrics := notifier.NewMetrics(prometheus.NewRegistry())
			r := &notifier.Reconciler{Store: &scriptedReconcile{answers: tt.answers}, Publisher: pub,
				Log: slog.New(slog.DiscardHandler), Interval: time.Hour, RepublishAfter: time.Minute, Batch: 3,
				Metrics: metrics}
			began := float64(time.Now().Unix())
			got, err := r.Pass(t.Context())
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("Pass = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
			if at := testutil.ToFloat64(metrics.ReconcilerPassed); at < began {
				t.Errorf("the last pass ended at %v by the metric, before the pass began (%v)", at, began)
			}
			if calls := pub.published(); !reflect.DeepEqual(calls, tt.wantCalls) {
				t.Errorf("published %v, want %v", calls, tt.wantCalls)
			}
		})
	}
}

// stuckReconcile is a store whose every Reconcile waits until its context ends, as one stuck
// on a lock or on a pool with no connection to give; each call is reported on calls.
type stuckReconcile struct {
	calls chan struct{}
}

func (s stuckReconcile) Reconcile(ctx context.Context, _ time.Time, _ time.Duration, _ int, _ map[delivery.Channel]time.Time) ([]delivery.Due, int, error) {
	s.calls <- struct{}{}
	<-ctx.Done()
	return nil, 0, ctx.Err()
}

// TestReconcilerCutsAStuckPass checks that a pass that cannot finish is cut at its deadline,
// so the reconciler goes on to the next pass rather than wait for good.
func TestReconcilerCutsAStuckPass(t *testing.T) {
	store := stuckReconcile{calls: make(chan struct{})}
	r := &notifier.Reconciler{Store: store, Publisher: &fakePublisher{}, Log: slog.New(slog.DiscardHandler),
		Interval: time.Millisecond, PassTimeout: time.Millisecond, RepublishAfter: time.Minute, Batch: 10}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	// The bound only ends a failing test: a stuck pass never reaches a second call.
	bound := time.After(30 * time.Second)
	for pass := 1; pass <= 3; pass++ {
		select {
		case <-store.calls:
		case <-bound:
			t.Fatalf("pass %d never began: the one before it was never cut", pass)
		}
	}
	cancel()
	// Run may be in a pass that is about to report its call: take it, so Run can end.
	for {
		select {
		case <-store.calls:
		case <-done:
			return
		}
	}
}

// deadlineBacklog is a queue with nothing waiting that records the deadline of each read (the
// reconciler reads one channel at a time).
type deadlineBacklog struct {
	deadlines []time.Time
}

func (b *deadlineBacklog) OldestWaiting(ctx context.Context, _ delivery.Channel) (time.Time, bool, error) {
	dl, _ := ctx.Deadline()
	b.deadlines = append(b.deadlines, dl)
	return time.Time{}, false, nil
}

// TestReconcilerBoundsQueueReads checks that each read of a queue's backlog has a deadline of
// its own, well inside the pass's: a JetStream request takes its context's deadline when there
// is one, so a request never answered would otherwise hold the pass to its end.
func TestReconcilerBoundsQueueReads(t *testing.T) {
	queue := &deadlineBacklog{}
	r := &notifier.Reconciler{Store: &scriptedReconcile{}, Publisher: &fakePublisher{}, Queue: queue,
		Log: slog.New(slog.DiscardHandler), Interval: time.Hour, RepublishAfter: time.Minute, Batch: 10}
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	if _, err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if len(queue.deadlines) != len(delivery.Channels) {
		t.Fatalf("%d backlog reads, want one per channel (%d)", len(queue.deadlines), len(delivery.Channels))
	}
	for i, dl := range queue.deadlines {
		if dl.IsZero() || time.Until(dl) > time.Minute {
			t.Errorf("read %d had the deadline %v, want one of its own within a minute", i, dl)
		}
	}
}
