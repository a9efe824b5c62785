package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/coherent"
	"github.com/heraldhq/herald/internal/delivery"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
	ncontacts "github.com/heraldhq/herald/services/notifier/contacts"
	"github.com/heraldhq/herald/services/workers"
	wcontacts "github.com/heraldhq/herald/services/workers/contacts"
)

// The benchmarks of the notifier's Directory.Resolve and the workers' Gate.Check, reading the
// real contacts service (in-process, private PostgreSQL) through their caches:
//   - hit: a known user and an address never suppressed, from 64 concurrent callers, each
//     lookup beginning anew, so each round of lookups waits for one poll of the change feed (a
//     ListChanges call, at most one a millisecond): ns/op is the throughput's inverse;
//   - hit-no-wait: the same with the poll already done (a lookup that began before the last
//     poll), which is the CPU of answering from memory alone;
//   - miss: a user never looked up, so every lookup needs a ResolveRecipients call (shared by
//     the concurrent ones).
// calls/op counts the calls to the contacts service of every kind.

// benchStack starts a stack without workers, with the user "bench" (an email address, no
// suppression).
func benchStack(b *testing.B) (*stack, *prometheus.Registry) {
	s := startStack(b, stackOptions{noWorkers: true, republishAfter: 10 * time.Minute})
	if _, err := s.people.UpsertUser(context.Background(), &heraldv1.UpsertUserRequest{User: &heraldv1.User{
		UserId: "bench", Email: "bench@example.com"}}); err != nil {
		b.Fatal(err)
	}
	return s, prometheus.NewRegistry()
}

func reportCalls(b *testing.B, reg *prometheus.Registry, before float64) {
	b.ReportMetric((cacheMetric(b, reg, "herald_contacts_cache_calls_total", "")-before)/float64(b.N), "calls/op")
}

func BenchmarkDirectoryResolve(b *testing.B) {
	s, reg := benchStack(b)
	dir := ncontacts.New(dial(b, s.contacts.GRPCAddr(), s.contactsKey), reg)
	b.Cleanup(dir.Close)
	raw := []notifier.Target{{Channel: delivery.Email, Address: "never@example.com"}}
	resolve := func(ctx context.Context, id string) {
		r, err := dir.Resolve(ctx, []string{id}, raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := r.Users[id]; ok != (id == "bench") {
			b.Fatalf("Resolve(%s) = %+v", id, r.Users)
		}
	}
	resolve(context.Background(), "bench") // fills the cache and starts loading the set
	waitForSet(b, reg)

	past := coherent.WithBegan(context.Background(), time.Now().Add(-time.Hour))
	for _, c := range []struct {
		name string
		ids  func(n int) []string
		ctx  context.Context
	}{
		{"hit", func(n int) []string { return slices.Repeat([]string{"bench"}, n) }, context.Background()},
		{"hit-no-wait", func(n int) []string { return slices.Repeat([]string{"bench"}, n) }, past},
		{"miss", func(n int) []string {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("nobody-%d-%d", n, i)
			}
			return ids
		}, context.Background()},
	} {
		b.Run(c.name, func(b *testing.B) {
			ids := c.ids(b.N)
			var n atomic.Int64
			before := cacheMetric(b, reg, "herald_contacts_cache_calls_total", "")
			b.ReportAllocs()
			b.SetParallelism(64)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resolve(c.ctx, ids[n.Add(1)-1])
				}
			})
			b.StopTimer()
			reportCalls(b, reg, before)
		})
	}
}

// BenchmarkGateCheck checks a batch of 16 messages, as the workers do before sending them: all
// to one known user (hit), or each to a user never looked up (miss).
func BenchmarkGateCheck(b *testing.B) {
	s, reg := benchStack(b)
	gate := wcontacts.New(dial(b, s.contacts.GRPCAddr(), s.key), reg)
	b.Cleanup(gate.Close)
	batch := func(user func(i int) string) []*workers.Message {
		msgs := make([]*workers.Message, 16)
		for i := range msgs {
			msgs[i] = &workers.Message{DeliveryID: uuid.New(), Channel: delivery.Email, To: "bench@example.com",
				UserID: user(i), Category: "account", DefaultOptIn: true}
		}
		return msgs
	}
	known := batch(func(int) string { return "bench" })
	if skip, err := gate.Check(context.Background(), known); err != nil || len(skip) != 0 {
		b.Fatalf("Check = %v, %v", skip, err)
	}
	waitForSet(b, reg)
	for _, c := range []struct {
		name    string
		batches func(n int) [][]*workers.Message
	}{
		{"hit", func(n int) [][]*workers.Message { return slices.Repeat([][]*workers.Message{known}, n) }},
		{"miss", func(n int) [][]*workers.Message {
			out := make([][]*workers.Message, n)
			for k := range out {
				out[k] = batch(func(i int) string { return fmt.Sprintf("nobody-%d-%d-%d", n, k, i) })
			}
			return out
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			batches := c.batches(b.N)
			var n atomic.Int64
			before := cacheMetric(b, reg, "herald_contacts_cache_calls_total", "")
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := gate.Check(context.Background(), batches[n.Add(1)-1]); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			reportCalls(b, reg, before)
		})
	}
}
