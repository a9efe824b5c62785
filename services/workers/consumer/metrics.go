package consumer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

// Metrics are the workers' Prometheus metrics, shared by every channel's consumer in a process.
// The names and labels are a contract with the dashboards and alerts in deploy/monitoring.
type Metrics struct {
	Sent             *prometheus.CounterVec
	Failed           *prometheus.CounterVec
	Retried          *prometheus.CounterVec
	Dead             *prometheus.CounterVec
	SkippedAtSend    *prometheus.CounterVec
	ProviderDuration *prometheus.HistogramVec
	AcceptToSent     *prometheus.HistogramVec
	CircuitState     *prometheus.GaugeVec
	CircuitOpened    *prometheus.CounterVec
	ConfigErrors     *prometheus.CounterVec
}

// NewMetrics creates the workers' metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	cp := []string{"channel", "provider"}
	m := &Metrics{
		Sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_sent_total", Help: "Deliveries the provider accepted."}, cp),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_failed_total", Help: "Deliveries failed for good, by reason."},
			[]string{"channel", "provider", "reason"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_retried_total", Help: "Attempts that failed transiently and will be retried."}, cp),
		Dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_dead_total", Help: "Deliveries that used up their attempts."}, cp),
		SkippedAtSend: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_skipped_at_send_total", Help: "Deliveries stopped by the re-check just before sending."},
			[]string{"channel", "reason"}),
		ProviderDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_provider_duration_seconds", Help: "Latency of provider calls, any outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, cp),
		AcceptToSent: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_accept_to_sent_seconds", Help: "Time from the notifier's accept to the provider's.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}, []string{"channel"}),
		CircuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_circuit_state", Help: "Provider circuit: 0 closed, 1 half-open, 2 open."}, cp),
		CircuitOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_circuit_opened_total", Help: "Times a provider circuit opened."}, cp),
		ConfigErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_provider_config_errors_total", Help: "Provider answers blaming Herald's configuration."}, cp),
	}
	reg.MustRegister(m.Sent, m.Failed, m.Retried, m.Dead, m.SkippedAtSend, m.ProviderDuration, m.AcceptToSent,
		m.CircuitState, m.CircuitOpened, m.ConfigErrors)
	return m
}

func circuitValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

// recorded counts an attempt once its outcome is stored.
func (m *Metrics) recorded(a workers.Attempt) {
	ch := string(a.Message.Channel)
	switch a.State {
	case delivery.Sent:
		m.Sent.WithLabelValues(ch, a.Provider).Inc()
		if !a.Message.AcceptedAt.IsZero() {
			m.AcceptToSent.WithLabelValues(ch).Observe(a.Started.Add(a.Latency).Sub(a.Message.AcceptedAt).Seconds())
		}
	case delivery.Failed:
		m.Failed.WithLabelValues(ch, a.Provider, a.Reason).Inc()
	case delivery.Skipped:
		m.SkippedAtSend.WithLabelValues(ch, a.Reason).Inc()
	case delivery.Dead:
		m.Dead.WithLabelValues(ch, a.Provider).Inc()
	case delivery.Retrying:
		m.Retried.WithLabelValues(ch, a.Provider).Inc()
	}
}
