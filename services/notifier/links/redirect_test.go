package links

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/errs"
)

type fakeResolver struct {
	mu      sync.Mutex
	links   map[int64]Target
	lookups int
}

func (f *fakeResolver) Link(_ context.Context, id int64) (Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	t, ok := f.links[id]
	if !ok {
		return t, errs.E(errs.NotFound, "link not found")
	}
	return t, nil
}

type fakeClicks struct {
	mu     sync.Mutex
	clicks []Click
}

func (f *fakeClicks) InsertClicks(_ context.Context, cs []Click, _, _ time.Duration) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clicks = append(f.clicks, cs...)
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = OutcomePerson
		if c.Bot != "" {
			out[i] = OutcomeBot
		}
	}
	return out, nil
}

func TestHandler(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	codec := testCodec(t)
	live, old, missing := MakeID(now.Add(-time.Minute), 1), MakeID(now.Add(-2*time.Hour), 2), MakeID(now, 3)
	d := uuid.New()
	res := &fakeResolver{links: map[int64]Target{
		live: {URL: "https://ex.com/a?t=1", DeliveryID: d, ExpiresAt: now.Add(time.Hour)},
		old:  {URL: "https://ex.com/old", DeliveryID: d, ExpiresAt: now.Add(-time.Hour)},
	}}
	store := &fakeClicks{}
	rec := NewRecorder(store, RecorderConfig{FlushInterval: time.Millisecond})
	h := NewHandler(HandlerConfig{Codec: codec, Resolver: res, Recorder: rec, Retention: 24 * time.Hour,
		Limiter: NewLimiter(1, 3), Now: func() time.Time { return now }})
	mux := http.NewServeMux()
	mux.Handle("GET /l/{code}", h)
	get := func(code, ip, ua string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/l/"+code, nil)
		r.RemoteAddr, r.Header["User-Agent"] = ip+":1234", []string{ua}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	const browser = "Mozilla/5.0 (Macintosh) Safari/605.1.15"
	for i, tc := range []struct {
		name, code, ip, ua string
		status             int
	}{
		{"live", codec.Encode(live), "10.0.0.1", browser, http.StatusFound},
		{"live again, from the cache", codec.Encode(live), "10.0.0.1", "Slackbot 1.0", http.StatusFound},
		{"expired", codec.Encode(old), "10.0.0.2", browser, http.StatusNotFound},
		{"never stored", codec.Encode(missing), "10.0.0.2", browser, http.StatusNotFound},
		{"malformed", "hello", "10.0.0.2", browser, http.StatusNotFound},
		{"implausible", codec.Encode(MakeID(now.Add(48*time.Hour), 9)), "10.0.0.3", browser, http.StatusNotFound},
		{"over the rate", codec.Encode(live), "10.0.0.1", browser, http.StatusFound},
		{"over the rate", codec.Encode(live), "10.0.0.1", browser, http.StatusTooManyRequests},
	} {
		w := get(tc.code, tc.ip, tc.ua)
		if w.Code != tc.status {
			t.Fatalf("%d %s: %d, want %d", i, tc.name, w.Code, tc.status)
		}
		switch w.Code {
		case http.StatusFound:
			if w.Header().Get("Location") != "https://ex.com/a?t=1" || w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("%s: headers %v", tc.name, w.Header())
			}
		case http.StatusTooManyRequests:
			if w.Header().Get("Retry-After") != "1" {
				t.Errorf("%s: Retry-After %q", tc.name, w.Header().Get("Retry-After"))
			}
		}
	}
	if res.lookups != 3 {
		t.Errorf("%d database lookups, want 3 (live, old and missing once each)", res.lookups)
	}
	rec.Close()
	// The person's second click is a repeat within the window; the bot's counts apart.
	if len(store.clicks) != 2 || store.clicks[0].Bot != "" || store.clicks[1].Bot != BotAgent || store.clicks[0].DeliveryID != d {
		t.Errorf("clicks written %+v, want the first person's and the bot's", store.clicks)
	}
}
