package links

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkHandler measures one redirect served from the cache, click taken, without the
// network: what the notifier spends per redirect.
func BenchmarkHandler(b *testing.B) {
	codec := testCodec(b)
	now := time.Now()
	id := MakeID(now, 7)
	res := &fakeResolver{links: map[int64]Target{id: {URL: "https://ex.com/a?t=1", DeliveryID: uuid.New(), ExpiresAt: now.Add(time.Hour)}}}
	rec := NewRecorder(&fakeClicks{}, RecorderConfig{Window: time.Nanosecond})
	defer rec.Close()
	h := NewHandler(HandlerConfig{Codec: codec, Resolver: res, Recorder: rec, Retention: time.Hour, Limiter: NewLimiter(1e9, 1e9)})
	mux := http.NewServeMux()
	mux.Handle("GET /l/{code}", h)
	r := httptest.NewRequest(http.MethodGet, "/l/"+codec.Encode(id), nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != http.StatusFound {
			b.Fatal(w.Code)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	c := testCodec(b)
	code := c.Encode(MakeID(time.Now(), 1))
	for b.Loop() {
		c.Decode(code)
	}
}

func BenchmarkIsBot(b *testing.B) {
	for b.Loop() {
		IsBot("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
	}
}
