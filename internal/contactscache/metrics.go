package contactscache

import "github.com/prometheus/client_golang/prometheus"

// metrics count how lookups were answered. The counters are bound to their labels once, so a
// lookup costs an atomic add each.
type metrics struct {
	userHits, addressHits, setHits prometheus.Counter
	userMisses, addressMisses      prometheus.Counter
	resolveCalls, changeCalls      prometheus.Counter
	addressCalls                   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, set *addressSet) *metrics {
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_contacts_cache_hits_total",
		Help: "Lookups answered without the contacts service: kind=user and kind=address from the exact caches, kind=set by the set of suppressed addresses (the address has none).",
	}, []string{"kind"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_contacts_cache_misses_total",
		Help: "Lookups the caches could not answer, left to a ResolveRecipients call, by kind (user, address).",
	}, []string{"kind"})
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_contacts_cache_calls_total",
		Help: "Calls to the contacts service by method: ResolveRecipients for misses, ListChanges for the change feed, ListSuppressedAddresses for loading the set.",
	}, []string{"method"})
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_contacts_cache_suppressed_addresses",
		Help: "Addresses in the set of suppressed addresses; 0 while it is not loaded (lookups then call).",
	}, func() float64 { return float64(set.size()) })
	loaded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_contacts_cache_set_loaded",
		Help: "1 when the set of suppressed addresses is loaded and answers, 0 while it loads.",
	}, func() float64 {
		if set.loaded() {
			return 1
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(hits, misses, calls, size, loaded)
	}
	return &metrics{
		userHits: hits.WithLabelValues("user"), addressHits: hits.WithLabelValues("address"),
		setHits: hits.WithLabelValues("set"), userMisses: misses.WithLabelValues("user"),
		addressMisses: misses.WithLabelValues("address"), resolveCalls: calls.WithLabelValues("ResolveRecipients"),
		changeCalls: calls.WithLabelValues("ListChanges"), addressCalls: calls.WithLabelValues("ListSuppressedAddresses"),
	}
}
