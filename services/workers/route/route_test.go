package route_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
	"github.com/heraldhq/herald/services/workers/route"
)

// fake is a provider that answers what its answer function says and counts what it got.
type fake struct {
	name   string
	answer func(m *workers.Message) error
	calls  atomic.Int64
	closed atomic.Bool
}

var _ workers.Sender = (*fake)(nil)

func (f *fake) Provider() string { return f.name }

func (f *fake) Send(_ context.Context, m *workers.Message) (workers.Result, error) {
	if f.closed.Load() {
		panic("send on a closed sender")
	}
	f.calls.Add(1)
	if f.answer != nil {
		if err := f.answer(m); err != nil {
			return workers.Result{}, err
		}
	}
	return workers.Result{ProviderMessageID: f.name + "-id"}, nil
}

func (f *fake) Close() { f.closed.Store(true) }

// clock is a time that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)} }

func msg() *workers.Message {
	return &workers.Message{DeliveryID: uuid.New(), Channel: delivery.Email, To: "someone@example.com"}
}

var (
	errRefused = workers.Refused(0, errors.New("503 Service Unavailable"))
	errTimeout = workers.Transient(0, context.DeadlineExceeded)
	errBounce  = workers.Permanent("rejected", errors.New("400 Bad Request"))
)

func TestSelection(t *testing.T) {
	t.Parallel()
	shopIOS, newsIOS, shopApp, dflt := &fake{name: "apns"}, &fake{name: "apns"}, &fake{name: "apns"}, &fake{name: "apns"}
	r, err := route.New(route.Options{Channel: delivery.IOS}, []route.Route{
		{Name: "shop-device", Provider: "apns", Sender: shopIOS, DeviceApps: []string{"com.example.shop"}},
		{Name: "news-device", Provider: "apns", Sender: newsIOS, DeviceApps: []string{"com.example.news"}},
		{Name: "shop-app", Provider: "apns", Sender: shopApp, Apps: []string{"shop"}},
		{Name: "default", Provider: "apns", Sender: dflt},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, app, deviceApp string
		want                 string
	}{
		{"device app decides", "shop", "com.example.news", "apns/news-device"},
		{"device app alone", "", "com.example.shop", "apns/shop-device"},
		{"calling app when the device app is unknown", "shop", "", "apns/shop-app"},
		{"calling app when no route serves the device app", "shop", "com.example.other", "apns/shop-app"},
		{"default otherwise", "other", "com.example.other", "apns/default"},
		{"default for a raw token", "", "", "apns/default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := msg()
			m.App, m.DeviceApp = tc.app, tc.deviceApp
			res, err := r.Send(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			if res.Provider != tc.want {
				t.Errorf("sent through %s, want %s", res.Provider, tc.want)
			}
		})
	}
}

func TestNoCredential(t *testing.T) {
	t.Parallel()
	r, err := route.New(route.Options{Channel: delivery.IOS}, []route.Route{
		{Name: "shop", Provider: "apns", Sender: &fake{name: "apns"}, DeviceApps: []string{"com.example.shop"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Send(context.Background(), msg())
	o, reason, _ := workers.Classify(err)
	if o != workers.OutcomeFailed || reason != "no_credential" {
		t.Errorf("a message no route serves: %v (%v, %q), want failed no_credential", err, o, reason)
	}
}

func TestFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		primary     error
		want        string // the route that answered
		wantErr     error
		backupCalls int64
	}{
		{"accepted", nil, "sendgrid/primary", nil, 0},
		{"refused: the backup takes it", errRefused, "smtp/backup", nil, 1},
		{"configuration error: the backup takes it", workers.Misconfigured(errors.New("401")), "smtp/backup", nil, 1},
		{"timeout: no failover, it may have gone", errTimeout, "sendgrid/primary", errTimeout, 0},
		{"permanent: no failover", errBounce, "sendgrid/primary", errBounce, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			primary := &fake{name: "sendgrid", answer: func(*workers.Message) error { return tc.primary }}
			backup := &fake{name: "smtp"}
			r, err := route.New(route.Options{Channel: delivery.Email}, []route.Route{
				{Name: "primary", Provider: "sendgrid", Sender: primary},
				{Name: "backup", Provider: "smtp", Sender: backup},
			})
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Send(context.Background(), msg())
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if res.Provider != tc.want {
				t.Errorf("answered by %s, want %s", res.Provider, tc.want)
			}
			if n := backup.calls.Load(); n != tc.backupCalls {
				t.Errorf("backup called %d times, want %d", n, tc.backupCalls)
			}
		})
	}
}

func TestEveryRouteRefused(t *testing.T) {
	t.Parallel()
	r, err := route.New(route.Options{Channel: delivery.Email}, []route.Route{
		{Name: "a", Provider: "sendgrid", Sender: &fake{answer: func(*workers.Message) error { return errRefused }}},
		{Name: "b", Provider: "smtp", Sender: &fake{answer: func(*workers.Message) error { return errRefused }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Send(context.Background(), msg())
	if o, _, _ := workers.Classify(err); o != workers.OutcomeRetry || !errors.Is(err, errRefused) {
		t.Errorf("err = %v, want the last refusal, retried", err)
	}
	if res.Provider != "smtp/b" {
		t.Errorf("answered by %s, want smtp/b", res.Provider)
	}
}

// TestBreakerPerRoute: a refusing primary opens its own circuit and is passed over without a
// call; once its cooldown is over one send probes it, and when it has recovered the channel goes
// back to it.
func TestBreakerPerRoute(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var down atomic.Bool
	down.Store(true)
	primary := &fake{answer: func(*workers.Message) error {
		if down.Load() {
			return errRefused
		}
		return nil
	}}
	backup := &fake{}
	r, err := route.New(route.Options{Channel: delivery.Email, Now: clk.now}, []route.Route{
		{Name: "primary", Provider: "sendgrid", Sender: primary, BreakerFailures: 3, BreakerCooldown: time.Minute},
		{Name: "backup", Provider: "smtp", Sender: backup},
	})
	if err != nil {
		t.Fatal(err)
	}
	send := func() string {
		t.Helper()
		res, err := r.Send(context.Background(), msg())
		if err != nil {
			t.Fatal(err)
		}
		return res.Provider
	}
	for range 10 {
		if got := send(); got != "smtp/backup" {
			t.Fatalf("sent through %s while the primary is down", got)
		}
	}
	if n := primary.calls.Load(); n != 3 {
		t.Errorf("the primary was called %d times, want 3 (then its circuit opened)", n)
	}
	if got := r.Provider(); got != "smtp/backup" {
		t.Errorf("active provider %s, want smtp/backup", got)
	}
	if st := r.Routes()[0].Circuit; st != "open" {
		t.Errorf("primary circuit %s, want open", st)
	}

	clk.add(time.Minute) // the probe fails: open for another cooldown
	if got := send(); got != "smtp/backup" {
		t.Fatalf("sent through %s", got)
	}
	if n := primary.calls.Load(); n != 4 {
		t.Errorf("the primary was called %d times, want 4 (one probe)", n)
	}
	send()
	if n := primary.calls.Load(); n != 4 {
		t.Errorf("the primary was called %d times after a failed probe, want 4", n)
	}

	down.Store(false)
	clk.add(time.Minute)
	if got := send(); got != "sendgrid/primary" {
		t.Errorf("the probe after recovery went through %s, want sendgrid/primary", got)
	}
	if got := send(); got != "sendgrid/primary" {
		t.Errorf("after recovery sent through %s, want sendgrid/primary", got)
	}
	if got := r.Provider(); got != "sendgrid/primary" {
		t.Errorf("active provider %s, want sendgrid/primary", got)
	}
}

// TestRateBudget: past a route's budget, sends go to the next route; with every budget spent,
// the delivery goes back unsent until the soonest budget refills.
func TestRateBudget(t *testing.T) {
	t.Parallel()
	clk := newClock()
	a, b := &fake{}, &fake{}
	r, err := route.New(route.Options{Channel: delivery.SMS, Now: clk.now}, []route.Route{
		{Name: "a", Provider: "twilio", Sender: a, Rate: 1, Burst: 2},
		{Name: "b", Provider: "twilio", Sender: b, Rate: 0.5, Burst: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		res, err := r.Send(context.Background(), msg())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Provider)
	}
	if want := []string{"twilio/a", "twilio/a", "twilio/b"}; !equal(got, want) {
		t.Errorf("sent through %v, want %v", got, want)
	}
	_, err = r.Send(context.Background(), msg())
	var ns *workers.NotSentError
	if !errors.As(err, &ns) || ns.Reason != "rate_limited" || ns.RetryAfter != time.Second {
		t.Fatalf("with every budget spent: %v, want not sent, rate_limited, back in 1s", err)
	}
	clk.add(time.Second)
	if res, err := r.Send(context.Background(), msg()); err != nil || res.Provider != "twilio/a" {
		t.Errorf("a second later: %v %v, want twilio/a", res.Provider, err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSwapInFlight swaps the routes while sends are blocked in the old ones: none is lost, the
// old senders are closed only after they return, and sends that begin after the swap use the
// new routes.
func TestSwapInFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var entered sync.WaitGroup
	const inFlight = 8
	entered.Add(inFlight)
	old := &fake{answer: func(*workers.Message) error {
		entered.Done()
		<-release
		return nil
	}}
	r, err := route.New(route.Options{Channel: delivery.Email}, []route.Route{{Name: "old", Provider: "smtp", Sender: old}})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan string, inFlight)
	for range inFlight {
		go func() {
			res, err := r.Send(context.Background(), msg())
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- res.Provider
		}()
	}
	entered.Wait()

	next := &fake{}
	swapped := make(chan error, 1)
	go func() { swapped <- r.Swap([]route.Route{{Name: "new", Provider: "sendgrid", Sender: next}}) }()
	for r.Provider() != "sendgrid/new" { // the swap has made the new routes current
		runtime.Gosched()
	}
	// Sends that begin now go to the new routes, while the old ones are still busy.
	for range 5 {
		res, err := r.Send(context.Background(), msg())
		if err != nil {
			t.Fatal(err)
		}
		if res.Provider != "sendgrid/new" {
			t.Fatalf("a send after the swap went through %s", res.Provider)
		}
	}
	select {
	case err := <-swapped:
		t.Fatalf("Swap returned (%v) while sends were in flight on the old routes", err)
	default:
	}
	if old.closed.Load() {
		t.Fatal("the old sender was closed while sends were in flight")
	}
	close(release)
	for range inFlight {
		if got := <-results; got != "smtp/old" {
			t.Errorf("an in-flight send ended with %s, want smtp/old", got)
		}
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	if !old.closed.Load() {
		t.Error("the old sender was not closed after the swap")
	}
	if n := old.calls.Load(); n != inFlight {
		t.Errorf("old sender called %d times, want %d", n, inFlight)
	}
	if err := r.Swap(nil); err == nil {
		t.Error("Swap to no routes was accepted")
	}
	if res, err := r.Send(context.Background(), msg()); err != nil || res.Provider != "sendgrid/new" {
		t.Errorf("after a refused swap: %s %v, want sendgrid/new", res.Provider, err)
	}
}
