// Package consumer runs one channel's worker loop: it pulls delivery ids from the channel's
// JetStream consumer, claims them in batches, calls the provider with bounded concurrency,
// records the outcomes in batches, and only then acknowledges the messages.
//
// The stages are joined by channels, and each stage takes whatever has piled up since its last
// round as one batch, so the database sees one claim and one record statement per batch while a
// lone message still goes straight through.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/services/workers"
)

// Config is one channel's consumer.
type Config struct {
	Channel  delivery.Channel
	Sender   workers.Sender
	Store    workers.Store
	Policy   workers.Policy
	WorkerID string
	// Concurrency is how many provider calls may be in flight at once.
	Concurrency int
	// BatchSize bounds one claim or record statement.
	BatchSize int
	// Lease is how long a claim lasts; a worker that dies leaves its deliveries to others after
	// this long. It must exceed SendTimeout.
	Lease time.Duration
	// SendTimeout bounds one provider call.
	SendTimeout time.Duration
	// AckWait is the JetStream consumer's ack wait.
	AckWait time.Duration
	// Gate, when set, re-checks each batch against the recipients' settings before sending.
	Gate workers.Gate
	// Announcer, when set, publishes what provider answers mean for addresses.
	Announcer workers.Announcer
	// Unsubscribe, when set, adds List-Unsubscribe links to emails.
	Unsubscribe *workers.UnsubscribeLinks
	Log         *slog.Logger
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 15 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 4 * c.SendTimeout
	}
	if c.Policy.MaxAttempts <= 0 {
		c.Policy = workers.DefaultPolicy
	}
}

// Consumer is a running channel loop.
type Consumer struct {
	cfg      Config
	cc       jetstream.ConsumeContext
	in       chan jetstream.Msg
	work     chan job
	done     chan result
	slots    chan struct{}
	stopping chan struct{}
	wg       sync.WaitGroup
	recorded sync.WaitGroup
}

type job struct {
	msg jetstream.Msg
	m   *workers.Message
}

type result struct {
	msg jetstream.Msg
	a   workers.Attempt
}

// Start ensures the channel's durable consumer and starts pulling from it.
func Start(ctx context.Context, js jetstream.JetStream, cfg Config) (*Consumer, error) {
	cfg.defaults()
	cons, err := queue.EnsureConsumer(ctx, js, cfg.Channel, queue.ConsumerConfig{AckWait: cfg.AckWait})
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:      cfg,
		in:       make(chan jetstream.Msg),
		work:     make(chan job, cfg.Concurrency),
		done:     make(chan result, cfg.BatchSize),
		slots:    make(chan struct{}, cfg.Concurrency),
		stopping: make(chan struct{}),
	}
	c.cc, err = cons.Consume(c.receive,
		jetstream.PullMaxMessages(max(2*cfg.Concurrency, 64)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			cfg.Log.Warn("consume", "channel", cfg.Channel, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", cfg.Channel, err)
	}
	c.wg.Add(1)
	go c.claimLoop()
	for range cfg.Concurrency {
		c.wg.Add(1)
		go c.sendLoop()
	}
	c.recorded.Add(1)
	go c.recordLoop()
	return c, nil
}

// receive hands a message to the claimer, or gives it back to the server at once when the
// consumer is stopping.
func (c *Consumer) receive(msg jetstream.Msg) {
	select {
	case c.in <- msg:
	case <-c.stopping:
		msg.Nak()
	}
}

// claimLoop waits for a free send slot and a message, takes whatever more is ready as one batch,
// claims the batch and hands the claimed deliveries to the senders. A claim starts a lease, so
// nothing is claimed before a sender is free to send it.
func (c *Consumer) claimLoop() {
	defer c.wg.Done()
	defer close(c.work)
	for {
		select {
		case c.slots <- struct{}{}:
		case <-c.stopping:
			return
		}
		var batch []jetstream.Msg
		select {
		case msg := <-c.in:
			batch = append(batch, msg)
		case <-c.stopping:
			<-c.slots
			return
		}
	more:
		for len(batch) < c.cfg.BatchSize {
			select {
			case c.slots <- struct{}{}:
			default:
				break more
			}
			select {
			case msg := <-c.in:
				batch = append(batch, msg)
			default:
				<-c.slots
				break more
			}
		}
		c.claim(batch)
	}
}

func (c *Consumer) claim(batch []jetstream.Msg) {
	ids := make([]uuid.UUID, 0, len(batch))
	byID := make(map[uuid.UUID]jetstream.Msg, len(batch))
	for _, msg := range batch {
		id, err := queue.ParseBody(msg.Data())
		if err != nil {
			c.cfg.Log.Error("dropping malformed message", "channel", c.cfg.Channel, "err", err)
			msg.TermWithReason("malformed delivery id")
			<-c.slots
			continue
		}
		if _, dup := byID[id]; dup { // two publishes of one delivery in one batch
			msg.Ack()
			<-c.slots
			continue
		}
		ids = append(ids, id)
		byID[id] = msg
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	claims, err := c.cfg.Store.Claim(ctx, c.cfg.WorkerID, c.cfg.Lease, ids)
	cancel()
	if err != nil {
		c.cfg.Log.Warn("claim failed; messages will come back", "channel", c.cfg.Channel, "count", len(ids), "err", err)
		for _, id := range ids {
			byID[id].NakWithDelay(time.Second)
			<-c.slots
		}
		return
	}
	var claimed []job
	for _, cl := range claims {
		msg := byID[cl.ID]
		switch cl.Status {
		case workers.Claimed:
			claimed = append(claimed, job{msg: msg, m: cl.Message}) // keeps its slot until sent
			continue
		case workers.Busy:
			msg.NakWithDelay(max(time.Until(cl.RetryAt), 0) + time.Second)
		case workers.Done:
			msg.Ack()
		}
		<-c.slots
	}
	c.dispatch(claimed)
}

// dispatch re-checks the claimed deliveries against the recipients' settings and hands the ones
// still wanted to the senders. If the check cannot be made, the claims are given back: an
// opt-out must not be missed for want of asking.
func (c *Consumer) dispatch(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	var skip map[uuid.UUID]string
	if c.cfg.Gate != nil {
		msgs := make([]*workers.Message, len(jobs))
		for i, j := range jobs {
			msgs[i] = j.m
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		skip, err = c.cfg.Gate.Check(ctx, msgs)
		if err != nil {
			c.cfg.Log.Warn("cannot re-check recipients; giving the deliveries back", "channel", c.cfg.Channel,
				"count", len(jobs), "err", err)
			ids := make([]uuid.UUID, len(jobs))
			for i, j := range jobs {
				ids[i] = j.m.DeliveryID
			}
			if err := c.cfg.Store.Release(ctx, c.cfg.WorkerID, ids); err != nil {
				c.cfg.Log.Warn("release failed; the leases will expire", "channel", c.cfg.Channel, "err", err)
			}
			cancel()
			for _, j := range jobs {
				j.msg.NakWithDelay(5 * time.Second)
				<-c.slots
			}
			return
		}
		cancel()
	}
	for _, j := range jobs {
		if reason, ok := skip[j.m.DeliveryID]; ok {
			<-c.slots
			c.cfg.Log.Info("skipped at send time", "delivery_id", j.m.DeliveryID, "channel", j.m.Channel, "reason", reason)
			c.done <- result{msg: j.msg, a: workers.Attempt{Message: j.m, Outcome: workers.OutcomeSkipped,
				Reason: reason, Started: time.Now()}}
			continue
		}
		c.cfg.Unsubscribe.Apply(j.m)
		c.work <- j
	}
}

// sendLoop calls the provider for claimed deliveries and passes the outcome to the recorder.
func (c *Consumer) sendLoop() {
	defer c.wg.Done()
	for j := range c.work {
		a := c.send(j.m)
		<-c.slots
		c.done <- result{msg: j.msg, a: a}
	}
}

func (c *Consumer) send(m *workers.Message) workers.Attempt {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.SendTimeout)
	defer cancel()
	start := time.Now()
	res, err := c.cfg.Sender.Send(ctx, m)
	a := workers.Attempt{Message: m, Provider: c.cfg.Sender.Provider(), Started: start, Latency: time.Since(start)}
	var retryAfter time.Duration
	a.Outcome, a.Reason, retryAfter = workers.Classify(err)
	if err != nil {
		a.Error = err.Error()
	}
	switch a.Outcome {
	case workers.OutcomeSent:
		a.ProviderMessageID = res.ProviderMessageID
	case workers.OutcomeFailed:
		var perm *workers.PermanentError
		if errors.As(err, &perm) {
			a.Effect, a.Since = perm.Effect, perm.Since
		}
	case workers.OutcomeRetry:
		if m.Attempt >= c.cfg.Policy.MaxAttempts {
			a.Dead = true
		} else {
			a.RetryAt = time.Now().Add(c.cfg.Policy.Backoff(m.Attempt, retryAfter, rand.Float64()))
		}
	}
	c.cfg.Log.Info("attempt", "delivery_id", m.DeliveryID, "channel", m.Channel, "attempt", m.Attempt,
		"provider", a.Provider, "outcome", outcomeName(a), "reason", a.Reason, "latency_ms", a.Latency.Milliseconds())
	return a
}

func outcomeName(a workers.Attempt) string {
	switch {
	case a.Outcome == workers.OutcomeSent:
		return "sent"
	case a.Outcome == workers.OutcomeFailed:
		return "failed"
	case a.Outcome == workers.OutcomeSkipped:
		return "skipped"
	case a.Dead:
		return "dead"
	}
	return "retry"
}

// recordLoop writes outcomes in batches and acknowledges their messages once written. If the
// database stays unreachable, the messages are left to come back: the lease then expires, and
// the delivery may be sent again (a duplicate, never a loss).
func (c *Consumer) recordLoop() {
	defer c.recorded.Done()
	for r := range c.done {
		batch := []result{r}
	more:
		for len(batch) < c.cfg.BatchSize {
			select {
			case r, ok := <-c.done:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.record(batch)
	}
}

func (c *Consumer) record(batch []result) {
	attempts := make([]workers.Attempt, len(batch))
	for i, r := range batch {
		attempts[i] = r.a
	}
	wait := 100 * time.Millisecond
	deadline := time.Now().Add(c.cfg.Lease / 2)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.cfg.Store.Record(ctx, c.cfg.WorkerID, attempts)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.cfg.Log.Error("cannot record outcomes; their deliveries will be retried", "channel", c.cfg.Channel,
				"count", len(batch), "err", err)
			for _, r := range batch {
				r.msg.Nak()
			}
			return
		}
		c.cfg.Log.Warn("record failed; retrying", "channel", c.cfg.Channel, "count", len(batch), "err", err)
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
	for _, r := range batch {
		if r.a.Effect != workers.NoEffect && c.cfg.Announcer != nil {
			c.announce(r.a)
		}
	}
	for _, r := range batch {
		if r.a.Outcome == workers.OutcomeRetry && !r.a.Dead {
			r.msg.NakWithDelay(time.Until(r.a.RetryAt))
		} else {
			r.msg.Ack()
		}
	}
}

// announce publishes an attempt's effect on its address, retrying briefly. A lost
// announcement costs an attempt on a dead address later, not a notification.
func (c *Consumer) announce(a workers.Attempt) {
	var err error
	for try := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = c.cfg.Announcer.Announce(ctx, a)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	c.cfg.Log.Error("cannot announce a provider's verdict on an address", "delivery_id", a.Message.DeliveryID,
		"effect", a.Effect, "err", err)
}

// Stop stops pulling, hands back messages not yet claimed, lets the provider calls in flight
// finish, records them, and returns once every message is answered.
func (c *Consumer) Stop() {
	close(c.stopping)
	// Drain, not Stop: Stop drops the messages already pulled into the client's buffer, which
	// the server then holds for a whole AckWait; Drain passes them to receive, which hands them
	// back at once.
	c.cc.Drain()
	<-c.cc.Closed()
	c.wg.Wait()
	close(c.done)
	c.recorded.Wait()
	// Anything the callback could not hand over was Nak'd by receive.
}
