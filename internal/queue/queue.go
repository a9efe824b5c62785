// Package queue defines Herald's JetStream topology: one work-queue stream per channel
// (subject notify.<channel>) and one durable pull consumer per channel, shared by the notifier
// (which publishes) and the workers (which consume). A message is a batch of delivery ids, the
// deliveries of one channel that one commit created (or that the reconciler found due): the
// deliveries themselves live in PostgreSQL, which is the system of record, so a lost or
// repeated message costs a delay or a no-op, never a notification, and the queue's cost is
// paid per batch, not per delivery.
package queue

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
)

// Subject returns the subject deliveries of channel ch are published on.
func Subject(ch delivery.Channel) string { return "notify." + string(ch) }

// Stream returns the name of channel ch's stream.
func Stream(ch delivery.Channel) string { return "NOTIFY_" + strings.ToUpper(string(ch)) }

// Consumer returns the name of channel ch's durable consumer.
func Consumer(ch delivery.Channel) string { return "workers-" + string(ch) }

// StreamConfig tunes the streams. Zero values take the defaults.
type StreamConfig struct {
	// Replicas is the stream's replication factor: 1 for one server, 3 in production clusters.
	Replicas int
	// MaxMsgs bounds each stream; when full, publishes fail (Discard: New) and the reconciler
	// publishes again later, so a full stream delays deliveries instead of dropping them.
	MaxMsgs int64
	// Duplicates is the Nats-Msg-Id de-duplication window.
	Duplicates time.Duration
}

// Default stream settings.
const (
	DefaultMaxMsgs    = 10_000_000
	DefaultDuplicates = 2 * time.Minute
)

// EnsureStreams creates each channel's stream, or updates it to cfg. It is idempotent and safe to
// run from every replica at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxMsgs == 0 {
		cfg.MaxMsgs = DefaultMaxMsgs
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = DefaultDuplicates
	}
	for _, ch := range delivery.Channels {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        Stream(ch),
			Description: "Herald " + string(ch) + " deliveries (message body: delivery id)",
			Subjects:    []string{Subject(ch)},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardNew,
			MaxMsgs:     cfg.MaxMsgs,
			Duplicates:  cfg.Duplicates,
			Replicas:    cfg.Replicas,
		})
		if err != nil {
			return fmt.Errorf("ensure stream %s: %w", Stream(ch), err)
		}
	}
	return nil
}

// ConsumerConfig tunes a channel's durable consumer. Zero values take the defaults.
type ConsumerConfig struct {
	// AckWait is how long a worker may hold a message without acking (or signalling progress)
	// before the server delivers it again.
	AckWait time.Duration
	// MaxAckPending bounds the messages handed out and not yet acked, across all workers.
	MaxAckPending int
}

// Default consumer settings.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 20_000
)

// EnsureConsumer creates or updates channel ch's durable pull consumer and returns it.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, ch delivery.Channel, cfg ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = DefaultMaxAckPending
	}
	c, err := js.CreateOrUpdateConsumer(ctx, Stream(ch), jetstream.ConsumerConfig{
		Durable:       Consumer(ch),
		Description:   "Herald workers for " + string(ch),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		MaxDeliver:    -1, // PostgreSQL counts attempts; the queue never drops a message on its own
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", Consumer(ch), err)
	}
	return c, nil
}

// MaxBatch is the most delivery ids one message carries: 16 KiB of ids, far below the server's
// default payload limit (1 MiB), and one claim statement of reasonable size for a worker.
const MaxBatch = 1000

// batchFormat is the first byte of a batch body, so that the format can change without a
// reader mistaking one for another.
const batchFormat = 1

// EncodeBatch returns the body of a message that carries ids: a format byte, then each id's 16
// bytes. It panics on more than MaxBatch ids, a bug in the caller.
func EncodeBatch(ids []uuid.UUID) []byte {
	if len(ids) > MaxBatch {
		panic(fmt.Sprintf("queue: a batch of %d ids, more than %d", len(ids), MaxBatch))
	}
	b := make([]byte, 1, 1+16*len(ids))
	b[0] = batchFormat
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// ParseBatch returns the delivery ids a message carries, in order. A body that holds one
// delivery id as text, as messages did before batches, is a batch of one: messages queued by
// an older notifier are still delivered after an upgrade. Any other body is an error.
func ParseBatch(data []byte) ([]uuid.UUID, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty message body")
	}
	if data[0] != batchFormat {
		id, err := uuid.ParseBytes(data)
		if err != nil {
			return nil, fmt.Errorf("message body is neither a batch nor a delivery id: %w", err)
		}
		return []uuid.UUID{id}, nil
	}
	rest := data[1:]
	if len(rest) == 0 || len(rest)%16 != 0 || len(rest)/16 > MaxBatch {
		return nil, fmt.Errorf("batch body of %d bytes: want 1 to %d ids of 16 bytes", len(rest), MaxBatch)
	}
	ids := make([]uuid.UUID, len(rest)/16)
	for i := range ids {
		copy(ids[i][:], rest[16*i:])
	}
	return ids, nil
}
