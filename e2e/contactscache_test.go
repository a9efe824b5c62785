package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/contactscache"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// The tests of internal/contactscache, the notifier's and the workers' cache of the contacts
// service: against the real contacts service, in-process on a private PostgreSQL, each change
// made through the service's own API and acknowledged before the lookup that must see it
// begins.

// cacheOn returns a cache of the stack's contacts service, reading it with the notifier's own
// key, and the registry of its metrics.
func cacheOn(t testing.TB, s *stack, opts contactscache.Options) (*contactscache.Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Metrics = reg
	opts.Log = s.log.With("service", "cache")
	c := contactscache.New(dial(t, s.contacts.GRPCAddr(), s.contactsKey), opts)
	t.Cleanup(c.Close)
	return c, reg
}

// cacheMetric returns the value of the metric name (a counter or a gauge) with the label value
// label ("" for any), summed.
func cacheMetric(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || l.GetValue() == label {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
					break
				}
			}
			if len(m.GetLabel()) == 0 {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// waitForSet waits for the cache to load the set of suppressed addresses, which it starts on
// its first lookup. The deadline only bounds a broken run.
func waitForSet(t testing.TB, reg *prometheus.Registry) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); cacheMetric(t, reg, "herald_contacts_cache_set_loaded", "") != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the set of suppressed addresses did not load in 30 s")
		}
	}
}

// sms posts an SMS from number to the contacts service's inbound webhook, signed as Twilio
// signs it: "STOP" suppresses the number, "START" lifts it. It returns once the service has
// acknowledged it.
func sms(t testing.TB, s *stack, number, body string) {
	t.Helper()
	form := url.Values{"From": {number}, "To": {"+14155550199"}, "Body": {body}, "NumMedia": {"0"},
		"MessageSid": {"SM" + strings.ReplaceAll(uuid.NewString(), "-", "")}, "AccountSid": {twilioSID}}
	req, err := http.NewRequest(http.MethodPost, "http://"+s.contacts.HTTPAddr()+"/webhooks/twilio/inbound",
		strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twilioSignature(contactsTwilioToken, contactsPublicURL+"/webhooks/twilio/inbound", form))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s from %s: %s", body, number, res.Status)
	}
}

// lookup resolves one user and some addresses through c, as a read that begins now.
func lookup(t testing.TB, c *contactscache.Cache, id string, targets ...contactscache.Target) (*contactscache.User, []preference.Suppression) {
	t.Helper()
	var ids []string
	if id != "" {
		ids = []string{id}
	}
	users, sups, err := c.Resolve(context.Background(), time.Now(), ids, targets)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		return nil, sups
	}
	return users[0], sups
}

func suppressedAt(sups []preference.Suppression, ch delivery.Channel, address string) bool {
	return slices.ContainsFunc(sups, func(s preference.Suppression) bool { return s.Channel == ch && s.Address == address })
}

// TestContactsCacheSeesEveryAcknowledgedChange: a lookup that begins after the contacts
// service acknowledged an opt-out, a suppression, its lifting, a device registered or removed,
// or the user's deletion, sees it, although the cache held the value from before. It holds in
// each of the cache's modes: with the set of suppressed addresses loaded, without a set (more
// suppressed addresses than it may hold: every address is looked up), and forgetting
// everything at every poll (a feed never read in time: the set is always being reloaded).
func TestContactsCacheSeesEveryAcknowledgedChange(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	sms(t, s, "+14155550170", "STOP") // suppressions that exist before any cache starts
	sms(t, s, "+14155550171", "STOP")
	for _, mode := range []struct {
		name string
		opts contactscache.Options
	}{
		{"set loaded", contactscache.Options{}},
		{"no set", contactscache.Options{MaxSuppressed: 1}},
		{"always stale", contactscache.Options{Stale: time.Nanosecond}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			c, reg := cacheOn(t, s, mode.opts)
			lookup(t, c, "")
			if mode.opts == (contactscache.Options{}) {
				waitForSet(t, reg)
			}
			id := "ana-" + strings.ReplaceAll(mode.name, " ", "-")
			phone := map[string]string{"set loaded": "+14155550101", "no set": "+14155550102", "always stale": "+14155550103"}[mode.name]
			raw := contactscache.Target{Channel: delivery.SMS, Address: strings.Replace(phone, "555501", "555502", 1)}
			if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{
				UserId: id, Email: id + "@example.com", Phone: phone}}); err != nil {
				t.Fatal(err)
			}
			u, sups := lookup(t, c, id, raw)
			if u == nil || u.Phone != phone || u.Settings != nil || len(sups) != 0 {
				t.Fatalf("a new user: %+v, %v", u, sups)
			}
			early := contactscache.Target{Channel: delivery.SMS, Address: "+14155550170"}
			if _, sups := lookup(t, c, "", early); !suppressedAt(sups, delivery.SMS, early.Address) {
				t.Fatalf("a number stopped before the cache started: %v", sups)
			}

			updateSettings(t, s, id, &heraldv1.Settings{GlobalOptOut: true})
			if u, _ := lookup(t, c, id); u == nil || u.Settings == nil || !u.Settings.GlobalOptOut {
				t.Fatalf("after the opt-out: %+v", u)
			}

			sms(t, s, phone, "STOP")
			if _, sups := lookup(t, c, id); !suppressedAt(sups, delivery.SMS, phone) {
				t.Fatalf("after the user's number was stopped: %v", sups)
			}
			sms(t, s, raw.Address, "STOP")
			if _, sups := lookup(t, c, "", raw); !suppressedAt(sups, delivery.SMS, raw.Address) {
				t.Fatalf("after a raw number was stopped: %v", sups)
			}
			sms(t, s, phone, "START")
			if _, sups := lookup(t, c, id); suppressedAt(sups, delivery.SMS, phone) {
				t.Fatalf("after the user's number was started again: %v", sups)
			}

			token := strings.Repeat("c", 62) + fmt.Sprintf("%02d", len(mode.name))
			if _, err := s.people.RegisterDevice(ctx, &heraldv1.RegisterDeviceRequest{Device: &heraldv1.Device{
				UserId: id, Platform: heraldv1.Platform_PLATFORM_IOS, Token: token}}); err != nil {
				t.Fatal(err)
			}
			if u, _ := lookup(t, c, id); u == nil || !slices.Equal(u.IOSTokens, []string{token}) {
				t.Fatalf("after a device was registered: %+v", u)
			}
			if _, err := s.people.UnregisterDevice(ctx, &heraldv1.UnregisterDeviceRequest{
				Platform: heraldv1.Platform_PLATFORM_IOS, Token: token}); err != nil {
				t.Fatal(err)
			}
			if u, _ := lookup(t, c, id); u == nil || len(u.IOSTokens) != 0 {
				t.Fatalf("after the device was removed: %+v", u)
			}

			if _, err := s.people.DeleteUser(ctx, &heraldv1.DeleteUserRequest{UserId: id}); err != nil {
				t.Fatal(err)
			}
			if u, _ := lookup(t, c, id); u != nil {
				t.Fatalf("after the user was deleted: %+v", u)
			}
			if loaded := cacheMetric(t, reg, "herald_contacts_cache_set_loaded", ""); mode.name != "always stale" &&
				loaded != map[string]float64{"set loaded": 1, "no set": 0}[mode.name] {
				t.Errorf("set loaded: %v", loaded)
			}
		})
	}
}

// TestContactsCacheUnderConcurrentWrites races lookups against writes: numbers stopped one
// after another, and a user's settings rewritten with increasing quiet hours. Whatever was
// acknowledged before a lookup began, the lookup sees, however the polls and the writes
// interleave. The cache starts with the writes, while 30,000 suppressed numbers that sort after
// the stopped ones take several pages to load: a STOP committed after the load read its page
// must come from the feed, and the lookups after the load, answered by the set, show it did.
func TestContactsCacheUnderConcurrentWrites(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `INSERT INTO contacts.suppressions (channel, address, reason)
		SELECT 'sms', '+1999' || lpad(i::text, 7, '0'), 'stop' FROM generate_series(1, 30000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.people.UpsertUser(ctx, &heraldv1.UpsertUserRequest{User: &heraldv1.User{UserId: "w", Email: "w@example.com"}}); err != nil {
		t.Fatal(err)
	}
	const rounds = 40
	number := func(i int) string { return fmt.Sprintf("+1415555%04d", 3000+i) }
	var stopped, settled atomic.Int64 // the last round acknowledged, plus one
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := range rounds {
			sms(t, s, number(i), "STOP")
			stopped.Store(int64(i) + 1)
		}
	})
	writers.Go(func() {
		for i := range rounds {
			if _, err := s.people.UpdateSettings(ctx, &heraldv1.UpdateSettingsRequest{UserId: "w", Settings: &heraldv1.Settings{
				QuietHours: &heraldv1.QuietHours{Start: "22:00", End: clock(i)}}}); err != nil {
				t.Error(err)
				return
			}
			settled.Store(int64(i) + 1)
		}
	})
	c, reg := cacheOn(t, s, contactscache.Options{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for stopped.Load() < rounds || settled.Load() < rounds {
				n, m := int(stopped.Load()), int(settled.Load())
				var targets []contactscache.Target
				for i := max(n-3, 0); i < min(n+3, rounds); i++ { // the last stopped, and some not yet
					targets = append(targets, contactscache.Target{Channel: delivery.SMS, Address: number(i)})
				}
				users, sups, err := c.Resolve(ctx, time.Now(), []string{"w"}, targets)
				if err != nil {
					t.Error(err)
					return
				}
				for i := max(n-3, 0); i < n; i++ {
					if !suppressedAt(sups, delivery.SMS, number(i)) {
						t.Errorf("%s was stopped before the lookup began, and is not suppressed", number(i))
						return
					}
				}
				if st := users[0].Settings; m > 0 && (st == nil || st.QuietHours == nil || st.QuietHours.End < clock(m-1)) {
					t.Errorf("settings %+v after round %d was acknowledged", st, m-1)
					return
				}
			}
		})
	}
	writers.Wait()
	readers.Wait()
	waitForSet(t, reg)
	for i := range rounds {
		if _, sups := lookup(t, c, "", contactscache.Target{Channel: delivery.SMS, Address: number(i)}); !suppressedAt(sups, delivery.SMS, number(i)) {
			t.Errorf("with the set loaded, %s, stopped before, is not suppressed", number(i))
		}
	}
	if n := cacheMetric(t, reg, "herald_contacts_cache_suppressed_addresses", ""); n < 30000+rounds {
		t.Errorf("the set holds %v addresses, want at least %d", n, 30000+rounds)
	}
}

// TestContactsCacheLoadMissesNothing stops a number while the cache loads the suppressed
// addresses, between two pages, where the number sorts into the page already read, and has a
// lookup's poll of the feed report it before the load ends: only that poll told the cache, and
// the set must hold the number once loaded.
func TestContactsCacheLoadMissesNothing(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `INSERT INTO contacts.suppressions (channel, address, reason)
		SELECT 'sms', '+1999' || lpad(i::text, 7, '0'), 'stop' FROM generate_series(1, 15000) i`); err != nil {
		t.Fatal(err)
	}
	const late = "+14155553999" // sorts before every number on the first page
	var once sync.Once
	var c *contactscache.Cache
	ready := make(chan struct{})
	betweenPages := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*heraldv1.ListSuppressedAddressesRequest); ok && r.PageToken != "" {
			once.Do(func() {
				sms(t, s, late, "STOP")
				<-ready
				if _, _, err := c.Resolve(ctx, time.Now(), nil, nil); err != nil { // a poll while loading
					t.Error(err)
				}
			})
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	conn, err := grpc.NewClient(s.contacts.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		appkey.Credentials(s.contactsKey), grpc.WithUnaryInterceptor(betweenPages))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	reg := prometheus.NewRegistry()
	c = contactscache.New(conn, contactscache.Options{Metrics: reg})
	close(ready)
	t.Cleanup(c.Close)
	lookup(t, c, "")
	waitForSet(t, reg)
	before := cacheMetric(t, reg, "herald_contacts_cache_calls_total", "ResolveRecipients")
	if _, sups := lookup(t, c, "", contactscache.Target{Channel: delivery.SMS, Address: late}); !suppressedAt(sups, delivery.SMS, late) {
		t.Fatalf("a number stopped during the load is not suppressed: %v", sups)
	}
	if cacheMetric(t, reg, "herald_contacts_cache_calls_total", "ResolveRecipients") == before {
		t.Fatal("the set did not count the number as suppressed: the lookup made no call")
	}
}

// clock returns round i as a distinct, increasing "HH:MM".
func clock(i int) string { return fmt.Sprintf("%02d:%02d", i/60, i%60) }

// TestContactsCacheAnswersWithoutCalls is the point of the cache: once the set is loaded, a
// known user and an address never suppressed are answered with no ResolveRecipients call, and
// so are the notifier's Sends to them.
func TestContactsCacheAnswersWithoutCalls(t *testing.T) {
	s := startStack(t, stackOptions{noWorkers: true})
	c, reg := cacheOn(t, s, contactscache.Options{})
	lookup(t, c, "")
	waitForSet(t, reg)
	reachableUser(t, s, "kim")
	lookup(t, c, "kim") // the first lookup of a user calls
	calls := cacheMetric(t, reg, "herald_contacts_cache_calls_total", "ResolveRecipients")
	for i := range 50 {
		raw := contactscache.Target{Channel: delivery.Email, Address: fmt.Sprintf("never%d@example.com", i)}
		if u, sups := lookup(t, c, "kim", raw); u == nil || len(sups) != 0 {
			t.Fatalf("lookup %d: %+v, %v", i, u, sups)
		}
	}
	if got := cacheMetric(t, reg, "herald_contacts_cache_calls_total", "ResolveRecipients"); got != calls {
		t.Errorf("%v ResolveRecipients calls for lookups the cache holds", got-calls)
	}
	if hits := cacheMetric(t, reg, "herald_contacts_cache_hits_total", "set"); hits < 50 {
		t.Errorf("%v lookups answered by the set, want at least 50", hits)
	}

	// The notifier's Sends go through the same cache.
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.notify.Send(ctx, userSend("kim", "account")); err != nil {
			t.Fatal(err)
		}
		req := userSend("kim", "account")
		req.Recipient = &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{
			Email: fmt.Sprintf("fresh%d@example.com", i)}}}
		if _, err := s.notify.Send(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
}
