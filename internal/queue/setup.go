package queue

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// DefaultSetupTry bounds one try of a set-up step when Setup.Try is 0.
const DefaultSetupTry = 10 * time.Second

// Setup runs a service's start-up calls to JetStream that may be made again (creating or
// updating a stream, a consumer or a bucket), each until it succeeds or the start-up's context
// ends. Each try has Try to finish. A JetStream request takes its deadline from its context
// when that has one, and a cluster that is electing a leader may never answer a request: with
// only the start-up's deadline, one lost request would hold the start-up until that deadline,
// and a service restarted right after a NATS server would not get ready for a minute.
type Setup struct {
	// Log gets each failed try, with what names the step.
	Log *slog.Logger
	// Try bounds one try (0: DefaultSetupTry).
	Try time.Duration
}

// Run runs step until it succeeds or ctx ends, and returns its last error.
func (s Setup) Run(ctx context.Context, what string, step func(context.Context) error) error {
	try := cmp.Or(s.Try, DefaultSetupTry)
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		tctx, cancel := context.WithTimeout(ctx, try)
		defer cancel()
		last = step(tctx)
		return struct{}{}, last
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{InitialInterval: 200 * time.Millisecond,
			RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 5 * time.Second}),
		backoff.WithMaxElapsedTime(0), // ctx bounds the tries
		backoff.WithNotify(func(err error, next time.Duration) {
			s.Log.Warn("a JetStream set-up step failed; trying it again", "step", what, "err", err,
				"retry_in", next.Round(time.Millisecond).String())
		}))
	if err != nil && last != nil {
		return last // what went wrong, rather than that ctx ended while waiting to try again
	}
	return err
}
