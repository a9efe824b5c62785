package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(config) bool
	}{
		{"defaults", nil, func(c config) bool {
			return c.mode == "count" && c.n == 20_000 && c.concurrency == 64 && c.unaryDuration == 20*time.Second &&
				c.batchDuration == time.Minute && c.batchCallers == 8 && c.batchSize == 100
		}},
		{"standard", []string{"--mode", "standard", "--unary-duration", "5s", "--batch-duration", "10s",
			"--batch-callers", "4", "--batch-size", "1000", "-c", "32"}, func(c config) bool {
			return c.mode == "standard" && c.unaryDuration == 5*time.Second && c.batchDuration == 10*time.Second &&
				c.batchCallers == 4 && c.batchSize == 1000 && c.concurrency == 32
		}},
		{"backlog keeps its defaults", []string{"--mode", "backlog"}, func(c config) bool {
			return c.n == 1_000_000 && c.concurrency == 4
		}},
		{"rate", []string{"--mode", "rate", "--rate", "100", "--duration", "3s"}, func(c config) bool {
			return c.rate == 100 && c.duration == 3*time.Second
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("parseFlags(%q) = %+v", tc.args, c)
			}
		})
	}
	for _, bad := range [][]string{
		{"--mode", "nope"},
		{"--mode", "standard", "--unary-duration", "0s"},
		{"--mode", "standard", "--batch-duration", "-1s"},
		{"--batch-callers", "0"},
		{"--batch-size", "0"},
		{"--batch-size", "1001"},
		{"stray"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error", bad)
		}
	}
}

// summaryOf formats r's summary line and parses it back.
func summaryOf(t *testing.T, r *result) map[string]string {
	t.Helper()
	line := r.summary()
	if strings.Contains(line, "\n") {
		t.Fatalf("summary %q spans lines", line)
	}
	return parseSummary(t, line)
}

func TestSummary(t *testing.T) {
	cfg, err := parseFlags([]string{"--mode", "standard"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(ms ...int64) []int64 {
		var out []int64
		for _, m := range ms {
			out = append(out, m*int64(time.Millisecond))
		}
		return out
	}
	// 10 s of load, 4,000 accepted and delivered; 6 CPU seconds among the processes.
	base := func(mode string) *result {
		return &result{cfg: cfg, mode: mode, machine: machine{CPUs: 2},
			loadTime: 10 * time.Second, deliverTime: 10 * time.Second, window: 10 * time.Second,
			accepted: 4000, deliveries: 4000, delivered: 4000,
			sendLat: ms(1, 2, 3, 4), e2eLat: ms(5, 6),
			usages: []usage{{name: "notifier", peakMB: 50, cpu: 2}, {name: "workers", peakMB: 40, cpu: 1},
				{name: "bench", peakMB: 90, cpu: 2}, {name: "postgres", peakMB: 120, cpu: 1}},
		}
	}

	t.Run("unary", func(t *testing.T) {
		// 3,800 of the 4,000 answered within the 20 s window; the no-op server, 19,000.
		r := base("unary")
		r.inTime = 3800
		r.noop = &noopResult{calls: 19_000, window: 20 * time.Second, lat: ms(1, 1, 2)}
		got := summaryOf(t, r)
		want := map[string]string{"mode": "unary", "accepted_per_s": "190", "noop_per_s": "950", "ratio": "0.200",
			"noop_p50_ms": "1.00", "noop_p99_ms": "2.00", "delivered_per_s": "400", "send_p50_ms": "2.00",
			"e2e_p99_ms": "6.00", "max_rss_mb": "50", "cpu_ms_per_delivery": "1.500", "callers": "64",
			"duration_s": "20", "notifier_rss_mb": "50", "postgres_rss_mb": "120", "bench_rss_mb": "90",
			"notifications": "4000", "lost": "0", "failed_calls": "0", "cpus": "2"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		if err := r.verdict(); err != nil {
			t.Errorf("verdict: %v", err)
		}
		r.noop.failures, r.noop.errors = 3, "Unavailable 3"
		if err := r.verdict(); err == nil || !strings.Contains(err.Error(), "no-op server") {
			t.Errorf("verdict with failed no-op calls: %v", err)
		}
	})

	t.Run("batch", func(t *testing.T) {
		// 3,000 of the 4,000 answered within the 60 s window.
		r := base("batch")
		r.inTime = 3000
		got := summaryOf(t, r)
		want := map[string]string{"mode": "batch", "accepted_per_s": "50", "delivered_per_s": "400",
			"cpu_ms_per_delivery": "1.500", "callers": "8", "batch_size": "100", "duration_s": "60", "workers_rss_mb": "40"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		for _, k := range []string{"noop_per_s", "ratio"} {
			if _, ok := got[k]; ok {
				t.Errorf("the batch line has %s", k)
			}
		}
	})

	t.Run("count keeps its fields", func(t *testing.T) {
		r := base("count")
		r.cfg.mode = "count"
		got := summaryOf(t, r)
		var keys []string
		for _, f := range strings.Fields(strings.TrimPrefix(r.summary(), "bench: ")) {
			k, _, _ := strings.Cut(f, "=")
			keys = append(keys, k)
		}
		want := "mode accepted_per_s delivered_per_s send_p50_ms send_p95_ms send_p99_ms e2e_p50_ms e2e_p99_ms max_rss_mb cpu_ms_per_delivery" +
			" notifications deliveries delivered lost duplicates failed_calls provider_latency_ms cpus other_cores"
		if strings.Join(keys, " ") != want {
			t.Errorf("count fields\n%s\nwant\n%s", strings.Join(keys, " "), want)
		}
		if got["cpu_ms_per_delivery"] != "1.500" {
			t.Errorf("cpu_ms_per_delivery = %q, want 1.500", got["cpu_ms_per_delivery"])
		}
	})

	t.Run("backlog counts the queueing CPU", func(t *testing.T) {
		r := base("backlog")
		r.queueCores = []usage{{name: "notifier", cpu: 2}}
		if got := summaryOf(t, r)["cpu_ms_per_delivery"]; got != "2.000" {
			t.Errorf("cpu_ms_per_delivery = %q, want 2.000 (8 CPU seconds, 4,000 deliveries)", got)
		}
	})

	t.Run("nothing delivered", func(t *testing.T) {
		r := base("batch")
		r.delivered = 0
		if got := summaryOf(t, r)["cpu_ms_per_delivery"]; got != "0.000" {
			t.Errorf("cpu_ms_per_delivery = %q, want 0.000", got)
		}
	})
}
