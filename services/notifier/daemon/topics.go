package daemon

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/services/notifier"
	"github.com/heraldhq/herald/services/notifier/contacts"
	"github.com/heraldhq/herald/services/notifier/postgres"
)

// TopicsConfig configures the fan-out of topic sends (notifier.Topics).
type TopicsConfig struct {
	// Lease is how long a replica holds a topic send without renewing it: after a crash,
	// another replica (or this one restarted) takes it over once it expires.
	Lease time.Duration
	// NoFanout keeps this replica from fanning topic sends out (it still accepts them), for
	// deployments that fan out on replicas of their own.
	NoFanout bool
}

// RegisterFlags binds c's fields to flags with their defaults.
func (c *TopicsConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.NoFanout, "no-topic-fanout", false, "accept topic sends but leave their fan-out to other replicas")
	fs.DurationVar(&c.Lease, "topic-lease", 30*time.Second, "how long a replica holds a topic send's fan-out without renewing it (a crashed replica's is taken over after this)")
}

// startTopics wires SendToTopic and its fan-out; nil without a contacts service, which lists
// the subscribers.
func (d *Daemon) startTopics(cfg Config, store *postgres.Store, sender *notifier.Sender, log *slog.Logger) *notifier.Topics {
	if d.contacts == nil {
		return nil
	}
	host, _ := os.Hostname()
	return notifier.NewTopics(notifier.Topics{
		Sender: sender, Store: store, Subscribers: contacts.NewSubscribers(d.contacts), Log: log,
		Owner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()), Lease: cfg.Topics.Lease,
		Metrics: d.srv.Metrics,
	})
}
