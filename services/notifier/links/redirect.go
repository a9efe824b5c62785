package links

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/errs"
)

// Target is where a short link leads, and what its clicks are counted against.
type Target struct {
	URL        string
	DeliveryID uuid.UUID
	ExpiresAt  time.Time
	Channel    string
	Category   string
	Template   string
}

// Resolver finds links. The postgres package implements it.
type Resolver interface {
	// Link returns the link with id. Errors: NotFound.
	Link(ctx context.Context, id int64) (Target, error)
}

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	Codec    *Codec
	Resolver Resolver
	Recorder *Recorder
	// Retention is how long links live: older codes are refused before any lookup.
	Retention time.Duration
	// CacheSize bounds the links held in memory (default 100,000).
	CacheSize int
	// Limiter bounds each client address's redirects; nil: no limit.
	Limiter *Limiter
	// ClientIPHeader, when set, names a header (X-Forwarded-For, X-Real-IP) that a trusted
	// proxy in front sets; the last address in it is the client's. Otherwise the peer's
	// address is.
	ClientIPHeader string
	Metrics        *Metrics
	Log            *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves GET /l/{code}: 302 Found to the link's URL, and the click handed to the
// Recorder. Unknown, expired and malformed codes get a plain 404 page; a client over its rate
// gets 429 with Retry-After. A link found once is served from memory from then on, as is a
// code found missing.
type Handler struct {
	cfg   HandlerConfig
	cache *Cache[cached]
	// The counters of each result, looked up once rather than per request.
	results map[string]prometheus.Counter
	hits    [2]prometheus.Counter // [0]: looked up in the database, [1]: cached
}

type cached struct {
	t     Target
	found bool
}

// NewHandler returns a Handler.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, cache: NewCache[cached](cfg.CacheSize), results: map[string]prometheus.Counter{}}
	for _, r := range []string{resultFound, resultNotFound, resultExpired, resultRateLimited, resultError} {
		h.results[r] = cfg.Metrics.Redirects.WithLabelValues(r)
	}
	h.hits[0], h.hits[1] = cfg.Metrics.Lookups.WithLabelValues("false"), cfg.Metrics.Lookups.WithLabelValues("true")
	return h
}

// Remember puts a link just created into the cache, so that its first clicks on this replica
// do not wait for the database.
func (h *Handler) Remember(id int64, t Target) {
	h.cache.Add(id, cached{t: t, found: true})
}

var noStore, noReferrer = []string{"no-store"}, []string{"no-referrer"}

// The results of a redirect, as metrics label them.
const (
	resultFound       = "found"
	resultNotFound    = "not_found"
	resultExpired     = "expired"
	resultRateLimited = "rate_limited"
	resultError       = "error"
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := h.cfg.Now()
	if ok, wait := h.cfg.Limiter.Allow(h.clientIP(r), now); !ok {
		h.results[resultRateLimited].Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		page(w, http.StatusTooManyRequests, "Too many requests. Try again in a moment.")
		return
	}
	id, ok := h.cfg.Codec.Decode(r.PathValue("code"))
	if !ok || !Plausible(id, now, h.cfg.Retention) {
		h.notFound(w, resultNotFound)
		return
	}
	c, hit := h.cache.Get(id)
	if hit {
		h.hits[1].Inc()
	} else {
		h.hits[0].Inc()
	}
	if !hit {
		t, err := h.cfg.Resolver.Link(r.Context(), id)
		switch {
		case err == nil:
			c = cached{t: t, found: true}
		case errs.Is(err, errs.NotFound):
			c = cached{}
		default:
			h.results[resultError].Inc()
			h.cfg.Log.Warn("look up short link", "link_id", id, "err", err)
			page(w, http.StatusServiceUnavailable, "This link cannot be followed right now. Try again in a moment.")
			return
		}
		h.cache.Add(id, c)
	}
	if !c.found {
		h.notFound(w, resultNotFound)
		return
	}
	if !now.Before(c.t.ExpiresAt) {
		h.notFound(w, resultExpired)
		return
	}
	click := Click{LinkID: id, DeliveryID: c.t.DeliveryID, At: now,
		Channel: c.t.Channel, Category: c.t.Category, Template: c.t.Template}
	if r.Method == http.MethodHead || IsBot(r.UserAgent()) {
		click.Bot = BotAgent // a HEAD only looks: previewers and scanners
	}
	h.cfg.Recorder.Add(click)
	hdr := w.Header() // canonical keys set directly: this is the hot path
	hdr["Location"] = []string{c.t.URL}
	hdr["Cache-Control"] = noStore
	hdr["Referrer-Policy"] = noReferrer
	w.WriteHeader(http.StatusFound)
	h.results[resultFound].Inc()
}

func (h *Handler) notFound(w http.ResponseWriter, result string) {
	h.results[result].Inc()
	page(w, http.StatusNotFound, "This link does not exist or has expired.")
}

func (h *Handler) clientIP(r *http.Request) string {
	if h.cfg.ClientIPHeader != "" {
		if v := r.Header.Values(h.cfg.ClientIPHeader); len(v) > 0 {
			last := v[len(v)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := strings.TrimSpace(last); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// page answers with a minimal HTML page that caches nothing and says nothing about the code.
func page(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write([]byte("<!doctype html><meta charset=utf-8><title>" + http.StatusText(status) +
		"</title><p>" + msg + "</p>\n"))
}

// Metrics are the short links' Prometheus metrics (see deploy/monitoring's contract).
type Metrics struct {
	Redirects *prometheus.CounterVec
	Lookups   *prometheus.CounterVec
	Clicks    *prometheus.CounterVec
	Created   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_link_redirects_total", Help: "Requests for short links, by result (found, not_found, expired, rate_limited, error).",
		}, []string{"result"}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_link_lookups_total", Help: "Short links looked up, by whether the cache held them (cached=false went to the database).",
		}, []string{"cached"}),
		Clicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_link_clicks_total", Help: "Clicks on short links, by channel, category, template and kind (person, bot, duplicate, dropped).",
		}, []string{"channel", "category", "template", "kind"}),
		Created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_links_created_total", Help: "Short links created in accepted deliveries, by channel, category and template.",
		}, []string{"channel", "category", "template"}),
	}
	reg.MustRegister(m.Redirects, m.Lookups, m.Clicks, m.Created)
	return m
}

// CountClick is a RecorderConfig.Counted that counts clicks in m.
func (m *Metrics) CountClick(c Click, outcome string) {
	m.Clicks.WithLabelValues(c.Channel, c.Category, c.Template, outcome).Inc()
}
