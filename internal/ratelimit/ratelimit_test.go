package ratelimit_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/natstest"
	"github.com/heraldhq/herald/internal/ratelimit"
)

// waitLimit bounds waits for the server to do something on its own: generous, because a slow
// machine must not fail a test, and only reached when something is broken.
const waitLimit = 30 * time.Second

// connect opens a connection of its own to s, as a separate replica would.
func connect(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	return natstest.Connect(t, s.ClientURL())
}

// newLimiter returns a Limiter on s over a connection of its own. Tests that are not about
// time-outs give the store far longer than the default, so a slow machine cannot fail them.
func newLimiter(t testing.TB, s *server.Server, cfg ratelimit.Config) *ratelimit.Limiter {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = waitLimit
	}
	l, err := ratelimit.New(context.Background(), connect(t, s), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func take(t *testing.T, l *ratelimit.Limiter, c ratelimit.Cap) bool {
	t.Helper()
	got, err := l.Take(context.Background(), []ratelimit.Cap{c})
	if err != nil {
		t.Fatal(err)
	}
	return got[0]
}

func TestNewCreatesOrUpdatesTheBucket(t *testing.T) {
	s := natstest.Start(t)
	ctx := context.Background()
	js := connect(t, s)
	for range 2 { // every replica calls New at start-up
		if _, err := ratelimit.New(ctx, js, ratelimit.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, ratelimit.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.TTL() != ratelimit.DefaultMaxWindow+time.Minute || st.LimitMarkerTTL() <= 0 {
		t.Errorf("bucket: history %d, ttl %v, limit marker ttl %v", st.History(), st.TTL(), st.LimitMarkerTTL())
	}

	if _, err := ratelimit.New(ctx, js, ratelimit.Config{MaxWindow: 48 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if st, err = kv.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 48*time.Hour+time.Minute {
		t.Errorf("bucket ttl after update = %v", st.TTL())
	}
}

func TestCapKey(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
	long := strings.Repeat("é", 64) // 128 bytes of UTF-8
	tests := []struct {
		name                    string
		user, category, channel string
		want                    string // "" when only validity and distinctness matter
	}{
		{"plain", "u1", "marketing", "email", ""},
		{"all channels", "u1", "marketing", "", ""},
		{"dot in category", "u1", "a.b", "email", ""},
		{"equals in category", "u1", "a=2Eb", "email", ""},
		{"unicode user", long, "marketing", "email", ""},
		{"unicode category", "u1", "promoções", "sms", ""},
		{"empty everything", "", "", "", ""},
		{"layout", "u1", "a b", "ios", "cap.a=20b.ios."},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := ratelimit.CapKey(tc.user, tc.category, tc.channel)
			if !valid.MatchString(k) || strings.Contains(k, "..") {
				t.Errorf("CapKey = %q: not a valid KV key", k)
			}
			if tc.want != "" && !strings.HasPrefix(k, tc.want) {
				t.Errorf("CapKey = %q, want prefix %q", k, tc.want)
			}
			if user := k[strings.LastIndexByte(k, '.')+1:]; len(user) != 24 {
				t.Errorf("user part %q: want 24 characters", user)
			}
			if other, dup := seen[k]; dup {
				t.Errorf("CapKey = %q, same as case %q", k, other)
			}
			seen[k] = tc.name
		})
	}
}

func TestTakeThreePerDay(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	key := ratelimit.CapKey("user-1", "marketing", "")
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var got []bool
	for i := range 4 {
		got = append(got, take(t, l, ratelimit.Cap{Key: key, Limit: 3, Window: 24 * time.Hour, At: at.Add(time.Duration(i) * time.Hour)}))
	}
	if want := []bool{true, true, true, false}; !slices.Equal(got, want) {
		t.Errorf("takes = %v, want %v", got, want)
	}
}

func TestTakeWindowSlides(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	key := ratelimit.CapKey("user-1", "marketing", "email")
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	steps := []struct {
		at   time.Duration // after t0
		want bool
	}{
		{0, true},
		{time.Hour, true},
		{2 * time.Hour, true},
		{3 * time.Hour, false},
		{day - time.Millisecond, false}, // t0 is still inside (at-24h, at]
		{day, true},                     // t0 has just left the window
		{day + time.Millisecond, false}, // 1h, 2h and 24h are inside
		{day + time.Hour, true},         // 1h has left
		{day + 2*time.Hour + time.Minute, true},
		{day + 2*time.Hour + 2*time.Minute, false},
		{3 * day, true}, // everything has left
	}
	for _, st := range steps {
		if got := take(t, l, ratelimit.Cap{Key: key, Limit: 3, Window: day, At: t0.Add(st.at)}); got != st.want {
			t.Errorf("take at t0+%v = %v, want %v", st.at, got, st.want)
		}
	}
}

func TestTakeSeveralChecksAreIndependent(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	capped := ratelimit.Cap{Key: ratelimit.CapKey("alice", "marketing", "email"), Limit: 1, Window: day, At: at}
	if !take(t, l, capped) {
		t.Fatal("first take refused")
	}
	capped.At = at.Add(time.Minute)
	checks := []ratelimit.Cap{
		capped, // alice's email cap is used up
		{Key: ratelimit.CapKey("bob", "marketing", "email"), Limit: 1, Window: day, At: at},
		{Key: ratelimit.CapKey("alice", "marketing", "sms"), Limit: 1, Window: day, At: at},
		{Key: ratelimit.CapKey("alice", "news", "email"), Limit: 1, Window: day, At: at},
		{Key: ratelimit.CapKey("alice", "marketing", ""), Limit: 1, Window: day, At: at},
		// The same key with another window keeps a log of its own.
		{Key: ratelimit.CapKey("alice", "marketing", "email"), Limit: 1, Window: time.Hour, At: at},
		{Key: ratelimit.CapKey("carol", "marketing", "email"), Limit: 0, Window: day, At: at},
	}
	got, err := l.Take(context.Background(), checks)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, true, true, true, true, true, false}; !slices.Equal(got, want) {
		t.Errorf("takes = %v, want %v", got, want)
	}
}

func TestTakeInvalid(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{MaxWindow: 48 * time.Hour})
	key := ratelimit.CapKey("u", "c", "")
	for name, c := range map[string]ratelimit.Cap{
		"window too long": {Key: key, Limit: 1, Window: 49 * time.Hour},
		"no window":       {Key: key, Limit: 1},
		"limit too high":  {Key: key, Limit: ratelimit.MaxLimit + 1, Window: time.Hour},
		"bad key":         {Key: "cap.a b", Limit: 1, Window: time.Hour},
	} {
		if _, err := l.Take(context.Background(), []ratelimit.Cap{c}); !errors.Is(err, ratelimit.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// Two replicas racing on one key never record more than Limit events in a window.
func TestTakeConcurrentReplicas(t *testing.T) {
	s := natstest.Start(t)
	replicas := []*ratelimit.Limiter{newLimiter(t, s, ratelimit.Config{}), newLimiter(t, s, ratelimit.Config{})}
	const limit, goroutines, takesEach = 5, 16, 4
	key := ratelimit.CapKey("user-1", "marketing", "")
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var taken, calls atomic.Int64
	var wg sync.WaitGroup
	for _, l := range replicas {
		for g := range goroutines {
			wg.Go(func() {
				for i := range takesEach {
					c := ratelimit.Cap{Key: key, Limit: limit, Window: time.Hour, At: at.Add(time.Duration(g*takesEach+i) * time.Second)}
					got, err := l.Take(context.Background(), []ratelimit.Cap{c, c})
					if err != nil {
						t.Error(err)
						return
					}
					for _, ok := range got {
						calls.Add(1)
						if ok {
							taken.Add(1)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	if taken.Load() != limit {
		t.Errorf("%d of %d takes allowed, want exactly %d", taken.Load(), calls.Load(), limit)
	}
}

// A key whose TTL ran out (leaving a delete marker) is created afresh.
func TestTakeAfterKeyExpired(t *testing.T) {
	s := natstest.Start(t)
	l := newLimiter(t, s, ratelimit.Config{})
	ctx := context.Background()
	kv, err := connect(t, s).KeyValue(ctx, ratelimit.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	c := ratelimit.Cap{Key: ratelimit.CapKey("u", "marketing", ""), Limit: 1, Window: time.Hour, At: time.Now()}
	stored := c.Key + ".3600s"
	if _, err := kv.Create(ctx, stored, []byte{1}, jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for _, err := kv.Get(ctx, stored); !errors.Is(err, jetstream.ErrKeyNotFound); _, err = kv.Get(ctx, stored) {
		if time.Now().After(deadline) {
			t.Fatalf("key did not expire: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !take(t, l, c) {
		t.Error("take on an expired key refused")
	}
	c.At = c.At.Add(time.Second)
	if take(t, l, c) {
		t.Error("second take allowed")
	}
}

// Updates keep a per-key TTL (kv.Update alone would drop it).
func TestTakeSetsKeyTTL(t *testing.T) {
	s := natstest.Start(t)
	l := newLimiter(t, s, ratelimit.Config{})
	ctx := context.Background()
	stream, err := connect(t, s).Stream(ctx, "KV_"+ratelimit.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	c := ratelimit.Cap{Key: ratelimit.CapKey("u", "marketing", ""), Limit: 3, Window: time.Hour, At: time.Now()}
	for i := range 2 { // create, then update
		c.At = c.At.Add(time.Duration(i) * time.Second)
		if !take(t, l, c) {
			t.Fatal("take refused")
		}
		msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+ratelimit.DefaultBucket+"."+c.Key+".3600s")
		if err != nil {
			t.Fatal(err)
		}
		ttl, err := time.ParseDuration(msg.Header.Get(jetstream.MsgTTLHeader))
		if err != nil || ttl < time.Hour || ttl > 2*time.Hour {
			t.Errorf("write %d: TTL header %q, want about an hour", i, msg.Header.Get(jetstream.MsgTTLHeader))
		}
	}
}

func TestStoreDown(t *testing.T) {
	s := natstest.Start(t)
	const timeout = 250 * time.Millisecond
	l := newLimiter(t, s, ratelimit.Config{Timeout: timeout})
	ctx := context.Background()
	c := ratelimit.Cap{Key: ratelimit.CapKey("u", "marketing", ""), Limit: 3, Window: time.Hour, At: time.Now()}
	if _, err := l.Take(ctx, []ratelimit.Cap{c}); err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	s.WaitForShutdown()

	// Far below nats.go's own 5 s request timeout: the Limiter's bound is what ended the call.
	const bound = 8 * timeout
	start := time.Now()
	if _, err := l.Take(ctx, []ratelimit.Cap{c, c}); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("Take: err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("Take took %v with the store down", d)
	}
	start = time.Now()
	if _, _, err := l.AllowRequest(ctx, "app-1", 100, 10); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Errorf("AllowRequest: err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("AllowRequest took %v with the store down", d)
	}
}

func TestPeekRecordsNothing(t *testing.T) {
	l := newLimiter(t, natstest.Start(t), ratelimit.Config{})
	ctx := context.Background()
	c := ratelimit.Cap{Key: ratelimit.CapKey("u", "marketing", ""), Limit: 1, Window: time.Hour, At: time.Now()}
	for range 3 {
		if room, err := l.Peek(ctx, []ratelimit.Cap{c}); err != nil || !room[0] {
			t.Fatalf("Peek before any Take = %v, %v", room, err)
		}
	}
	if taken, err := l.Take(ctx, []ratelimit.Cap{c}); err != nil || !taken[0] {
		t.Fatalf("Take = %v, %v", taken, err)
	}
	if room, err := l.Peek(ctx, []ratelimit.Cap{c}); err != nil || room[0] {
		t.Fatalf("Peek of a full cap = %v, %v", room, err)
	}
}
