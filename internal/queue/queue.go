// Package queue defines Herald's JetStream topology: one work-queue stream per channel
// (subject notify.<channel>) and one durable pull consumer per channel, shared by the notifier
// (which publishes) and the workers (which consume). A message is only a delivery id: the
// delivery itself lives in PostgreSQL, which is the system of record, so a lost or repeated
// message costs a delay or a no-op, never a notification.
package queue

import (
	"context"
	"fmt"
	"strconv"
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

// MsgID returns the Nats-Msg-Id for the n-th publish of a delivery (n from 0). The first
// publish uses the bare delivery id, so a publish retried by the client is stored once; each
// deliberate re-publish (reconciler, re-drive) has its own id, so the de-duplication window
// cannot swallow it.
func MsgID(id uuid.UUID, n int) string {
	if n == 0 {
		return id.String()
	}
	return id.String() + "/" + strconv.Itoa(n)
}

// ParseBody returns the delivery id a message carries.
func ParseBody(data []byte) (uuid.UUID, error) {
	id, err := uuid.ParseBytes(data)
	if err != nil {
		return uuid.Nil, fmt.Errorf("message body is not a delivery id: %w", err)
	}
	return id, nil
}
