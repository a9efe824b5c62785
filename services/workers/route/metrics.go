package route

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the routers' Prometheus metrics, shared by every channel's router in a process.
// Each series is labelled {channel, provider, credential}: the credential is the entry's name
// in the providers file.
type Metrics struct {
	Calls     *prometheus.CounterVec
	Failovers *prometheus.CounterVec
	Held      *prometheus.CounterVec
	Circuit   *prometheus.GaugeVec
	Active    *prometheus.GaugeVec
}

// NewMetrics creates the routers' metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := []string{"channel", "provider", "credential"}
	m := &Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_route_calls_total",
			Help: "Provider calls per credential, by result: accepted, refused (failed over), failed."},
			append(l, "result")),
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_route_failovers_total",
			Help: "Sends that left this credential for the next one in the channel's order."}, l),
		Held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_route_held_total",
			Help: "Sends that passed over this credential without calling it, by reason: circuit_open, rate_limited."},
			append(l, "reason")),
		Circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_route_circuit_state", Help: "Credential circuit: 0 closed, 1 half-open, 2 open."}, l),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_route_active",
			Help: "1 for the credential that last took a message on its channel, 0 for the others."}, l),
	}
	reg.MustRegister(m.Calls, m.Failovers, m.Held, m.Circuit, m.Active)
	return m
}
