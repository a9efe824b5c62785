// Command herald-bench is Herald's end-to-end benchmark. It builds the service binaries and
// runs the whole system on this machine, each part its own process on loopback: a private
// PostgreSQL with production durability (fsync and synchronous_commit on), NATS JetStream
// (herald-nats), and the notifier, contacts and workers services. The four provider fakes
// (SendGrid, Twilio, FCM, APNs) run inside the benchmark with a configurable latency, and a
// load generator drives the notifier's gRPC API with address recipients mixed across channels,
// half of them rendered from stored templates.
//
// Modes:
//
//	--mode standard                   what make bench runs, on one stack: unary Send from -c
//	                                  callers for --unary-duration, against the notifier and
//	                                  against a no-op server of the same gRPC contract; then
//	                                  SendBatch of --batch-size recipients from --batch-callers
//	                                  callers for --batch-duration
//	--mode count -n N -c C            N notifications from C concurrent callers (closed loop)
//	--mode rate --rate R --duration D R notifications per second for D, open loop: latency is
//	                                  measured from when each send was due
//	--mode backlog -n N               queue N notifications with SendBatch while no workers
//	                                  run, then start the workers and time the drain
//
// It waits until the provider fakes have received every accepted delivery (or --timeout),
// then reports accepted/s, delivered/s end to end, Send latency, accept-to-sent latency, and
// each process's peak RSS and CPU time, and prints one machine-readable line last (the
// standard mode, one per phase: unary, then batch):
//
//	bench: mode=count accepted_per_s=... delivered_per_s=... send_p50_ms=... ... max_rss_mb=...
//	bench: mode=unary accepted_per_s=... noop_per_s=... ratio=... delivered_per_s=... ...
//	bench: mode=batch accepted_per_s=... delivered_per_s=... ... cpu_ms_per_delivery=... ...
//
// The no-op server is the benchmark itself, run again as a process of its own with the hidden
// subcommand "noop-server".
//
// It exits with an error if any delivery was lost, any call failed, or a process died. The
// README's "Benchmark" section says how to read and reproduce the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

func main() { loopstack.Main("herald-bench", run) }

type config struct {
	mode              string
	n                 int64
	concurrency       int
	rate              float64
	duration          time.Duration
	maxInFlight       int
	conns             int
	mix               string
	templateShare     float64
	providerLatency   time.Duration
	workerConcurrency int
	workerBatchSize   int
	natsSyncAlways    bool
	timeout           time.Duration
	warmup            int
	analyze           bool
	serviceLogLevel   string
	keep              bool
	pgStatements      int
	profileDir        string
	profileTime       time.Duration
	unaryDuration     time.Duration
	batchDuration     time.Duration
	batchCallers      int
	batchSize         int
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("herald-bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.mode, "mode", "count", "standard (make bench's: unary then batch), count, rate or backlog")
	fs.Int64Var(&c.n, "n", 20_000, "notifications to send (count and backlog modes; backlog's default is 1,000,000)")
	fs.IntVar(&c.concurrency, "c", 64, "concurrent Send calls (count mode, and the standard mode's unary phase), or SendBatch calls of 1,000 (backlog mode; default 4)")
	fs.Float64Var(&c.rate, "rate", 5000, "offered notifications per second (rate mode)")
	fs.DurationVar(&c.duration, "duration", time.Minute, "how long to offer --rate (rate mode)")
	fs.IntVar(&c.maxInFlight, "max-in-flight", 20_000, "most Send calls outstanding at once (rate mode)")
	fs.IntVar(&c.conns, "conns", 4, "gRPC connections to the notifier")
	fs.StringVar(&c.mix, "mix", "email=1,sms=1,ios=1,android=1", "relative share of each channel among the sends; each send has one address on one channel")
	fs.Float64Var(&c.templateShare, "templates", 0.5, "share of the sends rendered from a stored template (the rest carry inline content)")
	fs.DurationVar(&c.providerLatency, "provider-latency", 0, "how long every provider fake takes to answer (e.g. 0ms, 50ms)")
	fs.IntVar(&c.workerConcurrency, "worker-concurrency", 0, "the workers' --concurrency, provider calls in flight per channel (0: the workers' default)")
	fs.IntVar(&c.workerBatchSize, "worker-batch-size", 0, "the workers' --batch-size (0: the workers' default)")
	fs.BoolVar(&c.natsSyncAlways, "nats-sync-always", true, "NATS fsyncs every write, as production's sync_interval: always (deploy/k8s)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "how long to wait for the deliveries after the last send before calling them lost")
	fs.IntVar(&c.warmup, "warmup", 2000, "notifications sent and delivered before the measured run, which does not count them (count and rate modes)")
	fs.BoolVar(&c.analyze, "analyze", true, "ANALYZE the database before the measured run (after the warm-up; in backlog mode, before the workers start), as autovacuum has long done in a production database")
	fs.StringVar(&c.serviceLogLevel, "service-log-level", "warn", "the services' --log-level")
	fs.StringVar(&c.profileDir, "profile", "", "directory to write CPU and heap profiles of the notifier, contacts and workers into, taken from the start of the measured run")
	fs.DurationVar(&c.profileTime, "profile-time", 10*time.Second, "how long the CPU profiles run (--profile)")
	fs.DurationVar(&c.unaryDuration, "unary-duration", 20*time.Second, "how long unary Send runs against the notifier, and then against the no-op server (standard mode)")
	fs.DurationVar(&c.batchDuration, "batch-duration", time.Minute, "how long SendBatch runs (standard mode)")
	fs.IntVar(&c.batchCallers, "batch-callers", 8, "concurrent SendBatch calls (standard mode)")
	fs.IntVar(&c.batchSize, "batch-size", 100, "recipients a SendBatch call (standard mode; at most 1,000)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temp dir (binaries, data, logs) instead of removing it")
	fs.IntVar(&c.pgStatements, "pg-statements", 0, "report the N statements that took most of PostgreSQL's time in each measured run (loads pg_stat_statements)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch c.mode {
	case "standard", "count", "rate":
	case "backlog":
		if !set["n"] {
			c.n = 1_000_000
		}
		if !set["c"] {
			c.concurrency = 4
		}
	default:
		return c, fmt.Errorf("--mode %q: want standard, count, rate or backlog", c.mode)
	}
	switch {
	case c.n < 1:
		return c, errors.New("-n must be at least 1")
	case c.warmup < 0 || c.warmup > 1_000_000:
		return c, errors.New("--warmup must be between 0 and 1,000,000")
	case c.concurrency < 1 || c.conns < 1 || c.maxInFlight < 1:
		return c, errors.New("-c, --conns and --max-in-flight must be at least 1")
	case c.mode == "rate" && (c.rate <= 0 || c.duration <= 0):
		return c, errors.New("--rate and --duration must be positive")
	case c.templateShare < 0 || c.templateShare > 1:
		return c, errors.New("--templates must be between 0 and 1")
	case c.profileTime < time.Second:
		return c, errors.New("--profile-time must be at least 1s")
	case c.providerLatency < 0:
		return c, errors.New("--provider-latency must not be negative")
	case c.mode == "standard" && (c.unaryDuration <= 0 || c.batchDuration <= 0):
		return c, errors.New("--unary-duration and --batch-duration must be positive")
	case c.batchCallers < 1:
		return c, errors.New("--batch-callers must be at least 1")
	case c.batchSize < 1 || c.batchSize > maxBatch:
		return c, errors.New("--batch-size must be between 1 and 1,000")
	}
	if _, err := parseMix(c.mix); err != nil {
		return c, err
	}
	if c.profileDir != "" {
		if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
			return c, fmt.Errorf("--profile: %w", err)
		}
	}
	return c, nil
}

// run runs one benchmark, writing the report to out. It stops everything it started before it
// returns, also when ctx ends (Ctrl-C).
func run(ctx context.Context, args []string, out io.Writer) (err error) {
	if len(args) > 0 && args[0] == noopCommand {
		return serveNoop(ctx, args[1:], out)
	}
	cfg, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	cycle, _ := parseMix(cfg.mix)
	m := describeMachine()
	fmt.Fprintf(out, "herald-bench: %s\n", cfg.describe())
	idle := busyCores(time.Second)
	if idle > 0.25 {
		fmt.Fprintf(out, "WARNING: %.2f of %d cores were busy before the benchmark started: other load on this machine will distort the figures\n", idle, m.CPUs)
	}
	began := time.Now()
	s, err := newStack(ctx, cfg, out)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Start(ctx, cfg.mode != "backlog"); err != nil {
		return err
	}
	m.Postgres = postgresVersion(ctx, s.DBURL)
	fmt.Fprintf(out, "machine: %s\n", m)

	// From here on a child that dies ends the run, with the reason.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-s.Failed:
			cancel(err)
		case <-ctx.Done():
		}
	}()
	l, err := prepare(ctx, s, cycle)
	if err := failure(ctx, err); err != nil {
		return err
	}
	defer l.close()
	phases := []string{cfg.mode}
	if cfg.mode == "standard" {
		phases = []string{"unary", "batch"}
	}
	for i, mode := range phases {
		r, err := phase(ctx, s, l, cycle, mode)
		if err := failure(ctx, err); err != nil {
			return err
		}
		r.machine, r.idleBefore = m, idle
		r.print(out)
		if i == len(phases)-1 {
			fmt.Fprintf(out, "whole run %.1fs\n", time.Since(began).Seconds())
		}
		fmt.Fprintln(out, r.summary())
		if err := r.verdict(); err != nil {
			return err
		}
	}
	return nil
}

// failure returns why the run must stop: the death of a child, which ends ctx with its reason
// and makes whatever err the phase under way returned a consequence of it, or else err.
func failure(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// prepare readies the running stack for the measured phases: the load generator, the templates
// and, unless in backlog mode, the warm-up and ANALYZE.
func prepare(ctx context.Context, s *stack, cycle []heraldv1.Channel) (_ *loadgen, err error) {
	cfg := s.cfg
	l, err := newLoadgen(s.NotifierGRPC, s.AdminKey, cfg.conns)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	setupCtx, cancelSetup := context.WithTimeout(ctx, time.Minute)
	err = createTemplates(setupCtx, l.conns[0])
	cancelSetup()
	if err != nil || cfg.mode == "backlog" {
		return l, err
	}
	if cfg.warmup > 0 {
		w := &workload{cycle: cycle, templateShare: cfg.templateShare, offset: warmupOffset}
		if err := warmUp(ctx, s, l, w); err != nil {
			return l, err
		}
	}
	if cfg.analyze {
		if err := analyze(ctx, s); err != nil {
			return l, err
		}
	}
	return l, nil
}

// phase measures one mode (count, rate, backlog; the standard mode's unary and batch) on the
// running stack. Unary then drives the no-op server with the same load.
func phase(ctx context.Context, s *stack, l *loadgen, cycle []heraldv1.Channel, mode string) (*result, error) {
	w := &workload{cycle: cycle, templateShare: s.cfg.templateShare}
	if mode == "batch" {
		w.offset = batchOffset
		fmt.Fprintf(s.Out, "batch: SendBatch of %d from %d callers for %s\n", s.cfg.batchSize, s.cfg.batchCallers, s.cfg.batchDuration)
	}
	if mode == "unary" {
		fmt.Fprintf(s.Out, "unary: Send from %d callers for %s\n", s.cfg.concurrency, s.cfg.unaryDuration)
	}
	t := newTracker(time.Now())
	s.Recv.Cur.Store(t)
	l.reset(w, t)
	r, err := measure(ctx, s, l, t, mode)
	if err != nil || mode != "unary" {
		return r, err
	}
	if r.noop, err = benchNoop(ctx, s, w); err != nil {
		return nil, err
	}
	return r, nil
}

// batchOffset and warmupOffset number the batch phase's and the warm-up's sends, so that their
// addresses (SMS numbers above all, which tell deliveries apart at the Twilio fake) are not
// those of another phase: the other phases' sends count from 0, and phone numbers are unique
// up to 56 million.
const (
	batchOffset  = 25_000_000
	warmupOffset = 50_000_000
)

// warmUp sends cfg.warmup notifications and waits until they are delivered, so that the
// measured run finds connections open, caches filled and the database's tables non-empty.
func warmUp(ctx context.Context, s *stack, l *loadgen, w *workload) error {
	t := newTracker(time.Now())
	s.Recv.Cur.Store(t)
	l.reset(w, t)
	began := time.Now()
	l.runCount(ctx, int64(s.cfg.warmup), s.cfg.concurrency)
	if err := waitDelivered(ctx, t, 2*time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if l.failures.Load() > 0 {
		return fmt.Errorf("warm-up: %d calls failed: %s", l.failures.Load(), l.errorSummary())
	}
	fmt.Fprintf(s.Out, "warm-up: %d notifications sent and delivered in %.1fs (not counted)\n",
		t.Delivered.Load(), time.Since(began).Seconds())
	return nil
}

func (c config) describe() string {
	var what string
	switch c.mode {
	case "standard":
		what = fmt.Sprintf("standard mode, unary Send from %d callers for %s against the notifier and then a no-op server, then SendBatch of %d from %d callers for %s",
			c.concurrency, c.unaryDuration, c.batchSize, c.batchCallers, c.batchDuration)
	case "count":
		what = fmt.Sprintf("count mode, %d notifications from %d concurrent callers", c.n, c.concurrency)
	case "rate":
		what = fmt.Sprintf("rate mode, %.0f notifications/s offered for %s (open loop)", c.rate, c.duration)
	case "backlog":
		what = fmt.Sprintf("backlog mode, %d notifications queued by SendBatch (%d calls of 1,000 at a time) before the workers start", c.n, c.concurrency)
	}
	workers := "workers' default concurrency"
	if c.workerConcurrency > 0 {
		workers = fmt.Sprintf("worker concurrency %d per channel", c.workerConcurrency)
	}
	warmup := fmt.Sprintf("; warm-up %d", c.warmup)
	if c.mode == "backlog" {
		warmup = ""
	}
	return fmt.Sprintf("%s; %d connections; mix %s; %.0f%% templates; provider latency %s; %s; NATS sync-always %t%s; ANALYZE %t",
		what, c.conns, c.mix, c.templateShare*100, c.providerLatency, workers, c.natsSyncAlways, warmup, c.analyze)
}
