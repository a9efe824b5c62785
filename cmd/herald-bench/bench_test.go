package main

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// TestSmoke runs a tiny count-mode benchmark end to end, with the real binaries as processes,
// and checks that its summary line parses and that every accepted notification was delivered.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the whole stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"--mode", "count", "-n", "200", "-c", "8", "--warmup", "50", "--timeout", "1m"}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	fields, ok := strings.CutPrefix(last, "bench: ")
	if !ok {
		t.Fatalf("last line %q is not the summary", last)
	}
	got := map[string]string{}
	for _, f := range strings.Fields(fields) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("summary field %q is not key=value", f)
		}
		got[k] = v
	}
	if got["mode"] != "count" {
		t.Errorf("mode = %q, want count", got["mode"])
	}
	for _, k := range []string{"accepted_per_s", "delivered_per_s", "send_p50_ms", "send_p95_ms", "send_p99_ms",
		"e2e_p50_ms", "e2e_p99_ms", "max_rss_mb"} {
		v, err := strconv.ParseFloat(got[k], 64)
		if err != nil || v <= 0 {
			t.Errorf("%s = %q, want a positive number", k, got[k])
		}
	}
	num := func(k string) int {
		n, err := strconv.Atoi(got[k])
		if err != nil {
			t.Fatalf("%s = %q: %v", k, got[k], err)
		}
		return n
	}
	if num("notifications") != 200 || num("deliveries") != 200 || num("delivered") != num("deliveries") {
		t.Errorf("notifications %d, deliveries %d, delivered %d: want 200 of each",
			num("notifications"), num("deliveries"), num("delivered"))
	}
	if num("lost") != 0 || num("duplicates") != 0 || num("failed_calls") != 0 {
		t.Errorf("lost %d, duplicates %d, failed calls %d: want none", num("lost"), num("duplicates"), num("failed_calls"))
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
