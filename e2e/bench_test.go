package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSend measures the accept path alone (no workers): Send of an email to a raw address,
// from parallel clients, against the in-process notifier and contacts services and a private
// PostgreSQL with fsync on. The end-to-end benchmark is cmd/herald-bench.
func BenchmarkSend(b *testing.B) {
	s := startStack(b, stackOptions{noWorkers: true, republishAfter: 10 * 60e9})
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.notify.Send(ctx, emailRequest(fmt.Sprintf("u%d@example.com", n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHTTPSend is BenchmarkSend over the HTTP/JSON API: the same Sends, as JSON over
// HTTP/1.1 with keep-alive, through grpc-gateway and the in-memory gRPC connection. The
// difference from BenchmarkSend is what the JSON API costs a caller.
func BenchmarkHTTPSend(b *testing.B) {
	s := startStack(b, stackOptions{noWorkers: true, republishAfter: 10 * 60e9})
	url := "http://" + s.notifier.HTTPAddr() + "/v1/notifications:send"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var n atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Sprintf(`{"recipient":{"address":{"email":"u%d@example.com"}},"category":"account",`+
				`"content":{"subject":"Your receipt","body":"Thanks for your order.","html":"<p>Thanks for your order.</p>"}}`, n.Add(1))
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.key)
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				b.Errorf("HTTP %d", res.StatusCode)
				return
			}
		}
	})
}

// BenchmarkEndToEnd measures accept to provider: b.N emails sent from parallel clients and
// delivered by in-process workers to the SendGrid fake, timed until the last one is sent.
func BenchmarkEndToEnd(b *testing.B) {
	s := startStack(b, stackOptions{republishAfter: 10 * 60e9})
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.notify.Send(ctx, emailRequest(fmt.Sprintf("u%d@example.com", n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for len(s.fake.Messages()) < b.N {
		time.Sleep(10 * time.Millisecond)
	}
}
