package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/server"
	"github.com/heraldhq/herald/internal/tlsconfig"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// The no-op server is the notifier's gRPC contract with nothing behind it: the services' own
// server (internal/server, with its options, the errors interceptor and the app-key
// interceptor) whose Send answers at once. The unary phase drives it with the same load
// generator as the notifier, so the ratio of the two rates says how close Send comes to what
// gRPC, protobuf, authentication and the load generator allow on this machine.

// noopCommand is the hidden subcommand that serves the no-op server: the benchmark runs itself
// with it, as a process of its own, as the notifier runs.
const noopCommand = "noop-server"

// noopKeyEnv carries the one app key the no-op server accepts (in the environment, not in the
// arguments that ps shows).
const noopKeyEnv = "HERALD_NOOP_KEY"

// noopService answers Send as the notifier answers a Send to an address recipient: a
// notification id and one queued delivery for each target of the address.
type noopService struct {
	heraldv1.UnimplementedNotificationServiceServer
}

func (noopService) Send(ctx context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	// The notifier's handler looks the caller up as well: the interceptor guards every method,
	// so a call without one is a wiring bug.
	if _, ok := appkey.CallerFrom(ctx); !ok {
		return nil, errs.E(errs.Unauthenticated, "missing app key")
	}
	res := &heraldv1.SendResponse{NotificationId: uuid.Must(uuid.NewV7()).String()}
	add := func(ch heraldv1.Channel) {
		res.Deliveries = append(res.Deliveries, &heraldv1.Delivery{
			DeliveryId: uuid.Must(uuid.NewV7()).String(), Channel: ch,
			State: heraldv1.DeliveryState_DELIVERY_STATE_QUEUED,
		})
	}
	a := req.GetRecipient().GetAddress()
	if a.GetEmail() != "" {
		add(heraldv1.Channel_CHANNEL_EMAIL)
	}
	if a.GetPhone() != "" {
		add(heraldv1.Channel_CHANNEL_SMS)
	}
	for range a.GetIosTokens() {
		add(heraldv1.Channel_CHANNEL_IOS)
	}
	for range a.GetAndroidTokens() {
		add(heraldv1.Channel_CHANNEL_ANDROID)
	}
	return res, nil
}

// oneKey is an app-key store that holds one admin key and never changes.
type oneKey struct {
	id  string
	rec appkey.Record
}

var _ appkey.Store = oneKey{}

func (k oneKey) Key(_ context.Context, id string) (appkey.Record, error) {
	if id != k.id {
		return appkey.Record{}, appkey.ErrNoKey
	}
	return k.rec, nil
}

func (oneKey) Changes(_ context.Context, horizon uint64) ([]string, uint64, error) {
	return nil, horizon, nil
}

// newNoopServer listens on grpcAddr and httpAddr and serves the no-op NotificationService to
// callers with key; it returns an error for a malformed key or an address it cannot listen on.
func newNoopServer(log *slog.Logger, grpcAddr, httpAddr, key string) (*server.Server, error) {
	k, err := appkey.Parse(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", noopKeyEnv, err)
	}
	store := oneKey{id: k.ID, rec: appkey.Record{
		Caller:     appkey.Caller{AppID: uuid.New(), AppName: "bench", KeyID: k.ID, Admin: true},
		SecretHash: k.Hash(),
	}}
	srv, err := server.New(log, grpcAddr, httpAddr, tlsconfig.Files{},
		errs.UnaryServerInterceptor(log),
		appkey.UnaryServerInterceptor(appkey.NewAuthenticator(store), "/herald.v1."))
	if err != nil {
		return nil, err
	}
	heraldv1.RegisterNotificationServiceServer(srv.GRPC, noopService{})
	return srv, nil
}

// serveNoop is the noop-server subcommand: it serves until ctx ends (SIGTERM) or a listener
// fails.
func serveNoop(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(noopCommand, flag.ContinueOnError)
	fs.SetOutput(out)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	httpAddr := fs.String("http-addr", "127.0.0.1:0", "HTTP listen address (/readyz)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := newNoopServer(log, *grpcAddr, *httpAddr, os.Getenv(noopKeyEnv))
	if err != nil {
		return err
	}
	srv.Start()
	select {
	case <-ctx.Done():
	case err = <-srv.Err():
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Close(closeCtx)
	return err
}

// noopResult is the unary load against the no-op server.
type noopResult struct {
	calls    int64         // answered OK within the window
	window   time.Duration // the unary phase's
	lat      []int64       // per call, ns, sorted
	failures int64
	errors   string
	usages   []usage // the no-op server and the benchmark, during the timed run
}

func (n *noopResult) perS() float64 { return perSecond(n.calls, n.window) }

// ratio is the notifier's accepted/s over the no-op server's Sends/s.
func (r *result) ratio() float64 {
	if r.noop == nil || r.noop.perS() == 0 {
		return 0
	}
	return r.acceptedPerS() / r.noop.perS()
}

// benchNoop starts the no-op server and drives it as the unary phase drove the notifier: the
// same workload w, callers, connections and duration, after a warm-up of as many calls. The
// server stops before it returns, so that it costs the phases after it nothing.
func benchNoop(ctx context.Context, s *stack, w *workload) (*noopResult, error) {
	cfg := s.cfg
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("no-op server: %w", err)
	}
	addrs, err := loopstack.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	p, err := loopstack.StartProc(noopCommand, exe, []string{noopCommand, "--grpc-addr", addrs[0], "--http-addr", addrs[1]},
		[]string{noopKeyEnv + "=" + s.AdminKey}, filepath.Join(s.Logs, noopCommand+".log"), s.Failed)
	if err != nil {
		return nil, err
	}
	defer p.Stop(15 * time.Second)
	if err := loopstack.WaitReady(ctx, noopCommand, "http://"+addrs[1]+"/readyz", nil); err != nil {
		return nil, err
	}
	l, err := newLoadgen(addrs[0], s.AdminKey, cfg.conns)
	if err != nil {
		return nil, err
	}
	defer l.close()
	if cfg.warmup > 0 {
		l.reset(w, newTracker(time.Now()))
		l.runCount(ctx, int64(cfg.warmup), cfg.concurrency)
		if l.failures.Load() > 0 {
			return nil, fmt.Errorf("no-op server warm-up: %d calls failed: %s", l.failures.Load(), l.errorSummary())
		}
	}
	// The answers go to a tracker of their own, which nothing delivers to: the load generator
	// does the same work per answer as against the notifier.
	l.reset(w, newTracker(time.Now()))
	resetPeak(p.PID())
	resetPeak(os.Getpid())
	pids := map[string]int{noopCommand: p.PID(), "bench": os.Getpid()}
	cpu0 := cpuOf(pids)
	start := time.Now()
	fmt.Fprintf(s.Out, "no-op server: %d callers for %s\n", cfg.concurrency, cfg.unaryDuration)
	l.runFor(ctx, cfg.unaryDuration, cfg.concurrency)
	loadTime := time.Since(start)
	cpu1 := cpuOf(pids)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := &noopResult{calls: l.inTime.Load(), window: cfg.unaryDuration, failures: l.failures.Load(),
		errors: l.errorSummary(), lat: l.latencies}
	slices.Sort(n.lat)
	for _, name := range []string{noopCommand, "bench"} {
		u := usage{name: name, cpu: cpu1[name] - cpu0[name]}
		u.cores = u.cpu / loadTime.Seconds()
		if mem, err := memKB(pids[name], "VmHWM"); err == nil {
			u.peakMB = float64(mem["VmHWM"]) / 1024
		}
		n.usages = append(n.usages, u)
	}
	return n, nil
}

// cpuOf returns the CPU seconds used so far by each named process.
func cpuOf(pids map[string]int) map[string]float64 {
	m := map[string]float64{}
	for name, pid := range pids {
		if self, _, err := cpuTimes(pid); err == nil {
			m[name] = self
		}
	}
	return m
}
