package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// measure runs the load of one mode (count, rate, backlog; the standard mode's unary and
// batch), waits for the deliveries, and gathers the figures.
func measure(ctx context.Context, s *stack, l *loadgen, t *tracker, mode string) (*result, error) {
	cfg := s.cfg
	r := &result{cfg: cfg, mode: mode}
	s.resetPeaks()
	if cfg.pgStatements > 0 {
		if err := resetStatements(ctx, s.DBURL); err != nil {
			return nil, err
		}
	}
	pg := startPGSampler(s.PGPID)
	db0 := readDBCounters(ctx, s.DBURL)
	cpu0 := s.cpu()
	busy0, soft0 := machineCPU()
	start := time.Now()
	prog := startProgress(s.Out, l, t, start)
	profiled := s.startProfiles()
	defer profiled()

	switch mode {
	case "count":
		l.runCount(ctx, cfg.n, cfg.concurrency)
	case "rate":
		l.runRate(ctx, cfg.rate, cfg.duration, cfg.maxInFlight)
	case "backlog":
		l.runBatches(ctx, cfg.concurrency, maxBatch, cfg.n, time.Time{})
	case "unary":
		l.runFor(ctx, cfg.unaryDuration, cfg.concurrency)
	case "batch":
		l.runBatches(ctx, cfg.batchCallers, cfg.batchSize, math.MaxInt64, time.Now().Add(cfg.batchDuration))
	}
	r.loadTime = time.Since(start)
	if err := ctx.Err(); err != nil {
		prog.stop()
		pg.stop()
		return nil, err
	}
	deliverFrom := start
	if mode == "backlog" {
		prog.pause()
		fmt.Fprintf(s.Out, "queued %d deliveries in %.1fs (%.0f/s); %d already at the providers; starting the workers\n",
			t.Queued.Load(), r.loadTime.Seconds(), float64(t.Queued.Load())/r.loadTime.Seconds(), t.Delivered.Load())
		// The figures per process cover the drain; the queueing phase gets a line of its own.
		cpuQ := s.cpu()
		busyQ, softQ := machineCPU()
		r.queueWindow = time.Since(start)
		for _, name := range []string{"nats", "notifier", "contacts", "postgres", "bench"} {
			r.queueCores = append(r.queueCores, usage{name: name, cpu: cpuQ[name] - cpu0[name],
				cores: (cpuQ[name] - cpu0[name]) / r.queueWindow.Seconds()})
		}
		r.queueBusy = (busyQ - busy0) / r.queueWindow.Seconds()
		cpu0, busy0, soft0 = cpuQ, busyQ, softQ
		if cfg.analyze {
			if err := analyze(ctx, s); err != nil {
				prog.stop()
				pg.stop()
				return nil, err
			}
		}
		deliverFrom = time.Now()
		if err := s.StartWorkers(ctx, nil); err != nil {
			prog.stop()
			pg.stop()
			return nil, err
		}
		r.workersStart = time.Since(deliverFrom)
		prog.resume()
	}

	waitErr := waitDelivered(ctx, t, cfg.timeout)
	prog.stop()
	end := t.LastReceipt()
	if end.IsZero() || waitErr != nil {
		end = time.Now()
	}
	cpu1 := s.cpu()
	busy1, soft1 := machineCPU()
	r.db = readDBCounters(ctx, s.DBURL).sub(db0)
	if cfg.pgStatements > 0 {
		if err := printStatements(ctx, s.DBURL, cfg.pgStatements, s.Out); err != nil {
			fmt.Fprintln(s.Out, "pg_stat_statements:", err)
		}
	}
	r.pgPeakKB, r.pgProcs = pg.stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	r.window = end.Sub(deliverFrom)
	r.deliverTime = end.Sub(deliverFrom)
	if first := t.FirstReceipt(); !first.IsZero() && mode == "backlog" {
		r.drainFromFirst = end.Sub(first)
	}
	r.machineBusy = (busy1 - busy0) / r.window.Seconds()
	r.softirq = (soft1 - soft0) / r.window.Seconds()
	r.accepted = l.sent.Load()
	r.inTime = l.inTime.Load()
	r.failures = l.failures.Load()
	r.errors = l.errorSummary()
	r.notQueued = l.notQueuedSummary()
	r.deliveries = t.Queued.Load()
	r.delivered = t.Delivered.Load()
	r.waitErr = waitErr

	// What the database says, once the workers have recorded the last outcomes.
	states, err := deliveryStates(ctx, s.DBURL, 30*time.Second)
	if err != nil {
		fmt.Fprintln(s.Out, "delivery states:", err)
	}
	r.states = states
	r.duplicates = t.Duplicates.Load()
	r.strays = int64(t.Strays()) + t.BadIDs.Load()
	r.sendLat = l.latencies
	r.e2eLat = t.E2E()
	slices.Sort(r.sendLat)
	slices.Sort(r.e2eLat)
	r.usages = s.usage(cpu0, cpu1, r.window)
	r.usages = append(r.usages, usage{name: "postgres", peakMB: float64(r.pgPeakKB) / 1024,
		cpu: cpu1["postgres"] - cpu0["postgres"], note: fmt.Sprintf("PSS of up to %d processes", r.pgProcs)})
	return r, nil
}

// waitDelivered waits until the fakes have received every delivery that Send accepted, giving
// up after stall without a new delivery. The default stall outlasts the notifier's
// --republish-after (5 minutes), so that a lost publish shows as a delay, not a loss.
func waitDelivered(ctx context.Context, t *tracker, stall time.Duration) error {
	last, lastChange := t.Delivered.Load(), time.Now()
	for {
		d := t.Delivered.Load()
		if d >= t.Queued.Load() {
			return nil
		}
		if d != last {
			last, lastChange = d, time.Now()
		}
		if time.Since(lastChange) > stall {
			return fmt.Errorf("%d of %d deliveries did not reach the providers (no delivery for %s)",
				t.Queued.Load()-d, t.Queued.Load(), stall)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// deliveryStates counts the deliveries by state, waiting up to limit for the workers to record
// the outcomes of the last sends.
func deliveryStates(ctx context.Context, url string, limit time.Duration) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	for {
		rows, _ := conn.Query(ctx, `SELECT state, count(*) FROM delivery.deliveries GROUP BY state`)
		states := map[string]int64{}
		var state string
		var n int64
		_, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
			states[state] = n
			return nil
		})
		if err != nil {
			return nil, err
		}
		if states["queued"]+states["sending"]+states["retrying"] == 0 {
			return states, nil
		}
		select {
		case <-ctx.Done():
			return states, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// analyze runs ANALYZE on Herald's database. A fresh database has no statistics until
// autovacuum's first pass (up to a minute after the tables fill), and plans made without them
// can scan whole tables; a production database has long had them.
func analyze(ctx context.Context, s *stack) error {
	began := time.Now()
	conn, err := pgx.Connect(ctx, s.DBURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	fmt.Fprintf(s.Out, "ANALYZE in %.1fs\n", time.Since(began).Seconds())
	return nil
}

// dbCounters are PostgreSQL's cumulative counters that tell what the database did for the load.
type dbCounters struct {
	commits, walSyncs, walBytes, seqScans, seqRows int64
}

// readDBCounters reads them; it returns zeros if it cannot.
func readDBCounters(ctx context.Context, url string) dbCounters {
	var c dbCounters
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return c
	}
	defer conn.Close(context.Background())
	_ = conn.QueryRow(ctx, `
		SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
			(SELECT wal_sync FROM pg_stat_wal), (SELECT wal_bytes::bigint FROM pg_stat_wal),
			(SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'deliveries'),
			(SELECT coalesce(sum(seq_tup_read), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'deliveries')`).
		Scan(&c.commits, &c.walSyncs, &c.walBytes, &c.seqScans, &c.seqRows)
	return c
}

func (c dbCounters) sub(d dbCounters) dbCounters {
	return dbCounters{c.commits - d.commits, c.walSyncs - d.walSyncs, c.walBytes - d.walBytes,
		c.seqScans - d.seqScans, c.seqRows - d.seqRows}
}

// postgresVersion returns the server's version, or "".
func postgresVersion(ctx context.Context, url string) string {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return ""
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return ""
	}
	return "PostgreSQL " + v
}

// cpu returns the CPU seconds used so far by each of the stack's processes, PostgreSQL's
// postmaster with all its children (and those that exited), and the benchmark itself (load
// generator and provider fakes).
func (s *stack) cpu() map[string]float64 {
	m := map[string]float64{}
	for _, p := range s.Services() {
		if self, _, err := cpuTimes(p.PID()); err == nil {
			m[p.Name] = self
		}
	}
	if self, exited, err := cpuTimes(s.PGPID); err == nil {
		total := self + exited
		for _, c := range children(s.PGPID) {
			if cs, _, err := cpuTimes(c); err == nil {
				total += cs
			}
		}
		m["postgres"] = total
	}
	if self, _, err := cpuTimes(os.Getpid()); err == nil {
		m["bench"] = self
	}
	return m
}

// usage is one process's peak memory and the CPU it used during the measured window.
type usage struct {
	name   string
	peakMB float64
	cpu    float64 // seconds
	cores  float64 // cpu / window
	note   string
}

// usage returns the peak RSS (VmHWM) and window CPU of the Go processes and the benchmark.
func (s *stack) usage(cpu0, cpu1 map[string]float64, window time.Duration) []usage {
	var out []usage
	add := func(name string, pid int, note string) {
		u := usage{name: name, cpu: cpu1[name] - cpu0[name], note: note}
		if mem, err := memKB(pid, "VmHWM"); err == nil {
			u.peakMB = float64(mem["VmHWM"]) / 1024
		}
		out = append(out, u)
	}
	for _, p := range s.Services() {
		add(p.Name, p.PID(), "")
	}
	add("bench", os.Getpid(), "load generator and provider fakes")
	for i := range out {
		out[i].cores = out[i].cpu / window.Seconds()
	}
	return out
}

// resetPeaks starts the peak RSS (VmHWM) of the Go processes and the benchmark afresh, so that
// a phase's figure is its own, not the warm-up's or an earlier phase's. A process whose peak
// cannot be reset (a kernel before 4.0) keeps its peak since start.
func (s *stack) resetPeaks() {
	resetPeak(os.Getpid())
	for _, p := range s.Services() {
		resetPeak(p.PID())
	}
}

func resetPeak(pid int) { _ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) }

// pgSampler samples the memory of PostgreSQL's processes every second. Their RSS counts the
// shared buffers once per process that touched them, so it sums PSS instead (shared pages
// divided among the processes that share them).
type pgSampler struct {
	pid   int
	done  chan struct{}
	wg    sync.WaitGroup
	peak  int64 // kB
	procs int
}

func startPGSampler(pid int) *pgSampler {
	p := &pgSampler{pid: pid, done: make(chan struct{})}
	p.wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			p.sample()
			select {
			case <-p.done:
				p.sample()
				return
			case <-tick.C:
			}
		}
	})
	return p
}

func (p *pgSampler) sample() {
	pids := append([]int{p.pid}, children(p.pid)...)
	var sum int64
	for _, pid := range pids {
		if m, err := kBFields(filepath.Join("/proc", fmt.Sprint(pid), "smaps_rollup"), "Pss"); err == nil {
			sum += m["Pss"]
		}
	}
	p.peak = max(p.peak, sum)
	p.procs = max(p.procs, len(pids))
}

// stop ends the sampling and returns the peak PSS sum (kB) and the most processes seen.
func (p *pgSampler) stop() (int64, int) {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
	return p.peak, p.procs
}

// progress prints how far the run is every few seconds.
type progress struct {
	mu     sync.Mutex
	paused bool
	done   chan struct{}
	wg     sync.WaitGroup
}

func startProgress(out io.Writer, l *loadgen, t *tracker, start time.Time) *progress {
	p := &progress{done: make(chan struct{})}
	p.wg.Go(func() {
		const every = 5 * time.Second
		tick := time.NewTicker(every)
		defer tick.Stop()
		var lastSent, lastDelivered int64
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			sent, delivered := l.sent.Load(), t.Delivered.Load()
			p.mu.Lock()
			if !p.paused {
				fmt.Fprintf(out, "  %4.0fs  accepted %d (%.0f/s)  delivered %d (%.0f/s)  waiting %d\n",
					time.Since(start).Seconds(), sent, float64(sent-lastSent)/every.Seconds(),
					delivered, float64(delivered-lastDelivered)/every.Seconds(), t.Queued.Load()-delivered)
			}
			p.mu.Unlock()
			lastSent, lastDelivered = sent, delivered
		}
	})
	return p
}

func (p *progress) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *progress) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

func (p *progress) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}
