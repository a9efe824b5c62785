// Package route sends a channel's deliveries through several credentials: providers in failover
// order (SendGrid, then SMTP), and credentials chosen per calling app and per device app (APNs
// bundle ids, FCM projects, Twilio senders, email domains). A Router is the channel's
// workers.Sender. Each credential has its own circuit breaker, rate budget and metrics labels;
// the router passes over a credential whose circuit is open or whose budget is spent, and moves
// on to the next when one refuses a message in a way that proves it did not take it
// (workers.NotAccepted), so a failover never sends a message twice. An ambiguous answer (a
// timeout) is the attempt's answer, retried later as any other.
//
// The set of credentials is read from a providers file (Parse) and can be swapped while sends
// are in flight (Router.Swap): those finish on the old set, which is closed after them.
package route

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// Route is one credential of a channel, ready to send.
type Route struct {
	// Name is the credential's name (the providers file's), Provider its provider's.
	Name     string
	Provider string
	Sender   workers.Sender
	// Apps and DeviceApps choose the route (see Entry); neither: a default route.
	Apps       []string
	DeviceApps []string
	// Rate (sends a second, 0: none) and Burst are the route's budget.
	Rate  float64
	Burst int
	// BreakerFailures (default 5) failures in a row open the route's circuit for
	// BreakerCooldown (default 30 s).
	BreakerFailures int
	BreakerCooldown time.Duration
}

// Label is how attempts name the route: provider/name.
func (r *Route) Label() string { return r.Provider + "/" + r.Name }

// Options configure a Router.
type Options struct {
	Channel delivery.Channel
	Metrics *Metrics
	Log     *slog.Logger
	// Now is the clock of the circuits and budgets; nil: time.Now.
	Now func() time.Time
}

// Router is a channel's workers.Sender over its routes. It is safe for concurrent use.
type Router struct {
	opt    Options
	cur    atomic.Pointer[set]
	active atomic.Pointer[string]
	swaps  sync.Mutex
}

var _ workers.Sender = (*Router)(nil)

// New returns a router over routes, in failover order. It fails on a route list no message
// could go through (empty, or names repeated).
func New(opt Options, routes []Route) (*Router, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	r := &Router{opt: opt}
	s, err := r.newSet(routes)
	if err != nil {
		return nil, err
	}
	r.cur.Store(s)
	r.setActive(s, s.first)
	return r, nil
}

// set is one generation of a channel's routes. Sends hold its read lock while they use it; a
// swap takes the write lock once it is no longer current, so it waits for the sends in flight
// and then closes its senders.
type set struct {
	routes []*route
	first  *route // the route a message with no app of its own goes to first
	// byDeviceApp and byApp list, per app, the routes that serve it, in failover order;
	// defaults are the routes with no app rule.
	byDeviceApp map[string][]*route
	byApp       map[string][]*route
	defaults    []*route

	mu     sync.RWMutex
	closed bool
}

type route struct {
	Route
	label   string
	breaker *breaker
	lim     *rate.Limiter // nil: no budget
}

func (r *Router) newSet(routes []Route) (*set, error) {
	if len(routes) == 0 {
		return nil, fmt.Errorf("channel %s: no route", r.opt.Channel)
	}
	s := &set{byDeviceApp: map[string][]*route{}, byApp: map[string][]*route{}}
	seen := map[string]bool{}
	for _, rt := range routes {
		if seen[rt.Name] {
			return nil, fmt.Errorf("channel %s: route %s given twice", r.opt.Channel, rt.Name)
		}
		seen[rt.Name] = true
		x := &route{Route: rt, label: rt.Label()}
		failures, cooldown := rt.BreakerFailures, rt.BreakerCooldown
		if failures <= 0 {
			failures = 5
		}
		if cooldown <= 0 {
			cooldown = 30 * time.Second
		}
		x.breaker = &breaker{failures: failures, cooldown: cooldown, onChange: r.circuitChanged(x)}
		if rt.Rate > 0 {
			x.lim = rate.NewLimiter(rate.Limit(rt.Rate), max(rt.Burst, 1))
		}
		if m := r.opt.Metrics; m != nil {
			m.Circuit.WithLabelValues(r.labels(x)...).Set(0)
		}
		s.routes = append(s.routes, x)
		for _, a := range rt.DeviceApps {
			s.byDeviceApp[a] = append(s.byDeviceApp[a], x)
		}
		for _, a := range rt.Apps {
			s.byApp[a] = append(s.byApp[a], x)
		}
		if len(rt.Apps) == 0 && len(rt.DeviceApps) == 0 {
			s.defaults = append(s.defaults, x)
		}
	}
	s.first = s.routes[0]
	if len(s.defaults) > 0 {
		s.first = s.defaults[0]
	}
	return s, nil
}

func (r *Router) labels(x *route) []string {
	return []string{string(r.opt.Channel), x.Provider, x.Name}
}

func (r *Router) circuitChanged(x *route) func(state) {
	return func(st state) {
		if m := r.opt.Metrics; m != nil {
			m.Circuit.WithLabelValues(r.labels(x)...).Set(float64(st))
		}
		level := slog.LevelInfo
		if st == open {
			level = slog.LevelWarn // the channel's deliveries go to its next credential
		}
		r.opt.Log.Log(context.Background(), level, "route circuit "+st.String(), "channel", r.opt.Channel,
			"provider", x.Provider, "credential", x.Name)
	}
}

// candidates returns the routes that may carry m, in order: those that serve its device's app,
// else those that serve its calling app, else the defaults. A device's app is the stronger
// fact: an APNs token works only with its own bundle's topic.
func (s *set) candidates(m *workers.Message) []*route {
	if rs := s.byDeviceApp[m.DeviceApp]; m.DeviceApp != "" && len(rs) > 0 {
		return rs
	}
	if rs := s.byApp[m.App]; m.App != "" && len(rs) > 0 {
		return rs
	}
	return s.defaults
}

// acquire returns the current set, read-locked; the caller unlocks it.
func (r *Router) acquire() *set {
	for {
		s := r.cur.Load()
		s.mu.RLock()
		if !s.closed {
			return s
		}
		s.mu.RUnlock() // swapped out while this waited: the next load finds the new one
	}
}

// Provider names the route that last took a message (at first, the first default route), so
// the status page shows the channel's active provider.
func (r *Router) Provider() string { return *r.active.Load() }

func (r *Router) setActive(s *set, x *route) {
	if r.cur.Load() != s {
		return // a send finishing on routes swapped out
	}
	if old := r.active.Swap(&x.label); old != nil && *old == x.label {
		return
	}
	if m := r.opt.Metrics; m != nil {
		for _, y := range s.routes {
			v := 0.0
			if y == x {
				v = 1
			}
			m.Active.WithLabelValues(r.labels(y)...).Set(v)
		}
	}
}

// Send sends m through the first of its routes that takes it. A route whose circuit is open or
// whose budget is spent is passed over; a route that refuses m in a way that proves it did not
// take it (workers.NotAccepted) passes it on to the next; any other answer (sent, a permanent
// refusal, a timeout) is the answer. When every route refused, the last refusal is the answer;
// when none could be called, a *workers.NotSentError gives the delivery back. A message no
// route serves fails for good with "no_credential". The result names the route that answered.
func (r *Router) Send(ctx context.Context, m *workers.Message) (workers.Result, error) {
	s := r.acquire()
	defer s.mu.RUnlock()
	rs := s.candidates(m)
	if len(rs) == 0 {
		return workers.Result{}, workers.Permanent("no_credential",
			fmt.Errorf("channel %s: no credential serves app %q, device app %q", r.opt.Channel, m.App, m.DeviceApp))
	}
	var last error
	var lastRoute *route
	var held *workers.NotSentError
	for i, x := range rs {
		if i > 0 && r.opt.Metrics != nil {
			r.opt.Metrics.Failovers.WithLabelValues(r.labels(rs[i-1])...).Inc()
		}
		now := r.opt.Now()
		ok, probe := x.breaker.allow(now)
		if !ok {
			held = r.hold(held, x, "circuit_open", max(x.breaker.heldFor(now), time.Second))
			continue
		}
		if x.lim != nil {
			res := x.lim.ReserveN(now, 1)
			if wait := res.DelayFrom(now); wait > 0 {
				res.CancelAt(now)
				x.breaker.cancel(probe)
				held = r.hold(held, x, "rate_limited", wait)
				continue
			}
		}
		res, err := x.Sender.Send(ctx, m)
		x.breaker.report(r.opt.Now(), err, probe)
		res.Provider = x.label
		if err == nil {
			r.count(x, "accepted")
			r.setActive(s, x)
			return res, nil
		}
		if !workers.NotAccepted(err) {
			r.count(x, "failed")
			return res, err
		}
		r.count(x, "refused")
		last, lastRoute = err, x
		if i < len(rs)-1 {
			r.opt.Log.Info("route refused; failing over", "channel", r.opt.Channel, "delivery_id", m.DeliveryID,
				"from", x.label, "to", rs[i+1].label, "err", err)
		}
	}
	if last != nil {
		return workers.Result{Provider: lastRoute.label}, last
	}
	return workers.Result{}, held
}

// hold counts a route passed over, and keeps the shortest wait for the delivery's return.
func (r *Router) hold(held *workers.NotSentError, x *route, reason string, wait time.Duration) *workers.NotSentError {
	if m := r.opt.Metrics; m != nil {
		m.Held.WithLabelValues(append(r.labels(x), reason)...).Inc()
	}
	if held == nil || wait < held.RetryAfter {
		return &workers.NotSentError{Reason: reason, RetryAfter: wait}
	}
	return held
}

func (r *Router) count(x *route, result string) {
	if m := r.opt.Metrics; m != nil {
		m.Calls.WithLabelValues(append(r.labels(x), result)...).Inc()
	}
}

// Swap replaces the routes. Sends that began before it finish on the old routes; Swap returns
// once they have, after closing the old routes' senders that no new route shares. A route
// list New would refuse is refused, and the old routes stay.
func (r *Router) Swap(routes []Route) error {
	r.swaps.Lock()
	defer r.swaps.Unlock()
	s, err := r.newSet(routes)
	if err != nil {
		return err
	}
	old := r.cur.Swap(s)
	r.setActive(s, s.first)
	old.mu.Lock()
	old.closed = true
	old.mu.Unlock()
	if m := r.opt.Metrics; m != nil {
		for _, x := range old.routes {
			if !slices.ContainsFunc(s.routes, func(y *route) bool { return y.Name == x.Name && y.Provider == x.Provider }) {
				m.Circuit.DeleteLabelValues(r.labels(x)...)
				m.Active.DeleteLabelValues(r.labels(x)...)
			}
		}
	}
	closeSenders(old, s)
	return nil
}

// Close closes the senders of the current routes; the router must not be used after.
func (r *Router) Close() {
	r.swaps.Lock()
	defer r.swaps.Unlock()
	s := r.cur.Load()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	closeSenders(s, nil)
}

// closeSenders closes the senders of old that keep has none of: idle provider connections
// (SMTP sessions say QUIT).
func closeSenders(old, keep *set) {
	for _, x := range old.routes {
		if keep != nil && slices.ContainsFunc(keep.routes, func(y *route) bool { return y.Sender == x.Sender }) {
			continue
		}
		if c, ok := x.Sender.(interface{ Close() }); ok {
			c.Close()
		}
	}
}

// Routes describes the current routes, in order, for the status report.
func (r *Router) Routes() []Status {
	s := r.cur.Load()
	active := r.Provider()
	out := make([]Status, len(s.routes))
	for i, x := range s.routes {
		out[i] = Status{Label: x.label, Circuit: x.breaker.state().String(), Active: x.label == active}
	}
	return out
}

// Status is one route as the status page shows it.
type Status struct {
	Label   string
	Circuit string
	Active  bool
}
