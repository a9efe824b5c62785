package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/delivery/postgres"
	"github.com/heraldhq/herald/internal/pgdb"
)

// Contents of the benchmarks' deliveries: an email with a rendered body of about a kilobyte,
// and the one-time code of the workers' benchmark before it moved here.
var (
	shipped = func() delivery.Content {
		html := "<p>" + strings.Repeat("Your order has shipped and is on its way. ", 24) + "</p>"
		return delivery.Content{Subject: "Your order shipped", HTML: html, Text: html[3 : len(html)-4],
			Data: map[string]any{"order": "A-1234", "items": 3.0}}
	}()
	code = delivery.Content{
		Subject: "Your code",
		Text:    "Your code is 123456",
		HTML:    "<p>Your code is <b>123456</b></p>",
		Data:    map[string]any{"code": "123456", "nested": map[string]any{"n": 2.5, "ok": true}},
	}
)

// benchDeliveries returns n new queued email deliveries of one notification, as the notifier
// makes them.
func benchDeliveries(n int, c delivery.Content) []delivery.Delivery {
	now := time.Now()
	notification := uuid.Must(uuid.NewV7())
	ds := make([]delivery.Delivery, n)
	for i := range ds {
		id := uuid.Must(uuid.NewV7())
		ds[i] = delivery.Delivery{
			ID: id, NotificationID: notification, UserID: "user-" + id.String()[24:], Channel: delivery.Email,
			To: "ada-" + id.String()[24:] + "@example.com", Category: "account", Priority: delivery.Normal,
			DefaultOptIn: true, State: delivery.Queued, Content: c,
			DueAt: &now, ExpiresAt: now.Add(delivery.DefaultTTL), CreatedAt: now,
		}
	}
	return ds
}

// BenchmarkCreate stores 1,000 deliveries of a kilobyte an op: with COPY, as Create does, and with the other
// way of one round trip for many rows, an INSERT whose parameters are an array per column
// (unnest). The deliveries are made with the timer stopped; -benchmem counts the client's work
// of encoding them.
func BenchmarkCreate(b *testing.B) {
	const n = 1000
	for _, bc := range []struct {
		name   string
		create func(ctx context.Context, s *postgres.Store, db postgres.DB, ds []delivery.Delivery) error
	}{
		{"copy", func(ctx context.Context, s *postgres.Store, _ postgres.DB, ds []delivery.Delivery) error {
			return s.Create(ctx, ds)
		}},
		{"unnest", func(ctx context.Context, _ *postgres.Store, db postgres.DB, ds []delivery.Delivery) error {
			return insertUnnest(ctx, db, ds)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, pool := newStore(b)
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				ds := benchDeliveries(n, shipped)
				b.StartTimer()
				if err := bc.create(ctx, s, pool, ds); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/delivery")
		})
	}
}

// insertUnnest stores ds as Create does, in one INSERT whose parameters are an array per
// column.
func insertUnnest(ctx context.Context, db postgres.DB, ds []delivery.Delivery) error {
	n := len(ds)
	ids, notifications := make([]uuid.UUID, n), make([]uuid.UUID, n)
	users := make([]*string, n)
	channels, addresses, categories, priorities := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	critical, optIn := make([]bool, n), make([]bool, n)
	states, reasons := make([]string, n), make([]string, n)
	contents := make([][]byte, n)
	dues := make([]*time.Time, n)
	expires, created := make([]time.Time, n), make([]time.Time, n)
	for i := range ds {
		d := &ds[i]
		c, err := json.Marshal(d.Content)
		if err != nil {
			return err
		}
		ids[i], notifications[i], contents[i] = d.ID, d.NotificationID, c
		if d.UserID != "" {
			users[i] = &d.UserID
		}
		channels[i], addresses[i], categories[i], priorities[i] = string(d.Channel), d.To, d.Category, string(d.Priority)
		critical[i], optIn[i], states[i], reasons[i] = d.Critical, d.DefaultOptIn, string(d.State), d.Reason
		dues[i], expires[i], created[i] = d.DueAt, d.ExpiresAt, d.CreatedAt
	}
	_, err := db.Exec(ctx, `
		INSERT INTO delivery.deliveries (id, notification_id, user_id, channel, address, category, priority,
			critical, default_opt_in, state, reason, content, due_at, expires_at, created_at, updated_at)
		SELECT u.*, u.created_at FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::bool[], $9::bool[], $10::text[], $11::text[], $12::jsonb[], $13::timestamptz[],
			$14::timestamptz[], $15::timestamptz[])
			AS u(id, notification_id, user_id, channel, address, category, priority, critical, default_opt_in,
				state, reason, content, due_at, expires_at, created_at)`,
		ids, notifications, users, channels, addresses, categories, priorities, critical, optIn, states, reasons,
		contents, dues, expires, created)
	return pgdb.Err(err)
}

// BenchmarkClaimAndRecord is the workers' database work for one delivery: claimed in a batch
// of 64, then its outcome recorded in a batch of 64, on a real PostgreSQL (fsync off, as in
// every test). The deliveries are created with the timer stopped.
func BenchmarkClaimAndRecord(b *testing.B) {
	const batch = 64
	s, _ := newStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		ds := benchDeliveries(batch, code)
		if err := s.Create(ctx, ds); err != nil {
			b.Fatal(err)
		}
		ids := make([]uuid.UUID, batch)
		for i := range ds {
			ids[i] = ds[i].ID
		}
		b.StartTimer()
		claimed, err := s.Claim(ctx, "worker-a", 10*time.Minute, ids)
		if err != nil || len(claimed) != batch {
			b.Fatalf("Claim = %d deliveries, %v", len(claimed), err)
		}
		as := make([]delivery.Attempt, len(claimed))
		for i, d := range claimed {
			as[i] = delivery.Attempt{DeliveryID: d.ID, Attempt: d.Attempts, Drive: d.Drive, State: delivery.Sent,
				Provider: "fake", ProviderMessageID: "pm-" + d.ID.String(), Started: time.Now(), Latency: 2500 * time.Microsecond}
		}
		if err := s.Record(ctx, "worker-a", as); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "µs/delivery")
}

// BenchmarkDigest collects 10 items of a kilobyte into each of 100 recipients' digests (one
// Create of 1,000 items, as a group commit would), then closes the 100 digests, one at a time
// or 8 at once (as the notifier's reconciler does): an op is the whole round, and items/s
// counts the items collected and digested.
func BenchmarkDigest(b *testing.B) {
	const users, per = 100, 10
	for _, parallel := range []int{1, 8} {
		b.Run(fmt.Sprintf("closes=%d", parallel), func(b *testing.B) {
			s, _ := newStore(b)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				now := time.Now()
				var ds []delivery.Delivery
				for range users {
					user := "user-" + uuid.Must(uuid.NewV7()).String()[24:]
					for _, d := range benchDeliveries(per, shipped) {
						d.UserID, d.To, d.State, d.Reason = user, user+"@example.com", delivery.Scheduled, delivery.ReasonDigest
						d.DueAt = &d.ExpiresAt
						d.Digest = &delivery.DigestItem{Template: "t", CloseAt: now}
						ds = append(ds, d)
					}
				}
				b.StartTimer()
				if err := s.Create(ctx, ds); err != nil {
					b.Fatal(err)
				}
				due, err := s.DueDigests(ctx, now, users)
				if err != nil || len(due) != users {
					b.Fatalf("due digests: %d, %v", len(due), err)
				}
				slots := make(chan struct{}, parallel)
				var wg sync.WaitGroup
				for _, g := range due {
					slots <- struct{}{}
					wg.Go(func() {
						defer func() { <-slots }()
						made, err := s.CloseDigest(ctx, g.ID, now, func(g delivery.DigestRecord, items []delivery.Delivery) (*delivery.Delivery, error) {
							d := items[0]
							d.ID, d.NotificationID, d.State, d.Reason, d.Digest, d.DigestID = uuid.Must(uuid.NewV7()), g.ID, delivery.Queued, "", nil, uuid.Nil
							return &d, nil
						})
						if err != nil || made == nil {
							b.Errorf("close: %v", err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*users*per)/b.Elapsed().Seconds(), "items/s")
			b.ReportMetric(float64(b.N*users)/b.Elapsed().Seconds(), "digests/s")
		})
	}
}
