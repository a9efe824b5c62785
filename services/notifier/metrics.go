package notifier

import (
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/preference"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the notifier's Prometheus metrics. The names and labels are a contract with the
// dashboards and alerts in deploy/monitoring.
type Metrics struct {
	NotificationsAccepted *prometheus.CounterVec
	DeliveriesAccepted    *prometheus.CounterVec
	DeliveriesSkipped     *prometheus.CounterVec
	AcceptDuration        prometheus.Histogram
	RateLimited           *prometheus.CounterVec
	LimitStoreFailures    prometheus.Counter
	Republished           *prometheus.CounterVec
	Expired               prometheus.Counter
	ReconcilerPassed      prometheus.Gauge
	ProviderEvents        *prometheus.CounterVec
	DigestsSent           *prometheus.CounterVec
}

// NewMetrics creates the notifier's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		NotificationsAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_notifications_accepted_total", Help: "Notifications accepted by Send, by category.",
		}, []string{"category"}),
		DeliveriesAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_accepted_total", Help: "Deliveries queued or scheduled at accept.",
		}, []string{"channel", "category"}),
		DeliveriesSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_skipped_total", Help: "Deliveries skipped at accept, by reason.",
		}, []string{"channel", "reason"}),
		AcceptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_accept_duration_seconds", Help: "Latency of successful Sends, to the commit.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_rate_limited_total", Help: "Requests refused over an app's rate (kind=app) and deliveries capped (kind=cap).",
		}, []string{"kind"}),
		LimitStoreFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_limit_store_failures_total", Help: "Times the rate limit store did not answer and limits were waived.",
		}),
		Republished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_reconciler_republished_total", Help: "Deliveries the reconciler published again: lost messages, expired leases (not scheduled ones falling due).",
		}, []string{"channel"}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_reconciler_expired_total", Help: "Deliveries the reconciler expired.",
		}),
		ReconcilerPassed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_reconciler_last_pass_timestamp_seconds",
			Help: "When the reconciler last finished a pass, failed or not (or started), in Unix seconds: a pass that hangs leaves it behind.",
		}),
		ProviderEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_provider_events_total", Help: "Events received from provider webhooks, by kind.",
		}, []string{"provider", "kind"}),
		DigestsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_digests_sent_total", Help: "Digests closed into one delivery each, by channel (a digest of only canceled items sends none).",
		}, []string{"channel"}),
	}
	reg.MustRegister(m.NotificationsAccepted, m.DeliveriesAccepted, m.DeliveriesSkipped, m.AcceptDuration,
		m.RateLimited, m.LimitStoreFailures, m.Republished, m.Expired, m.ReconcilerPassed, m.ProviderEvents, m.DigestsSent)
	return m
}

// discardMetrics is where metrics go when a Sender or Reconciler has none (unit tests).
func discardMetrics() *Metrics { return NewMetrics(prometheus.NewRegistry()) }

// count records what a committed notification decided.
func (m *Metrics) count(n *Notification) {
	m.NotificationsAccepted.WithLabelValues(n.Category).Inc()
	for _, d := range n.Deliveries {
		switch d.State {
		case delivery.Queued, delivery.Scheduled:
			m.DeliveriesAccepted.WithLabelValues(string(d.Channel), n.Category).Inc()
		case delivery.Skipped:
			m.DeliveriesSkipped.WithLabelValues(string(d.Channel), d.Reason).Inc()
			if d.Reason == preference.ReasonRateLimited {
				m.RateLimited.WithLabelValues("cap").Inc()
			}
		}
	}
}
