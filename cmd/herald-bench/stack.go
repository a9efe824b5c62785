package main

import (
	"context"
	"io"

	"github.com/heraldhq/herald/cmd/internal/loopstack"
)

// stack is Herald as the benchmark runs it (package loopstack): a private PostgreSQL, NATS and
// the three services, each its own process on loopback, and the provider fakes inside the
// benchmark's process.
type stack struct {
	*loopstack.Stack
	cfg   config
	pprof map[string]string // service → its pprof listener, with --profile
}

// The tracker and its keys are loopstack's.
type (
	tracker = loopstack.Tracker
	key     = loopstack.Key
)

var (
	newTracker = loopstack.NewTracker
	idKey      = loopstack.IDKey
	phoneKey   = loopstack.PhoneKey
	freeAddr   = loopstack.FreeAddr
)

// newStack makes the temp dir and builds the binaries into it.
func newStack(ctx context.Context, cfg config, out io.Writer) (*stack, error) {
	s := &stack{cfg: cfg}
	args := map[string][]string{}
	for _, name := range []string{"notifier", "contacts", "workers"} {
		a, err := s.pprofArgs(name)
		if err != nil {
			return nil, err
		}
		args[name] = a
	}
	var settings []string
	if cfg.pgStatements > 0 {
		settings = statementSettings
	}
	ls, err := loopstack.New(ctx, loopstack.Config{
		TempPrefix:        "herald-bench-",
		NATSSyncAlways:    cfg.natsSyncAlways,
		ServiceLogLevel:   cfg.serviceLogLevel,
		WorkerConcurrency: cfg.workerConcurrency,
		WorkerBatchSize:   cfg.workerBatchSize,
		ProviderLatency:   cfg.providerLatency,
		BootstrapApp:      "bench",
		Args:              args,
		Keep:              cfg.keep,
		PostgresSettings:  settings,
	}, out)
	if err != nil {
		return nil, err
	}
	s.Stack = ls
	return s, nil
}
