package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	workersd "github.com/heraldhq/herald/services/workers/daemon"
)

// result is what one run measured: the run of count, rate or backlog mode, or one phase of the
// standard mode (unary, batch).
type result struct {
	cfg     config
	mode    string
	machine machine

	loadTime       time.Duration // first send to last answer
	deliverTime    time.Duration // first send (backlog: workers' start) to last delivery
	window         time.Duration // the CPU figures' window: first send (backlog: workers' start) to last delivery
	queueWindow    time.Duration // backlog: first send to last answer, and then the CPU figures of that phase
	queueCores     []usage
	queueBusy      float64
	db             dbCounters    // from the first send to the last delivery
	workersStart   time.Duration // backlog: how long the workers took to become ready
	drainFromFirst time.Duration // backlog: first to last delivery

	accepted   int64 // notifications answered OK
	inTime     int64 // unary, batch: of those, answered within the timed window
	failures   int64
	errors     string
	notQueued  string
	deliveries int64 // deliveries answered QUEUED
	delivered  int64 // of those, received by a fake
	duplicates int64
	strays     int64 // received by a fake, but no Send answered for them
	waitErr    error
	states     map[string]int64

	sendLat []int64 // ns, sorted
	e2eLat  []int64 // ns, sorted

	usages      []usage
	pgPeakKB    int64
	pgProcs     int
	machineBusy float64 // cores busy, on average over the window
	softirq     float64 // of which in softirq
	idleBefore  float64 // cores busy in the second before the stack started

	noop *noopResult // unary: the same load against the no-op server
}

// otherCores is how many cores, on average over the window, were busy outside the
// benchmark's processes and softirq: other load on the machine, and kernel threads (the file
// systems' journal and writeback among them).
func (r *result) otherCores() float64 {
	ours := 0.0
	for _, u := range r.usages {
		ours += u.cpu
	}
	return max(0, r.machineBusy-r.softirq-ours/r.window.Seconds())
}

func (r *result) lost() int64 { return r.deliveries - r.delivered }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (r *result) acceptedPerS() float64 {
	switch r.mode {
	case "backlog":
		return perSecond(r.deliveries, r.loadTime)
	case "unary", "batch":
		return perSecond(r.inTime, r.timed())
	}
	return perSecond(r.accepted, r.loadTime)
}

// timed is how long the standard mode's phases send: their rates count what was answered
// within it.
func (r *result) timed() time.Duration {
	switch r.mode {
	case "unary":
		return r.cfg.unaryDuration
	case "batch":
		return r.cfg.batchDuration
	}
	return 0
}

func (r *result) deliveredPerS() float64 { return perSecond(r.delivered, r.deliverTime) }

// cpuPerDelivery is the CPU time, in milliseconds, that all the processes together (PostgreSQL,
// NATS, the services, the load generator and the fakes) spent per delivery: in backlog mode,
// queueing and draining both.
func (r *result) cpuPerDelivery() float64 {
	if r.delivered == 0 {
		return 0
	}
	total := 0.0
	for _, us := range [][]usage{r.usages, r.queueCores} {
		for _, u := range us {
			total += u.cpu
		}
	}
	return total * 1000 / float64(r.delivered)
}

// percentile returns the nearest-rank q-quantile of sorted, in milliseconds (0 when empty).
func percentile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / 1e6
}

// maxRSS is the highest peak RSS of Herald's own processes and NATS (PostgreSQL and the
// benchmark are reported apart).
func (r *result) maxRSS() float64 {
	m := 0.0
	for _, u := range r.usages {
		switch u.name {
		case "nats", "notifier", "contacts", "workers":
			m = max(m, u.peakMB)
		}
	}
	return m
}

// workerConcurrency is the workers' --concurrency in this run.
func (r *result) workerConcurrency() int {
	if r.cfg.workerConcurrency > 0 {
		return r.cfg.workerConcurrency
	}
	var c workersd.Config
	c.RegisterFlags(flag.NewFlagSet("workers", flag.ContinueOnError))
	return c.Concurrency
}

// providerBound is the most deliveries per second that the workers' provider concurrency
// allows with the fakes' latency and this channel mix: each channel has concurrency calls in
// flight, each taking the latency, and carries its share of the load.
func (r *result) providerBound() float64 {
	if r.cfg.providerLatency <= 0 {
		return 0
	}
	cycle, _ := parseMix(r.cfg.mix)
	share := map[heraldv1.Channel]float64{}
	for _, ch := range cycle {
		share[ch] += 1 / float64(len(cycle))
	}
	perChannel := float64(r.workerConcurrency()) / r.cfg.providerLatency.Seconds()
	bound := math.Inf(1)
	for _, s := range share {
		bound = min(bound, perChannel/s)
	}
	return bound
}

func (r *result) print(out io.Writer) {
	if r.mode == r.cfg.mode {
		fmt.Fprintln(out, "\nresults")
	} else {
		fmt.Fprintf(out, "\nresults (%s)\n", r.mode)
	}
	switch r.mode {
	case "backlog":
		fmt.Fprintf(out, "  queued        %d notifications in %.1fs: %.0f/s (SendBatch of 1,000)\n",
			r.accepted, r.loadTime.Seconds(), r.acceptedPerS())
		fmt.Fprintf(out, "  drained       %d of %d deliveries in %.1fs from the workers' start (%.1fs of it start-up): %.0f/s; %.0f/s from the first delivery to the last\n",
			r.delivered, r.deliveries, r.deliverTime.Seconds(), r.workersStart.Seconds(), r.deliveredPerS(),
			perSecond(r.delivered, r.drainFromFirst))
	case "unary", "batch":
		how := fmt.Sprintf("Send from %d callers", r.cfg.concurrency)
		if r.mode == "batch" {
			how = fmt.Sprintf("SendBatch of %d from %d callers", r.cfg.batchSize, r.cfg.batchCallers)
		}
		fmt.Fprintf(out, "  accepted      %d notifications in %s: %.0f/s (%s; %d in all with the calls under way at the end, %d deliveries)\n",
			r.inTime, r.timed(), r.acceptedPerS(), how, r.accepted, r.deliveries)
		fmt.Fprintf(out, "  delivered     %d of %d in %.1fs from the first send: %.0f/s end to end\n",
			r.delivered, r.deliveries, r.deliverTime.Seconds(), r.deliveredPerS())
	default:
		fmt.Fprintf(out, "  accepted      %d notifications in %.1fs: %.0f/s (%d deliveries)\n",
			r.accepted, r.loadTime.Seconds(), r.acceptedPerS(), r.deliveries)
		fmt.Fprintf(out, "  delivered     %d of %d in %.1fs from the first send: %.0f/s end to end\n",
			r.delivered, r.deliveries, r.deliverTime.Seconds(), r.deliveredPerS())
	}
	call := "Send latency "
	switch r.mode {
	case "backlog", "batch":
		call = "SendBatch    "
	case "rate":
		call = "Send (due)   "
	}
	lat := func(name string, s []int64) {
		fmt.Fprintf(out, "  %s p50 %.2fms  p95 %.2fms  p99 %.2fms  max %.2fms  (%d samples)\n", name,
			percentile(s, .5), percentile(s, .95), percentile(s, .99), percentile(s, 1), len(s))
	}
	lat(call, r.sendLat)
	lat("accept→sent ", r.e2eLat)
	if n := r.noop; n != nil {
		fmt.Fprintf(out, "  no-op server  %d Sends in %s: %.0f/s from the same load generator; ratio %.3f (accepted/s over the no-op server's)\n",
			n.calls, n.window, n.perS(), r.ratio())
		lat("no-op Send   ", n.lat)
		var parts []string
		for _, u := range n.usages {
			parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
		}
		fmt.Fprintf(out, "  no-op server  cores used: %s; failed calls %d\n", strings.Join(parts, ", "), n.failures)
		if n.errors != "" {
			fmt.Fprintf(out, "  no-op server  failed calls: %s\n", n.errors)
		}
	}
	if b := r.providerBound(); b > 0 {
		fmt.Fprintf(out, "  provider bound: %d calls in flight per channel / %s = at most %.0f deliveries/s with this mix\n",
			r.workerConcurrency(), r.cfg.providerLatency, b)
	}
	fmt.Fprintf(out, "  lost %d, sent twice %d, unexpected at the providers %d, failed calls %d\n",
		r.lost(), r.duplicates, r.strays, r.failures)
	if r.errors != "" {
		fmt.Fprintf(out, "  failed calls: %s\n", r.errors)
	}
	if r.notQueued != "" {
		fmt.Fprintf(out, "  not queued: %s\n", r.notQueued)
	}
	if len(r.states) > 0 {
		var parts []string
		for st, n := range r.states {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
		slices.Sort(parts)
		fmt.Fprintf(out, "  deliveries in the database: %s\n", strings.Join(parts, ", "))
	}
	if r.db.commits > 0 && r.deliveries > 0 {
		per := func(n int64) float64 { return float64(n) / float64(r.deliveries) }
		fmt.Fprintf(out, "  postgres: %.2f commits, %.2f WAL syncs and %.0f bytes of WAL per delivery; %d sequential scans of deliveries reading %d rows\n",
			per(r.db.commits), per(r.db.walSyncs), per(r.db.walBytes), r.db.seqScans, r.db.seqRows)
	}
	if r.mode == "backlog" {
		var parts []string
		for _, u := range r.queueCores {
			parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
		}
		fmt.Fprintf(out, "  queueing:     cores used: %s; machine %.2f busy\n", strings.Join(parts, ", "), r.queueBusy)
		fmt.Fprintln(out, "  draining (from the workers' start to the last delivery):")
	}
	fmt.Fprintf(out, "  CPU per delivery: %.3f ms, all processes\n", r.cpuPerDelivery())
	fmt.Fprintf(out, "  %-10s %10s %8s %7s\n", "process", "peak RSS", "CPU s", "cores")
	for _, u := range r.usages {
		note := ""
		if u.note != "" {
			note = "  (" + u.note + ")"
		}
		fmt.Fprintf(out, "  %-10s %7.0f MB %8.1f %7.2f%s\n", u.name, u.peakMB, u.cpu, u.cpu/r.window.Seconds(), note)
	}
	window := "first send to last delivery"
	if r.mode == "backlog" {
		window = "workers' start to last delivery"
	}
	fmt.Fprintf(out, "  machine: %.2f of %d cores busy on average over the %.1fs window (%s): %.2f in softirq (loopback networking), %.2f outside the processes above\n",
		r.machineBusy, r.machine.CPUs, r.window.Seconds(), window, r.softirq, r.otherCores())
	if r.otherCores() > 0.25 || r.idleBefore > 0.25 {
		fmt.Fprintf(out, "  WARNING: other load on this machine (%.2f cores busy before the run, %.2f during it outside the benchmark): the figures understate Herald\n",
			r.idleBefore, r.otherCores())
	}
	fmt.Fprintf(out, "  machine: %s\n", r.machine)
}

// summary is the machine-readable line, printed last (in the standard mode, one per phase).
func (r *result) summary() string {
	var b strings.Builder
	kv := func(k, format string, v any) { fmt.Fprintf(&b, " %s="+format, k, v) }
	s, e := r.sendLat, r.e2eLat
	b.WriteString("bench:")
	kv("mode", "%s", r.mode)
	kv("accepted_per_s", "%.0f", r.acceptedPerS())
	if r.noop != nil {
		kv("noop_per_s", "%.0f", r.noop.perS())
		kv("ratio", "%.3f", r.ratio())
		kv("noop_p50_ms", "%.2f", percentile(r.noop.lat, .5))
		kv("noop_p99_ms", "%.2f", percentile(r.noop.lat, .99))
	}
	kv("delivered_per_s", "%.0f", r.deliveredPerS())
	kv("send_p50_ms", "%.2f", percentile(s, .5))
	kv("send_p95_ms", "%.2f", percentile(s, .95))
	kv("send_p99_ms", "%.2f", percentile(s, .99))
	kv("e2e_p50_ms", "%.2f", percentile(e, .5))
	kv("e2e_p99_ms", "%.2f", percentile(e, .99))
	kv("max_rss_mb", "%.0f", r.maxRSS())
	kv("cpu_ms_per_delivery", "%.3f", r.cpuPerDelivery())
	switch r.mode {
	case "unary":
		kv("callers", "%d", r.cfg.concurrency)
		kv("duration_s", "%.0f", r.cfg.unaryDuration.Seconds())
	case "batch":
		kv("callers", "%d", r.cfg.batchCallers)
		kv("batch_size", "%d", r.cfg.batchSize)
		kv("duration_s", "%.0f", r.cfg.batchDuration.Seconds())
	}
	// The standard mode's lines give every process's peak; the other modes' give the highest.
	if r.cfg.mode == "standard" {
		for _, u := range r.usages {
			kv(u.name+"_rss_mb", "%.0f", u.peakMB)
		}
	}
	kv("notifications", "%d", r.accepted)
	kv("deliveries", "%d", r.deliveries)
	kv("delivered", "%d", r.delivered)
	kv("lost", "%d", r.lost())
	kv("duplicates", "%d", r.duplicates)
	kv("failed_calls", "%d", r.failures)
	kv("provider_latency_ms", "%d", r.cfg.providerLatency.Milliseconds())
	kv("cpus", "%d", r.machine.CPUs)
	kv("other_cores", "%.2f", r.otherCores())
	return b.String()
}

// verdict returns an error if the run lost or duplicated deliveries, or anything failed.
func (r *result) verdict() error {
	var problems []string
	if r.waitErr != nil {
		problems = append(problems, r.waitErr.Error())
	} else if r.lost() > 0 {
		problems = append(problems, fmt.Sprintf("%d deliveries lost", r.lost()))
	}
	if r.duplicates > 0 {
		problems = append(problems, fmt.Sprintf("%d deliveries sent twice without a crash", r.duplicates))
	}
	if r.strays > 0 {
		problems = append(problems, fmt.Sprintf("%d messages at the providers that no Send accepted", r.strays))
	}
	if r.failures > 0 {
		problems = append(problems, fmt.Sprintf("%d calls failed: %s", r.failures, r.errors))
	}
	if r.noop != nil && r.noop.failures > 0 {
		problems = append(problems, fmt.Sprintf("%d calls to the no-op server failed: %s", r.noop.failures, r.noop.errors))
	}
	if r.notQueued != "" {
		problems = append(problems, "deliveries not queued: "+r.notQueued)
	}
	for st, n := range r.states {
		if st != "sent" && n > 0 {
			problems = append(problems, fmt.Sprintf("%d deliveries %s in the database", n, st))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}
