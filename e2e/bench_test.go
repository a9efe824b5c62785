package e2e

import (
	"context"
	"fmt"
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
