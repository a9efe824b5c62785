package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	notifierd "github.com/heraldhq/herald/services/notifier/daemon"
)

// BenchmarkRedirect measures GET /l/{code} on a notifier with short links on: b.N redirects
// of 2,000 links from 16 keep-alive connections over loopback, every one of them recorded as a
// click in PostgreSQL (the dedupe window is 1 ns, so that no click is dropped as a repeat). The
// load generator shares the machine's cores with the notifier and PostgreSQL. It reports
// redirects/s and the p50 and p99 latency, and that every click reached the clicks table's
// writer (clicks_counted = b.N).
func BenchmarkRedirect(b *testing.B) {
	s := startStack(b, stackOptions{noWorkers: true, republishAfter: 10 * time.Minute,
		links: &notifierd.LinksConfig{Key: "bench short link key, 16+ bytes", BaseURL: linksBase, Retention: time.Hour,
			Rate: 1e9, Burst: 1e9, Window: time.Nanosecond, Prefetch: -1, FlushInterval: 50 * time.Millisecond}})
	codes := makeLinks(b, s, 2000)

	const conns = 16
	var next atomic.Int64
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range conns {
		wg.Go(func() {
			conn, err := net.Dial("tcp", s.notifier.HTTPAddr())
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				t0 := time.Now()
				fmt.Fprintf(conn, "GET /l/%s HTTP/1.1\r\nHost: links.test\r\nUser-Agent: %s\r\n\r\n", codes[i%int64(len(codes))], browserUA)
				res, err := http.ReadResponse(r, nil)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusFound {
					b.Errorf("redirect: %s", res.Status)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(float64(len(all)-1)*p)]) / 1e6 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "redirects/s")
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")

	// Every click is written (or judged a repeat within the same microsecond) by the Recorder.
	deadline := time.Now().Add(time.Minute)
	counted := clicksCounted(b, s)
	for ; counted < float64(b.N); counted = clicksCounted(b, s) {
		if time.Now().After(deadline) {
			b.Fatalf("%v of %d clicks written after a minute", counted, b.N)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ReportMetric(counted, "clicks_counted")
}

// makeLinks sends n SMS with a link each and returns their codes.
func makeLinks(b *testing.B, s *stack, n int) []string {
	ctx := context.Background()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				_, err := s.notify.Send(ctx, &heraldv1.SendRequest{
					Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_Address{Address: &heraldv1.Address{Phone: fmt.Sprintf("+1415555%04d", i)}}},
					Category:  "account",
					Message: &heraldv1.SendRequest_Content{Content: &heraldv1.Content{
						Body: fmt.Sprintf("Your order shipped: https://shop.example.com/orders/%d?ref=sms", i)}},
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rows, err := s.pool.Query(ctx, `SELECT content->>'body' FROM delivery.deliveries`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	code := regexp.MustCompile(`/l/([0-9A-Za-z]{11})`)
	var codes []string
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			b.Fatal(err)
		}
		if m := code.FindStringSubmatch(body); m != nil {
			codes = append(codes, m[1])
		}
	}
	if len(codes) != n {
		b.Fatalf("%d codes, want %d", len(codes), n)
	}
	return codes
}

// clicksCounted sums herald_link_clicks_total over its series.
func clicksCounted(b *testing.B, s *stack) float64 {
	res, err := http.Get("http://" + s.notifier.HTTPAddr() + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "herald_link_clicks_total{") || strings.Contains(line, `kind="dropped"`) {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			sum += v
		}
	}
	return sum
}
