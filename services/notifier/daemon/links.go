package daemon

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/links"
	"github.com/heraldhq/herald/services/notifier/ops"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// defaultLinkRetention is how long a short link works when --link-retention does not say.
const defaultLinkRetention = 90 * 24 * time.Hour

// LinksConfig configures short links and click tracking. They are on when Key is set.
type LinksConfig struct {
	// Key (at least 16 bytes) keys the permutation that makes link codes unguessable; every
	// replica needs the same one, and changing it breaks the links already sent. A secret.
	Key     string
	KeyFile string
	// BaseURL is where recipients reach GET /l/{code} on this service's HTTP port (behind any
	// proxy); empty: the public URL.
	BaseURL string
	// Retention is how long a link works after its delivery goes out.
	Retention time.Duration
	// Rate and Burst bound each client address's redirects.
	Rate  float64
	Burst int
	// ClientIPHeader names the header a trusted proxy puts the client's address in.
	ClientIPHeader string
	// Window: repeated clicks on a delivery within it count once. Prefetch: clicks within it
	// of the send are a scanner's.
	Window, Prefetch time.Duration
	CacheSize        int
	// FlushInterval is how long a click may wait in memory before it is written.
	FlushInterval time.Duration
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *LinksConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Key, "link-key", "", "secret (16+ bytes) that keys short link codes; empty: links are not shortened (prefer --link-key-file)")
	fs.StringVar(&c.KeyFile, "link-key-file", "", "file holding --link-key")
	fs.StringVar(&c.BaseURL, "link-base-url", "", "public base URL of short links (GET /l/{code} on the HTTP port); empty: --public-url")
	fs.DurationVar(&c.Retention, "link-retention", defaultLinkRetention, "how long a short link works after its delivery goes out; older links answer 404 and are deleted")
	fs.Float64Var(&c.Rate, "link-rate", 20, "short link redirects per second per client address (0: unlimited)")
	fs.IntVar(&c.Burst, "link-burst", 60, "short link redirects a client address may make at once above --link-rate")
	fs.StringVar(&c.ClientIPHeader, "link-client-ip-header", "", "header in which a trusted proxy passes the client address (e.g. X-Forwarded-For); empty: the peer address")
	fs.DurationVar(&c.Window, "link-click-window", time.Minute, "repeated clicks on one delivery within this window count once")
	fs.DurationVar(&c.Prefetch, "link-prefetch-window", 2*time.Second, "clicks this soon after the send are counted as bots' (mail scanners)")
	fs.IntVar(&c.CacheSize, "link-cache-size", 200_000, "short links held in memory")
	fs.DurationVar(&c.FlushInterval, "link-flush-interval", 200*time.Millisecond, "longest a click waits in memory before it is written")
}

// startLinks turns short links on when a key is configured: the shortening in Send, the
// redirect on the HTTP port, and the click recorder.
func (d *Daemon) startLinks(cfg Config, store *postgres.Store, sender *notifier.Sender) error {
	lc := cfg.Links
	key, err := cli.Secret(lc.Key, lc.KeyFile)
	if err != nil {
		return fmt.Errorf("link key: %w", err)
	}
	if key == "" {
		return nil
	}
	codec, err := links.NewCodec([]byte(key))
	if err != nil {
		return err
	}
	if lc.Retention <= 0 {
		lc.Retention = defaultLinkRetention
	}
	base := strings.TrimSuffix(cmp.Or(lc.BaseURL, cfg.PublicURL), "/")
	if err := links.CheckURL(base + "/l/x"); err != nil {
		return fmt.Errorf("--link-base-url %s", err)
	}
	m := links.NewMetrics(d.srv.Metrics)
	d.clicks = links.NewRecorder(store, links.RecorderConfig{Window: lc.Window, Prefetch: lc.Prefetch,
		FlushInterval: lc.FlushInterval, Counted: m.CountClick, Log: cfg.Log})
	h := links.NewHandler(links.HandlerConfig{Codec: codec, Resolver: store, Recorder: d.clicks,
		Retention: lc.Retention, CacheSize: lc.CacheSize, Limiter: links.NewLimiter(lc.Rate, lc.Burst),
		ClientIPHeader: lc.ClientIPHeader, Metrics: m, Log: cfg.Log})
	d.srv.HTTP.Handle("GET /l/{code}", h)
	sender.Links = &notifier.LinkConfig{Codec: codec, IDs: &links.Allocator{Reserve: store.ReserveLinkIDs},
		BaseURL: base, Retention: lc.Retention,
		Created: func(l notifier.Link) {
			h.Remember(l.ID, links.Target{URL: l.URL, DeliveryID: l.DeliveryID, ExpiresAt: l.ExpiresAt,
				Channel: string(l.Channel), Category: l.Category, Template: l.Template})
			m.Created.WithLabelValues(string(l.Channel), l.Category, l.Template).Inc()
		}}
	return nil
}

// engagement counts the status page's click-through from the delivery statistics.
func engagement(store *postgres.Store) ops.EngagementFunc {
	return func(ctx context.Context, since time.Time) ([]ops.EngagementRow, error) {
		stats, err := store.DeliveryStats(ctx, since)
		if err != nil {
			return nil, err
		}
		var rows []ops.EngagementRow
		for _, st := range stats {
			if st.Sent == 0 {
				continue
			}
			rows = append(rows, ops.EngagementRow{Template: st.Template, Category: st.Category, Channel: string(st.Channel),
				Sent: st.Sent, Clicked: st.Clicked, ClickRate: float64(st.Clicked) / float64(st.Sent)})
		}
		return rows, nil
	}
}
