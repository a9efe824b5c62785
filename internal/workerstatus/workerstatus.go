// Package workerstatus shares each workers process's state with the notifier, which shows it
// to operators: every few seconds each process writes, per channel, its provider circuit's
// state and how many sends it made and failed so far to a JetStream key-value bucket; entries of
// processes that stopped writing age out. The notifier turns the counts into rates.
package workerstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket holding the reports.
const Bucket = "HERALD_WORKERS"

// TTL is how long a state stays without being written again.
const TTL = time.Minute

// State is one channel of one workers process.
type State struct {
	Channel  string `json:"channel"`
	Provider string `json:"provider"`
	Worker   string `json:"worker"`
	// Circuit is "closed", "open" or "half-open".
	Circuit string `json:"circuit"`
	// Sent and Failed count provider calls since the process started.
	Sent    int64     `json:"sent"`
	Failed  int64     `json:"failed"`
	Updated time.Time `json:"updated"`
	// Routes are the channel's credentials in failover order, when it has several (a providers
	// file): each with its own circuit, and the one that last took a message marked active.
	Routes []Route `json:"routes,omitempty"`
}

// Route is one credential of a channel with several.
type Route struct {
	Provider string `json:"provider"` // provider/name, e.g. "sendgrid/primary"
	Circuit  string `json:"circuit"`
	Active   bool   `json:"active,omitempty"`
}

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	if replicas == 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Herald workers' channel reports", History: 1, TTL: TTL,
		Storage: jetstream.MemoryStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("worker status bucket: %w", err)
	}
	return kv, nil
}

func key(s State) string {
	clean := func(v string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '_'
		}, v)
	}
	return clean(s.Channel) + "." + clean(s.Worker)
}

// Put writes a state.
func Put(ctx context.Context, kv jetstream.KeyValue, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key(s), b)
	return err
}

// List returns every state written within the TTL.
func List(ctx context.Context, kv jetstream.KeyValue) ([]State, error) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []State
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var s State
		if json.Unmarshal(e.Value(), &s) == nil {
			out = append(out, s)
		}
	}
	return out, nil
}
