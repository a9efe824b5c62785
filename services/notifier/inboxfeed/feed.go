package inboxfeed

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/inbox"
	"github.com/heraldhq/herald/services/notifier/rpc"
)

// Store is what a stream reads.
type Store interface {
	// After answers the user's messages after seq, oldest first.
	After(ctx context.Context, userID string, seq int64, limit int) ([]inbox.Message, error)
	UnreadCount(ctx context.Context, userID string) (int64, error)
	// Head is the user's last seq (0: none yet).
	Head(ctx context.Context, userID string) (int64, error)
}

// Tokens verifies user tokens.
type Tokens interface {
	// Verify returns the token's user and when the token expires, or an error.
	Verify(token string) (user string, expires time.Time, err error)
}

// Defaults of a Feed.
const (
	DefaultHeartbeat  = 15 * time.Second
	DefaultMaxStreams = 5
	// batch is how many messages a stream reads at once.
	batch = 100
)

// Feed serves the live feed: GET /v1/inbox/feed?token=<user token>.
//
// On connect it sends the unread count; then each message stored for the user as an event
// "message" whose id is its seq, and the unread count as an event "unread" whenever it changes.
// A client that reconnects with Last-Event-ID (EventSource does it by itself), or ?after=<seq>,
// gets every message after that position first, so a reconnect after any restart misses
// nothing. Comments every Heartbeat keep proxies from closing an idle stream. A stream ends
// when its token expires (the page asks its backend for a new one and reconnects with after=).
type Feed struct {
	Hub    *Hub
	Store  Store
	Tokens Tokens
	Log    *slog.Logger
	// Heartbeat is the time between keep-alive comments (and re-reads, a safety net beside
	// the notifications); 0 means DefaultHeartbeat.
	Heartbeat time.Duration
	// MaxStreams bounds a user's open streams on this notifier; 0 means DefaultMaxStreams.
	MaxStreams int
	// Origins may read the feed and the inbox routes from a page of theirs (CORS); "*" is
	// any origin. Calls carry a bearer token, never cookies, so no origin gains a user's
	// rights without the token.
	Origins []string

	streams prometheus.Gauge
	once    sync.Once
	mu      sync.Mutex
	closing chan struct{}
	wg      sync.WaitGroup
}

// Register registers the feed's metrics.
func (f *Feed) Register(reg prometheus.Registerer) {
	f.init()
	f.streams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_inbox_streams",
		Help: "Open live feed streams of the in-app inbox on this notifier."})
	reg.MustRegister(f.streams)
}

func (f *Feed) init() { f.once.Do(func() { f.closing = make(chan struct{}) }) }

// Close ends every stream and waits for them (the HTTP server's shutdown waits for
// handlers, and a stream never ends by itself).
func (f *Feed) Close() {
	f.init()
	f.mu.Lock()
	select {
	case <-f.closing:
	default:
		close(f.closing)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TokenFrom returns the token a feed request carries: ?token=, else a bearer header.
func TokenFrom(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	t, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(t)
}

func (f *Feed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.init()
	tok := TokenFrom(r)
	switch {
	case tok == "":
		httpError(w, http.StatusUnauthorized, "a user token is required: ?token=<token from CreateUserToken>")
		return
	case appkey.LooksLikeKey(tok):
		// Refused even when valid: an app key in a URL ends up in logs and browser history.
		httpError(w, http.StatusUnauthorized, "the live feed takes a user token (CreateUserToken), never an app key")
		return
	}
	user, expires, err := f.Tokens.Verify(tok)
	if err != nil {
		httpError(w, http.StatusUnauthorized, "invalid or expired user token")
		return
	}
	pos, err := Position(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, "Last-Event-ID or after: not a position this feed gave")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	f.mu.Lock()
	select {
	case <-f.closing:
		f.mu.Unlock()
		httpError(w, http.StatusServiceUnavailable, "shutting down")
		return
	default:
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()

	wake, n, cancel := f.Hub.Subscribe(user)
	defer cancel()
	if most := orDefault(f.MaxStreams, DefaultMaxStreams); n > most {
		w.Header().Set("Retry-After", "10")
		httpError(w, http.StatusTooManyRequests, fmt.Sprintf("at most %d live streams per user", most))
		return
	}
	if f.streams != nil {
		f.streams.Inc()
		defer f.streams.Dec()
	}
	ctx := r.Context()
	if pos < 0 { // a new client: what is stored from now on
		if pos, err = f.Store.Head(ctx, user); err != nil {
			f.Log.Warn("inbox feed: read position", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the inbox is unavailable; retry")
			return
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on as they come
	w.WriteHeader(http.StatusOK)
	// A browser reconnects after 1 s, from its Last-Event-ID.
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return
	}
	flusher.Flush()

	s := &stream{w: w, flush: flusher, store: f.Store, user: user, pos: pos, unread: -1}
	beat := time.NewTicker(orDefault(f.Heartbeat, DefaultHeartbeat))
	defer beat.Stop()
	end := time.NewTimer(time.Until(expires))
	defer end.Stop()
	for {
		if err := s.catchUp(ctx); err != nil {
			if ctx.Err() == nil {
				f.Log.Debug("inbox feed: stream ended", "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-f.closing:
			return
		case <-end.C:
			fmt.Fprint(w, "event: expired\ndata: {}\n\n")
			flusher.Flush()
			return
		case <-wake:
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// orDefault is v, or def when v is not positive (an unset or nonsensical setting).
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Position reads where a client resumes: the Last-Event-ID header, else ?after=; -1 when
// neither is given.
func Position(r *http.Request) (int64, error) {
	s := r.Header.Get("Last-Event-ID")
	if s == "" {
		s = r.URL.Query().Get("after")
	}
	return inbox.ParsePosition(s)
}

type stream struct {
	w      http.ResponseWriter
	flush  http.Flusher
	store  Store
	user   string
	pos    int64
	unread int64
}

// catchUp sends the messages after the stream's position, then the unread count if it changed.
func (s *stream) catchUp(ctx context.Context) error {
	for {
		ms, err := s.store.After(ctx, s.user, s.pos, batch)
		if err != nil {
			return err
		}
		for i := range ms {
			b, err := protojson.Marshal(rpc.InboxMessageProto(&ms[i]))
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(s.w, "id: %d\nevent: message\ndata: %s\n\n", ms[i].Seq, b); err != nil {
				return err
			}
			s.pos = ms[i].Seq
		}
		if len(ms) < batch {
			break
		}
	}
	n, err := s.store.UnreadCount(ctx, s.user)
	if err != nil {
		return err
	}
	if n != s.unread {
		s.unread = n
		b, _ := json.Marshal(map[string]int64{"unread": n})
		if _, err := fmt.Fprintf(s.w, "event: unread\ndata: %s\n\n", b); err != nil {
			return err
		}
	}
	s.flush.Flush()
	return nil
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(b)
}

// CORS lets pages of origins call next with a bearer token: it answers preflights and adds the
// headers a browser needs to read an answer. No credentials (cookies) are allowed.
func CORS(origins []string, next http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && (anyOrigin || slices.Contains(origins, origin))
		if allowed {
			h := w.Header()
			h.Add("Vary", "Origin")
			if anyOrigin {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
			}
			h.Set("Access-Control-Expose-Headers", "Retry-After")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h := w.Header()
				h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
				h.Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
