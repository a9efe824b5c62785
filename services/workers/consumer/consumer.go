// Package consumer runs one channel's worker loop. It pulls messages from the channel's JetStream
// consumer, each a batch of delivery ids; claims their deliveries, as many at a time as senders
// are free, in one statement; re-checks them against the recipients' settings; sends them
// through the channel's provider with bounded concurrency; records the outcomes in batches; and
// answers each message once all its deliveries are recorded.
//
// The loop is three stages joined by channels, and a slot per delivery claimed and not yet sent
// shows who owns what: the claim loop takes slots (claim), a sender frees one when its call ends
// (send), and the recorder answers the messages (record). Each stage takes whatever has piled up
// since its last round as one batch, so the database sees one claim and one record statement per
// round while a lone delivery still goes straight through.
//
// The provider is called through a chain (chain.go): a rate limit, a circuit breaker that pauses
// the channel while the provider fails (no attempt is spent while it is open), and the timed,
// traced call. What an answer comes to is workers.Decide's verdict.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/pgtext"
	"github.com/heraldhq/herald/internal/queue"
	"github.com/heraldhq/herald/internal/tracing"
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
	// this long. It must exceed SendTimeout; the time left over bounds a wait for the rate
	// limiter.
	Lease time.Duration
	// SendTimeout bounds one provider call.
	SendTimeout time.Duration
	// AckWait is the JetStream consumer's ack wait. A message being worked on is kept from it
	// (InProgress) however long its deliveries take.
	AckWait time.Duration
	// Gate, when set, re-checks each batch against the recipients' settings before sending.
	Gate workers.Gate
	// Announcer, when set, publishes what provider answers mean for addresses.
	Announcer workers.Announcer
	// Metrics, when set, counts outcomes and circuit changes.
	Metrics *Metrics
	// Unsubscribe, when set, adds List-Unsubscribe links to emails.
	Unsubscribe *workers.UnsubscribeLinks
	Log         *slog.Logger
	// BreakerFailures is how many provider failures in a row (transient errors, timeouts) open
	// the channel's circuit; 0 means 5. A configuration error opens it at once.
	BreakerFailures int
	// BreakerCooldown is how long the circuit stays open before one probe delivery may go;
	// 0 means 30 seconds.
	BreakerCooldown time.Duration
	// RatePerSecond bounds provider calls per second on the channel (e.g. a Twilio sender's
	// limit); 0 means unlimited. Burst is how many calls may go back to back above that rate;
	// 0 means 1.
	RatePerSecond float64
	Burst         int
	// Jitter returns the backoff's jitter, a number in [0, 1); nil means uniformly random.
	Jitter func() float64
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
	if c.AckWait <= 0 {
		c.AckWait = queue.DefaultAckWait
	}
	if c.Policy.MaxAttempts <= 0 {
		c.Policy = workers.DefaultPolicy
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = 30 * time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 1
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
}

// Consumer is a running channel loop.
type Consumer struct {
	cfg     Config
	cons    jetstream.Consumer
	breaker *breaker
	send    sendFunc
	sent    atomic.Int64 // provider calls accepted, for the status report
	failed  atomic.Int64

	in   chan *batch // messages pulled and not yet claimed
	work chan job    // claimed deliveries, for the senders
	done chan result // outcomes, for the recorder
	// slots has a slot per delivery claimed and not yet sent: the claim loop takes one for each
	// delivery it claims, the sender that sends it gives it back.
	slots    chan struct{}
	open     openBatches
	stopping chan struct{}
	// quit ends waits for the rate limiter when the consumer stops; beat ends the heartbeat
	// once every message is answered.
	quit     context.Context
	stopQuit context.CancelFunc
	stopBeat context.CancelFunc
	wg       sync.WaitGroup
	recorded sync.WaitGroup

	mu      sync.Mutex
	cc      jetstream.ConsumeContext // the current pull; the claim loop replaces it after a pause
	stopped bool

	// cur is the message whose ids are being claimed; only the claim loop touches it.
	cur *batch
}

type job struct {
	b   *batch
	m   *workers.Message
	ctx context.Context // carries the trace of the batch's message
}

type result struct {
	b *batch
	a workers.Attempt
}

// Start ensures the channel's durable consumer and starts pulling from it. It fails if the lease
// does not exceed the send timeout, or if the consumer cannot be set up.
func Start(ctx context.Context, js jetstream.JetStream, cfg Config) (*Consumer, error) {
	cfg.defaults()
	if cfg.Lease <= cfg.SendTimeout {
		return nil, fmt.Errorf("consumer %s: lease %v must exceed the send timeout %v", cfg.Channel, cfg.Lease, cfg.SendTimeout)
	}
	cons, err := queue.EnsureConsumer(ctx, js, cfg.Channel, queue.ConsumerConfig{AckWait: cfg.AckWait})
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:      cfg,
		cons:     cons,
		in:       make(chan *batch, 1),
		work:     make(chan job, claimAhead*cfg.Concurrency),
		done:     make(chan result, cfg.BatchSize),
		slots:    make(chan struct{}, claimAhead*cfg.Concurrency),
		stopping: make(chan struct{}),
	}
	c.quit, c.stopQuit = context.WithCancel(context.Background())
	provider := cfg.Sender.Provider()
	c.breaker = newBreaker(cfg.Channel, provider, cfg.BreakerFailures, cfg.BreakerCooldown, cfg.Metrics, cfg.Log)
	call := &timedSender{sender: cfg.Sender, timeout: cfg.SendTimeout, metrics: cfg.Metrics}
	c.send = c.breaker.wrap(call.send)
	if cfg.RatePerSecond > 0 {
		// The wait may use half of the lease that the send does not need; the rest is left for
		// recording the outcome.
		c.send = newLimiter(cfg.RatePerSecond, cfg.Burst, cfg.Concurrency, (cfg.Lease-cfg.SendTimeout)/2).wrap(c.send, c.quit)
	}
	if c.cc, err = c.consume(); err != nil {
		c.stopQuit()
		return nil, err
	}
	c.wg.Add(1)
	go c.claimLoop()
	for range cfg.Concurrency {
		c.wg.Add(1)
		go c.sendLoop()
	}
	c.recorded.Add(1)
	go c.recordLoop()
	beat, stopBeat := context.WithCancel(context.Background())
	c.stopBeat = stopBeat
	go c.heartbeat(beat)
	return c, nil
}

// The client pulls a few messages ahead of the claims, each fetch at most four full batches (a
// batch of queue.MaxBatch ids is 16 KB). Messages the client holds run their ack wait, and come
// again to some worker if it passes (harmless: their claims find nothing to do, but wasted);
// those handed to the loop are kept from it by the heartbeat.
const (
	pullMessages = 8
	pullBytes    = 64 << 10
)

func (c *Consumer) consume() (jetstream.ConsumeContext, error) {
	cc, err := c.cons.Consume(c.receive,
		jetstream.PullMaxMessagesWithBytesLimit(pullMessages, pullBytes),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.cfg.Log.Warn("consume", "channel", c.cfg.Channel, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", c.cfg.Channel, err)
	}
	return cc, nil
}

// receive reads a message's ids and hands it to the claim loop, or gives it back to the server
// at once when the consumer is stopping. A message that carries no ids is a bug somewhere: it is
// dropped, so that it does not come back forever.
func (c *Consumer) receive(msg jetstream.Msg) {
	ids, err := queue.ParseBatch(msg.Data())
	if err != nil {
		c.cfg.Log.Error("dropping malformed message", "channel", c.cfg.Channel, "err", err)
		msg.TermWithReason("malformed batch of delivery ids")
		return
	}
	b := newBatch(msg, ids, c.open.remove)
	c.open.add(b)
	select {
	case <-c.stopping:
	default:
		select {
		case c.in <- b:
			return
		case <-c.stopping:
		}
	}
	c.open.remove(b)
	msg.Nak()
}

// heartbeat keeps the messages being worked on from their ack wait, until ctx ends.
func (c *Consumer) heartbeat(ctx context.Context) {
	t := time.NewTicker(c.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.open.inProgress()
		}
	}
}

// claimLoop claims deliveries as the circuit allows: rounds of them while it is closed, one
// probe while it is half-open, nothing while it is open.
func (c *Consumer) claimLoop() {
	defer c.wg.Done()
	defer close(c.work)
	defer c.abandon(0)
	for {
		var ok bool
		switch c.breaker.state() {
		case gobreaker.StateOpen:
			ok = c.pause()
		case gobreaker.StateHalfOpen:
			ok = c.probe()
		default:
			ok = c.claimRound()
		}
		if !ok {
			return
		}
	}
}

// claimAhead bounds the deliveries claimed and not yet sent, in rounds of Concurrency: the
// senders' own and one round more. While one round is sent, the next is claimed and re-checked,
// so that no sender waits for a claim; and a claimed delivery waits for a sender about one
// provider call, far less than its lease.
const claimAhead = 2

// current makes sure that c.cur is a message with ids to claim: the one under way, or else the
// next to arrive. It returns false when the consumer is stopping.
func (c *Consumer) current() bool {
	if c.cur != nil {
		return true
	}
	select {
	case c.cur = <-c.in:
		return true
	case <-c.stopping:
		return false
	}
}

// claimRound waits for a message and a free slot, then claims as many of the waiting ids as
// there are free slots (up to BatchSize; from the messages after it too, when they are ready)
// in one statement. It returns false when the consumer is stopping.
func (c *Consumer) claimRound() bool {
	if !c.current() {
		return false
	}
	if c.breaker.state() != gobreaker.StateClosed {
		return true // the circuit opened while this waited: the message waits for the probe
	}
	select {
	case c.slots <- struct{}{}:
	case <-c.stopping:
		return false
	}
	// So may it have while this waited for a slot, which is a wait for a send to end: a sender
	// reports to the breaker before it frees its slot, so a failure that opened it shows here.
	if c.breaker.state() != gobreaker.StateClosed {
		<-c.slots
		return true
	}
	slots := 1
more:
	for slots < c.cfg.BatchSize {
		select {
		case c.slots <- struct{}{}:
			slots++
		default:
			break more
		}
	}
	var picks []pick
	for slots > 0 {
		ids := c.cur.rest()
		n := min(slots, len(ids))
		picks = append(picks, pick{c.cur, c.cur.take(n), c.cur.next == len(c.cur.ids)})
		slots -= n
		if c.cur.next < len(c.cur.ids) {
			break
		}
		c.cur = nil
		select {
		case c.cur = <-c.in:
		default:
		}
		if c.cur == nil {
			break
		}
	}
	for range slots {
		<-c.slots
	}
	c.claim(picks)
	return true
}

// pick is ids of one message taken in a claim round; last says they were its last ones.
type pick struct {
	b    *batch
	ids  []uuid.UUID
	last bool
}

// probe lets one delivery through the half-open circuit. It first takes every slot, so that no
// send is in flight and the breaker has had its say on the last one (the previous probe, if
// any); then, if the circuit is still half-open, it claims a single delivery. It returns false
// when the consumer is stopping.
func (c *Consumer) probe() bool {
	held := 0
	defer func() {
		for range held {
			<-c.slots
		}
	}()
	for held < cap(c.slots) {
		select {
		case c.slots <- struct{}{}:
			held++
		case <-c.stopping:
			return false
		}
	}
	if c.breaker.state() != gobreaker.StateHalfOpen {
		return true
	}
	if !c.current() {
		return false
	}
	held-- // the probe keeps its slot until it is sent
	p := pick{c.cur, c.cur.take(1), c.cur.next == len(c.cur.ids)}
	if p.last {
		c.cur = nil
	}
	c.claim([]pick{p})
	return true
}

// pause stops pulling while the circuit is open. The rest of the message under way and the
// messages already pulled go back to the server, to come again when the probe may go; the others
// stay in the stream, where no ack wait runs, so a long pause ends without a wave of
// redeliveries. Once the cooldown is over, pause pulls again and returns true; false when the
// consumer is stopping.
func (c *Consumer) pause() bool {
	c.abandon(c.breaker.pausedFor())
	c.mu.Lock()
	cc := c.cc
	c.mu.Unlock()
	cc.Drain() // passes what the client holds to receive, and so to the loop below
	drained := cc.Closed()
	cooled := time.NewTimer(time.Until(time.Unix(0, c.breaker.probeAt.Load())))
	defer cooled.Stop()
	for due := false; !due || drained != nil; {
		select {
		case b := <-c.in:
			c.handBack(b, c.breaker.pausedFor())
		case <-drained:
			drained = nil
		case <-cooled.C:
			due = true
		case <-c.stopping:
			return false
		}
	}
	c.handBackWaiting(c.breaker.pausedFor())
	for {
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			return false
		}
		cc, err := c.consume()
		if err == nil {
			c.cc = cc
		}
		c.mu.Unlock()
		if err == nil {
			return true
		}
		c.cfg.Log.Warn("cannot resume pulling; retrying", "channel", c.cfg.Channel, "err", err)
		select {
		case <-time.After(time.Second):
		case <-c.stopping:
			return false
		}
	}
}

// abandon gives back the ids of the current message not yet claimed: its message comes back
// after delay, once the deliveries already handed on are recorded.
func (c *Consumer) abandon(delay time.Duration) {
	if c.cur == nil {
		return
	}
	c.cur.take(len(c.cur.rest()))
	c.cur.giveBack(delay)
	c.cur.finish()
	c.cur = nil
}

// handBack gives a message none of whose ids were claimed back to the server, to come again
// after delay.
func (c *Consumer) handBack(b *batch, delay time.Duration) {
	c.open.remove(b)
	b.msg.NakWithDelay(delay)
}

// handBackWaiting hands back the messages waiting for the claim loop.
func (c *Consumer) handBackWaiting(delay time.Duration) {
	for {
		select {
		case b := <-c.in:
			c.handBack(b, delay)
		default:
			return
		}
	}
}

// claim claims the picked ids in one statement, re-checks the claimed deliveries against the
// recipients' settings and hands the ones still wanted to the senders. The caller holds a slot
// per id; the ids not claimed free theirs at once. If the claim fails, the ids go back with their
// messages, to come again a second later.
func (c *Consumer) claim(picks []pick) {
	var ids []uuid.UUID
	for _, p := range picks {
		ids = append(ids, p.ids...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	claimed, err := c.cfg.Store.Claim(ctx, c.cfg.WorkerID, c.cfg.Lease, ids)
	cancel()
	if err != nil {
		c.cfg.Log.Warn("claim failed; the deliveries will come back", "channel", c.cfg.Channel, "count", len(ids), "err", err)
		claimed = nil
	}
	byID := make(map[uuid.UUID]*delivery.Delivery, len(claimed))
	for i := range claimed {
		byID[claimed[i].ID] = &claimed[i]
	}
	var jobs []job
	for _, p := range picks {
		ctx := tracing.Extract(context.Background(), p.b.msg.Headers())
		n := 0
		for _, id := range p.ids {
			if d, ok := byID[id]; ok {
				// An id twice in the round (twice in a message, or in two messages) is one claim,
				// and one send: the other has nothing to do.
				delete(byID, id)
				jobs = append(jobs, job{b: p.b, m: workers.NewMessage(d), ctx: ctx}) // keeps its slot until sent
				n++
				continue
			}
			<-c.slots
		}
		p.b.hand(n)
		if err != nil {
			p.b.giveBack(time.Second)
		}
		if p.last {
			p.b.finish()
		}
	}
	c.dispatch(jobs)
}

// dispatch re-checks claimed deliveries against the recipients' settings and hands the ones
// still wanted to the senders; the others are recorded skipped. If the check cannot be made, the
// claims are given back: an opt-out must not be missed for want of asking.
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
		cancel()
		if err != nil {
			c.cfg.Log.Warn("cannot re-check recipients; giving the deliveries back", "channel", c.cfg.Channel,
				"count", len(jobs), "err", err)
			for _, j := range jobs {
				<-c.slots
				c.done <- result{b: j.b, a: workers.Attempt{Message: j.m,
					Verdict: workers.Verdict{Release: true, RetryAfter: 5 * time.Second, Reason: "recheck_failed"}}}
			}
			return
		}
	}
	for _, j := range jobs {
		if reason, ok := skip[j.m.DeliveryID]; ok {
			<-c.slots
			c.cfg.Log.Info("skipped at send time", "delivery_id", j.m.DeliveryID, "channel", j.m.Channel, "reason", reason)
			c.done <- result{b: j.b, a: workers.Attempt{Message: j.m, Started: time.Now(),
				Verdict: workers.Verdict{State: delivery.Skipped, Reason: reason}}}
			continue
		}
		c.cfg.Unsubscribe.Apply(j.m)
		c.work <- j
	}
}

// sendLoop sends claimed deliveries and passes the outcomes to the recorder.
func (c *Consumer) sendLoop() {
	defer c.wg.Done()
	for j := range c.work {
		r := c.sendOne(j)
		<-c.slots
		c.done <- r
	}
}

// sendOne sends a delivery through the chain and decides what its answer comes to.
func (c *Consumer) sendOne(j job) result {
	m := j.m
	t, err := c.send(j.ctx, m)
	a := workers.Attempt{Message: m, Provider: c.cfg.Sender.Provider(), Started: t.Started, Latency: t.Latency,
		Verdict: workers.Decide(err, m.Attempt, c.cfg.Policy, time.Now(), c.cfg.Jitter())}
	if t.Provider != "" { // a Sender of several credentials names the one that answered
		a.Provider = t.Provider
	}
	if !t.Started.IsZero() { // the provider was called
		if err == nil {
			c.sent.Add(1)
		} else {
			c.failed.Add(1)
		}
	}
	a.Reason = pgtext.Fit(a.Reason, maxReason)
	if err != nil {
		a.Error = pgtext.Fit(err.Error(), maxErrorText)
	}
	if a.State == delivery.Sent {
		a.ProviderMessageID = pgtext.Fit(t.ProviderMessageID, maxProviderMessageID)
	}
	var ce *workers.ConfigError
	switch {
	case errors.As(err, &ce):
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.ConfigErrors.WithLabelValues(string(m.Channel), a.Provider).Inc()
		}
		c.cfg.Log.Error("provider configuration error; channel paused", "channel", m.Channel, "provider", a.Provider,
			"delivery_id", m.DeliveryID, "err", err)
		a.RetryAfter = c.breaker.pausedFor()
	case a.Release:
		c.cfg.Log.Info("giving the delivery back unsent", "delivery_id", m.DeliveryID, "channel", m.Channel,
			"reason", a.Reason, "retry_after", a.RetryAfter)
	case c.cfg.Log.Enabled(context.Background(), slog.LevelInfo): // a line per delivery: its fields cost even when dropped
		c.cfg.Log.Info("attempt", "delivery_id", m.DeliveryID, "channel", m.Channel, "attempt", m.Attempt,
			"provider", a.Provider, "outcome", a.State.Outcome(), "reason", a.Reason, "latency_ms", a.Latency.Milliseconds())
	}
	return result{b: j.b, a: a}
}

// recordLoop writes outcomes in batches and answers their messages once written.
func (c *Consumer) recordLoop() {
	defer c.recorded.Done()
	// The buffers are reused round after round: recording is done with them when it returns.
	var rs, recorded, released []result
	for r := range c.done {
		rs, recorded, released = append(rs[:0], r), recorded[:0], released[:0]
	more:
		for len(rs) < c.cfg.BatchSize {
			select {
			case r, ok := <-c.done:
				if !ok {
					break more
				}
				rs = append(rs, r)
			default:
				break more
			}
		}
		for _, r := range rs {
			if r.a.Release {
				released = append(released, r)
			} else {
				recorded = append(recorded, r)
			}
		}
		if len(released) > 0 {
			c.release(released)
		}
		if len(recorded) > 0 {
			c.record(recorded)
		}
	}
}

// release gives deliveries back unrecorded, their attempt not counted; their messages come back
// after the delays they asked for.
func (c *Consumer) release(rs []result) {
	ids := make([]uuid.UUID, len(rs))
	for i, r := range rs {
		ids[i] = r.a.Message.DeliveryID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.cfg.Store.Release(ctx, c.cfg.WorkerID, ids)
	cancel()
	if err != nil {
		c.cfg.Log.Warn("release failed; the leases will expire", "channel", c.cfg.Channel, "count", len(ids), "err", err)
	}
	for _, r := range rs {
		r.b.giveBack(r.a.RetryAfter)
		r.b.done(1)
	}
}

// record stores outcomes, retrying for up to half a lease. If the database stays unreachable,
// the deliveries stay claimed until their lease expires and are sent again then: a duplicate,
// never a loss.
func (c *Consumer) record(rs []result) {
	attempts := make([]delivery.Attempt, len(rs))
	for i := range rs {
		attempts[i] = rs[i].a.Record()
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
				"count", len(rs), "err", err)
			for _, r := range rs {
				r.b.giveBack(0)
				r.b.done(1)
			}
			return
		}
		c.cfg.Log.Warn("record failed; retrying", "channel", c.cfg.Channel, "count", len(rs), "err", err)
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
	for _, r := range rs {
		c.recorded1(r.a)
		r.b.done(1)
	}
}

// recorded1 counts, logs and announces an attempt once it is stored.
func (c *Consumer) recorded1(a workers.Attempt) {
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.recorded(a)
	}
	if a.Effect != workers.NoEffect && c.cfg.Announcer != nil {
		c.announce("a provider's verdict on an address", a, c.cfg.Announcer.Announce)
	}
	if a.State == delivery.Dead {
		m := a.Message
		c.cfg.Log.Warn("dead letter", "delivery_id", m.DeliveryID, "channel", m.Channel, "attempts", m.Attempt,
			"provider", a.Provider, "reason", a.Reason, "err", a.Error)
		if c.cfg.Announcer != nil {
			c.announce("a dead letter", a, c.cfg.Announcer.DeadLetter)
		}
	}
}

// announce publishes a fact about an attempt, retrying briefly. A lost announcement costs an
// attempt on a dead address later, or a dead letter noticed from the database instead of the
// event, not a notification.
func (c *Consumer) announce(what string, a workers.Attempt, publish func(context.Context, workers.Attempt) error) {
	var err error
	for try := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = publish(ctx, a)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	c.cfg.Log.Error("cannot announce "+what, "delivery_id", a.Message.DeliveryID, "effect", a.Effect, "err", err)
}

// Stop stops pulling, hands back what is not claimed yet, lets the provider calls in flight
// finish, records them, gives back the deliveries still waiting for the rate limiter, and
// returns once every message is answered.
func (c *Consumer) Stop() {
	close(c.stopping)
	c.stopQuit()
	c.mu.Lock()
	c.stopped = true // the claim loop starts no new pull after a pause
	cc := c.cc
	c.mu.Unlock()
	// Drain, not Stop: Stop drops the messages already pulled into the client's buffer, which
	// the server then holds for a whole AckWait; Drain passes them to receive, which hands them
	// back at once.
	cc.Drain()
	<-cc.Closed()
	c.wg.Wait()
	c.handBackWaiting(0)
	close(c.done)
	c.recorded.Wait()
	c.stopBeat()
}

// Counts returns the provider calls this consumer made that the provider accepted, and those
// that failed, since it started.
func (c *Consumer) Counts() (sent, failed int64) { return c.sent.Load(), c.failed.Load() }

// CircuitState returns the state of the channel's circuit: "closed" (sending), "open"
// (paused) or "half-open" (one probe may go).
func (c *Consumer) CircuitState() string { return c.breaker.state().String() }

// Channel returns the channel the consumer serves.
func (c *Consumer) Channel() delivery.Channel { return c.cfg.Channel }

// Provider names the channel's provider.
func (c *Consumer) Provider() string { return c.cfg.Sender.Provider() }
