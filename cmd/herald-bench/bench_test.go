package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// TestMain lets the test binary serve as the no-op server: the standard mode runs its own
// executable with the noop-server subcommand, and under go test that is this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == noopCommand {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs tiny benchmarks end to end, with the real binaries as processes, and checks
// that their summary lines parse and that every accepted notification was delivered.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the whole stack")
	}
	t.Run("count", func(t *testing.T) {
		lines := smoke(t, "--mode", "count", "-n", "200", "-c", "8", "--warmup", "50", "--timeout", "1m")
		if len(lines) != 1 {
			t.Fatalf("%d summary lines, want 1", len(lines))
		}
		got := lines[0]
		if got["mode"] != "count" {
			t.Errorf("mode = %q, want count", got["mode"])
		}
		positive(t, got, "accepted_per_s", "delivered_per_s", "send_p50_ms", "send_p95_ms", "send_p99_ms",
			"e2e_p50_ms", "e2e_p99_ms", "max_rss_mb", "cpu_ms_per_delivery")
		if num(t, got, "notifications") != 200 || num(t, got, "deliveries") != 200 {
			t.Errorf("notifications %d, deliveries %d: want 200 of each", num(t, got, "notifications"), num(t, got, "deliveries"))
		}
		allDelivered(t, got)
	})
	t.Run("standard", func(t *testing.T) {
		lines := smoke(t, "--mode", "standard", "-c", "8", "--warmup", "50", "--unary-duration", "2s",
			"--batch-duration", "3s", "--batch-callers", "2", "--batch-size", "20", "--timeout", "1m")
		if len(lines) != 2 || lines[0]["mode"] != "unary" || lines[1]["mode"] != "batch" {
			t.Fatalf("summary lines %v, want unary, then batch last", lines)
		}
		unary, batch := lines[0], lines[1]
		// How much a phase of a few seconds gets done depends on the machine: the figures must
		// be there and make sense, not be of any size.
		numbers(t, unary, "accepted_per_s", "noop_per_s", "ratio", "noop_p50_ms", "noop_p99_ms", "delivered_per_s",
			"send_p50_ms", "cpu_ms_per_delivery", "notifier_rss_mb", "postgres_rss_mb")
		numbers(t, batch, "accepted_per_s", "delivered_per_s", "send_p50_ms", "e2e_p50_ms", "e2e_p99_ms",
			"cpu_ms_per_delivery", "workers_rss_mb", "postgres_rss_mb")
		if _, ok := batch["noop_per_s"]; ok {
			t.Error("the batch line has noop_per_s")
		}
		if num(t, batch, "notifications")%20 != 0 {
			t.Errorf("batch notifications %d: want whole calls of 20", num(t, batch, "notifications"))
		}
		allDelivered(t, unary)
		allDelivered(t, batch)
	})
}

// smoke runs the benchmark with args and returns its summary lines, parsed; the last line of
// the output must be one.
func smoke(t *testing.T, args ...string) []map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, args, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "bench: ") {
		t.Fatalf("last line %q is not a summary", last)
	}
	var summaries []map[string]string
	for _, line := range lines {
		if strings.HasPrefix(line, "bench: ") {
			summaries = append(summaries, parseSummary(t, line))
		}
	}
	return summaries
}

// parseSummary reads a summary line's key=value fields.
func parseSummary(t *testing.T, line string) map[string]string {
	t.Helper()
	fields, ok := strings.CutPrefix(line, "bench: ")
	if !ok {
		t.Fatalf("%q is not a summary line", line)
	}
	got := map[string]string{}
	for _, f := range strings.Fields(fields) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("summary field %q is not key=value", f)
		}
		if _, dup := got[k]; dup {
			t.Errorf("summary field %q twice", k)
		}
		got[k] = v
	}
	return got
}

func positive(t *testing.T, got map[string]string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		v, err := strconv.ParseFloat(got[k], 64)
		if err != nil || v <= 0 {
			t.Errorf("%s = %q, want a positive number", k, got[k])
		}
	}
}

func numbers(t *testing.T, got map[string]string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		v, err := strconv.ParseFloat(got[k], 64)
		if err != nil || v < 0 {
			t.Errorf("%s = %q, want a number, not negative", k, got[k])
		}
	}
}

func num(t *testing.T, got map[string]string, k string) int {
	t.Helper()
	n, err := strconv.Atoi(got[k])
	if err != nil {
		t.Fatalf("%s = %q: %v", k, got[k], err)
	}
	return n
}

func allDelivered(t *testing.T, got map[string]string) {
	t.Helper()
	if num(t, got, "delivered") != num(t, got, "deliveries") || num(t, got, "deliveries") != num(t, got, "notifications") {
		t.Errorf("%s: notifications %d, deliveries %d, delivered %d: want one delivery each, all delivered", got["mode"],
			num(t, got, "notifications"), num(t, got, "deliveries"), num(t, got, "delivered"))
	}
	if num(t, got, "lost") != 0 || num(t, got, "duplicates") != 0 || num(t, got, "failed_calls") != 0 {
		t.Errorf("%s: lost %d, duplicates %d, failed calls %d: want none", got["mode"],
			num(t, got, "lost"), num(t, got, "duplicates"), num(t, got, "failed_calls"))
	}
}

func TestParseMixSpreadsChannels(t *testing.T) {
	cycle, err := parseMix("email=2,sms=1,ios=1")
	if err != nil {
		t.Fatal(err)
	}
	want := []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS,
		heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_EMAIL}
	if len(cycle) != len(want) {
		t.Fatalf("cycle %v, want %v", cycle, want)
	}
	count := map[heraldv1.Channel]int{}
	for i, ch := range cycle {
		count[ch]++
		if i > 0 && ch == cycle[i-1] {
			t.Errorf("cycle %v repeats a channel back to back", cycle)
		}
	}
	if count[heraldv1.Channel_CHANNEL_EMAIL] != 2 || count[heraldv1.Channel_CHANNEL_SMS] != 1 || count[heraldv1.Channel_CHANNEL_IOS] != 1 {
		t.Errorf("cycle %v, want email twice and sms and ios once", cycle)
	}
	for _, bad := range []string{"", "email", "fax=1", "email=-1", "email=0"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) = nil error", bad)
		}
	}
}

func TestPhonesAreUniqueAndKeysDoNotCollide(t *testing.T) {
	seen := map[key]int64{}
	for _, i := range []int64{0, 1, 9_999, 10_000, 7_999_999, 8_000_000, 55_999_999} {
		p := phone(i)
		k, ok := phoneKey(p)
		if !ok {
			t.Fatalf("phone(%d) = %q: no key", i, p)
		}
		if j, dup := seen[k]; dup {
			t.Errorf("phone(%d) and phone(%d) share the key of %q", i, j, p)
		}
		seen[k] = i
		if k[6]&0xf0 == 0x70 {
			t.Errorf("phone key %x looks like a UUIDv7", k)
		}
	}
}

func TestTrackerMatchesEitherOrder(t *testing.T) {
	start := time.Now()
	tr := newTracker(start)
	a, _ := idKey("01a21b56-ea68-79c0-920c-42349167e4d2")
	b, _ := phoneKey("+12122000001")
	tr.Accept(a, start.Add(10*time.Millisecond))
	tr.Receive(a, start.Add(25*time.Millisecond))
	tr.Receive(b, start.Add(30*time.Millisecond)) // the fake before the Send's answer
	if tr.Strays() != 1 || tr.Delivered.Load() != 1 {
		t.Fatalf("strays %d, delivered %d before b's answer; want 1 and 1", tr.Strays(), tr.Delivered.Load())
	}
	tr.Accept(b, start.Add(31*time.Millisecond))
	tr.Receive(a, start.Add(40*time.Millisecond))
	if tr.Delivered.Load() != 2 || tr.Queued.Load() != 2 || tr.Duplicates.Load() != 1 || tr.Strays() != 0 {
		t.Errorf("delivered %d, queued %d, duplicates %d, strays %d; want 2, 2, 1, 0",
			tr.Delivered.Load(), tr.Queued.Load(), tr.Duplicates.Load(), tr.Strays())
	}
	lat := tr.E2E()
	slices.Sort(lat)
	if len(lat) != 2 || lat[0] != 0 || lat[1] != int64(15*time.Millisecond) {
		t.Errorf("latencies %v, want [0 15ms]", lat)
	}
}
