// Command herald-chaos is Herald's fault suite (make chaos). It runs the whole system as
// separate processes on loopback (package loopstack: a private PostgreSQL with fsync on, NATS
// JetStream, the notifier, contacts and workers binaries, and the four provider fakes in this
// process), sends notifications at a steady rate and records every Send as acknowledged,
// failed, or unknown (Unavailable or DeadlineExceeded: it may or may not have been accepted),
// and meanwhile injects faults:
//
//   - SIGKILL of the workers, the notifier and the contacts service, each restarted at once;
//   - NATS killed and restarted on its store (one server);
//   - PostgreSQL stopped in immediate mode (no checkpoint: crash recovery) and restarted;
//   - provider fakes answering 5xx, 429 with Retry-After, too late (past the send timeout), or
//     dropping the connection after reading the request (FCM also after accepting a few);
//   - then, on a second stack, a three-node JetStream cluster with R3 streams, one node killed
//     every few seconds and restarted.
//
// Part of the load goes to users' inboxes and into short email digests, and one SendToTopic
// to a few hundred subscribers goes right before a notifier kill.
//
// After the load it lets the system settle and checks the history against what the fakes
// received and what PostgreSQL holds. It passes when every acknowledged delivery reached a
// terminal state; none is lost (acknowledged, never received by a provider, and not failed for
// a reason of its own); the duplicates at the providers are at most the sends in flight at the
// kills (the deliveries claimed and unrecorded in PostgreSQL when the workers or PostgreSQL
// died, plus the messages a fake accepted and dropped the answer of); and no delivery is left
// non-terminal past its deadline. Inbox deliveries are stored once each; digest items end
// DIGESTED in a closed digest with one delivery; the topic send is DONE with one delivery per
// subscriber and channel. Its last line is
//
//	chaos: acknowledged=N lost=0 duplicates=D stuck=0
//
// and it exits non-zero on any violation. The default is a bounded run for CI (every fault at
// least once, a few minutes); --soak D cycles the faults for D.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
)

func main() { loopstack.Main("herald-chaos", run) }

type config struct {
	soak    time.Duration
	rate    float64
	callers int
	settle  time.Duration
	keep    bool
	// only runs one phase: "single" or "cluster" (empty: both).
	only string
}

// The workers' and the notifier's timings under chaos: short enough that a killed worker's
// leases, backoffs and re-publishes play out within the run.
const (
	sendTimeout     = 3 * time.Second
	lease           = 10 * time.Second
	providerLatency = 20 * time.Millisecond
)

var workerArgs = []string{
	"--send-timeout", sendTimeout.String(), "--lease", lease.String(),
	"--base-backoff", "500ms", "--max-backoff", "3s", "--breaker-cooldown", "2s",
}

var notifierArgs = []string{"--republish-after", "5s", "--reconcile-interval", "1s"}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("herald-chaos", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&c.soak, "soak", 0, "cycle the faults for this long (two thirds on one NATS server, a third on the cluster) instead of the bounded run")
	fs.Float64Var(&c.rate, "rate", 100, "notifications per second offered while the faults run")
	fs.IntVar(&c.callers, "c", 16, "concurrent Send calls at most")
	fs.DurationVar(&c.settle, "settle-timeout", 4*time.Minute, "how long to wait, after the load, for every delivery to be terminal before judging")
	fs.StringVar(&c.only, "only", "", "run only one phase: single or cluster")
	fs.BoolVar(&c.keep, "keep", false, "keep the temp dirs (binaries, data, logs)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.soak < 0 || (c.soak > 0 && c.soak < time.Minute):
		return c, errors.New("--soak must be at least 1m")
	case c.rate <= 0 || c.callers < 1:
		return c, errors.New("--rate and -c must be positive")
	case c.only != "" && c.only != "single" && c.only != "cluster":
		return c, errors.New("--only: single or cluster")
	}
	return c, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	cfg, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	began := time.Now()
	mode := "bounded run"
	if cfg.soak > 0 {
		mode = "soak of " + cfg.soak.String()
	}
	fmt.Fprintf(out, "herald-chaos: %s; %.0f notifications/s offered by up to %d callers; send timeout %v, lease %v\n",
		mode, cfg.rate, cfg.callers, sendTimeout, lease)

	total := &verdict{lostStates: map[string]int64{}, terminalFailed: map[string]int64{},
		faults: map[string]int{}, crashes: map[string]int{}, emailVia: map[string]int64{}}
	errs := map[string]int64{}
	for _, ph := range []struct {
		name    string
		nodes   int
		offset  int64
		faults  func(context.Context, *phase) func(step int) error
		portion float64
	}{
		{"single", 1, 0, singleFaults, 2.0 / 3},
		{"cluster", 3, 10_000_000, clusterFaults, 1.0 / 3},
	} {
		if cfg.only != "" && cfg.only != ph.name {
			continue
		}
		v, e, err := runPhase(ctx, cfg, out, ph.name, ph.nodes, ph.offset, time.Duration(float64(cfg.soak)*ph.portion), ph.faults)
		if err != nil {
			return fmt.Errorf("phase %s: %w", ph.name, err)
		}
		for k, n := range e {
			errs[k] += n
		}
		total.add(v)
	}

	fmt.Fprintf(out, "faults: %s\n", counts(total.faults))
	fmt.Fprintf(out, "unexpected exits: %s\n", counts(total.crashes))
	fmt.Fprintf(out, "send errors: %s\n", counts(errs))
	fmt.Fprintf(out, "acknowledged deliveries not received, terminal for a reason of their own: %s\n", counts(total.terminalFailed))
	fmt.Fprintf(out, "emails sent by provider: %s\n", counts(total.emailVia))
	fmt.Fprintf(out, "fallback chains: %d, one step sent %d, every step failed %d, more than one step sent %d\n",
		total.chains, total.chainsSent, total.chainsFailed, total.chainsDoubled)
	fmt.Fprintf(out, "inbox: deliveries %d, stored once %d, stored unasked %d; messages %d, unread by InboxService %d\n",
		total.inboxSent, total.inboxStored, total.inboxExtra, total.inboxRows, total.inboxUnread)
	fmt.Fprintf(out, "digests: items %d, digested %d; digests sent %d, received %d, received again %d, with more than one delivery %d, open %d\n",
		total.digestItems, total.digestItemsDone, total.digests, total.digestsReceived, total.digestDuplicates, total.digestsMulti, total.digestsOpen)
	fmt.Fprintf(out, "topics: sends %d, done %d; subscribers %d, deliveries one per channel %d, missing %d, more than one %d\n",
		total.topicSends, total.topicDone, total.topicSubscribers, total.topicOnce, total.topicMissing, total.topicDoubled)
	fmt.Fprintf(out, "chaos-detail: unknown=%d failed=%d deliveries=%d duplicate_bound=%d strays=%d wall=%.0fs\n",
		total.unknown, total.failed, total.deliveries, total.bound, total.strays, time.Since(began).Seconds())
	bad := total.violations()
	for _, b := range bad {
		fmt.Fprintln(out, "VIOLATION:", b)
	}
	fmt.Fprintf(out, "chaos: acknowledged=%d lost=%d duplicates=%d stuck=%d\n", total.acked, total.lost, total.duplicates, total.stuck)
	if len(bad) > 0 {
		return fmt.Errorf("%d violations", len(bad))
	}
	return nil
}

// runPhase starts a stack, runs the load and the faults on it, settles, and checks.
func runPhase(ctx context.Context, cfg config, out io.Writer, name string, nodes int, offset int64, soak time.Duration,
	faults func(context.Context, *phase) func(step int) error) (*verdict, map[string]int64, error) {
	fmt.Fprintf(out, "== phase %s: %d NATS node(s)\n", name, nodes)
	scfg := loopstack.Config{
		TempPrefix:      "herald-chaos-",
		NATSSyncAlways:  true,
		NATSNodes:       nodes,
		ServiceLogLevel: "warn",
		ProviderLatency: providerLatency,
		BootstrapApp:    "chaos",
		EmailFailover:   true,
		Args:            map[string][]string{"notifier": notifierArgs, "workers": workerArgs},
		Keep:            cfg.keep,
	}
	if nodes > 1 {
		scfg.StreamReplicas = 3
	}
	s, err := loopstack.New(ctx, scfg, out)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	if err := s.Start(ctx, true); err != nil {
		return nil, nil, err
	}
	db, err := pgxpool.New(ctx, s.DBURL)
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()

	t := loopstack.NewTracker(time.Now())
	s.Recv.Cur.Store(t)
	p := &phase{name: name, s: s, db: db, h: newHistory(t), start: time.Now(),
		faults: map[string]int{}, crashes: map[string]int{}}
	var logMu sync.Mutex
	p.log = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(out, "[%s %6.1fs] %s\n", name, time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go p.watch(wctx)

	l, err := newLoad(s.NotifierGRPC, s.AdminKey, p.h, offset)
	if err != nil {
		return nil, nil, err
	}
	defer l.close()
	p.unread, p.sendTopic = unreadCounter(l.conns[0]), l.sendToTopic
	if err := l.prepare(ctx, s.ContactsGRPC, s.AdminKey); err != nil {
		return nil, nil, err
	}
	if s.Prov != nil && s.Prov.SendGrid != nil {
		// Both of email's providers refuse the address, as both would an invalid one, so that
		// the chain moves on to SMS whichever provider the email went to.
		l.refuse = func(email string) {
			s.Prov.SendGrid.RefuseAddress(email)
			if b := s.Prov.SendGridBackup; b != nil {
				b.RefuseAddress(email)
			}
		}
	}
	stopLoad := make(chan struct{})
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		l.run(ctx, stopLoad, cfg.rate, cfg.callers)
	}()

	// Faults, one after another, while the load runs: the whole list once, or cycled until
	// the soak's share is over.
	step := faults(ctx, p)
	faultErr := func() error {
		if err := sleep(ctx, 3*time.Second); err != nil {
			return err
		}
		for i := 0; ; i++ {
			err := step(i)
			if errors.Is(err, errDone) {
				if soak == 0 || time.Since(p.start) >= soak {
					return nil
				}
				i = -1
				continue
			}
			if err != nil {
				return err
			}
			if err := p.ensureRunning(ctx); err != nil {
				return err
			}
			if soak > 0 && time.Since(p.start) >= soak {
				return nil
			}
			if err := sleep(ctx, 3*time.Second); err != nil {
				return err
			}
		}
	}()
	close(stopLoad)
	<-loaded
	if faultErr != nil {
		return nil, nil, faultErr
	}
	p.log("load stopped: %d sends acknowledged, %d unknown, %d failed; settling",
		p.h.acked.Load(), p.h.unknown.Load(), p.h.failed.Load())
	if err := p.settle(ctx, cfg.settle); err != nil {
		return nil, nil, err
	}
	v, err := p.check(ctx)
	if err != nil {
		return nil, nil, err
	}
	p.log("acknowledged=%d unknown=%d failed=%d lost=%d duplicates=%d (bound %d) stuck=%d open=%d strays=%d",
		v.acked, v.unknown, v.failed, v.lost, v.duplicates, v.bound, v.stuck, v.open, v.strays)
	p.h.mu.Lock()
	errs := maps.Clone(p.h.errors)
	p.h.mu.Unlock()
	return v, errs, nil
}

// errDone ends a list of faults.
var errDone = errors.New("no more faults")

// singleFaults is the list of faults on one NATS server: every process killed (the notifier
// the first time right after a send to the topic), NATS and PostgreSQL restarted, every kind of
// provider misbehaviour, then the kills again.
func singleFaults(ctx context.Context, p *phase) func(int) error {
	list := []func() error{
		func() error { return p.killWorkers(ctx) },
		func() error { return p.topicThenKillNotifier(ctx) },
		func() error { return p.killContacts(ctx) },
		func() error { return p.restartNATS(ctx, 0, 3*time.Second, "nats-restart") },
		func() error { return p.restartPostgres(ctx, 3*time.Second) },
		func() error { return p.provider5xx(ctx) },
		func() error { return p.provider429(ctx) },
		func() error { return p.providerTimeout(ctx, sendTimeout) },
		func() error { return p.providerDrop(ctx) },
		func() error { return p.emailFailover(ctx) },
		func() error { return p.killWorkers(ctx) },
		func() error { return p.killNotifier(ctx) },
		func() error { return p.killContacts(ctx) },
	}
	return func(i int) error {
		if i >= len(list) {
			return errDone
		}
		return list[i]()
	}
}

// clusterFaults kills one node of the three after another, each down for a couple of seconds,
// and the workers once among them.
func clusterFaults(ctx context.Context, p *phase) func(int) error {
	return func(i int) error {
		switch {
		case i >= 7:
			return errDone
		case i == 3:
			return p.killWorkers(ctx)
		}
		return p.restartNATS(ctx, i%len(p.s.NATS), 2*time.Second, "nats-node-kill")
	}
}
