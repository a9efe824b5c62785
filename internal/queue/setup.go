package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// SetupTry bounds one try of a set-up step that Setup runs.
const SetupTry = 10 * time.Second

// Setup runs step, a start-up call to JetStream that may be made again (creating or updating a
// stream, a consumer or a bucket), until it succeeds or ctx ends, and returns its last error.
// Each try has try to finish. A JetStream request takes its deadline from its context when that
// has one, and a cluster that is electing a leader may never answer a request: with only the
// start-up's deadline, one lost request would hold the start-up until that deadline, and a
// service restarted right after a NATS server would not get ready for a minute. Failed tries
// are logged, with what names the step.
func Setup(ctx context.Context, try time.Duration, log *slog.Logger, what string, step func(context.Context) error) error {
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
			log.Warn("a JetStream set-up step failed; trying it again", "step", what, "err", err,
				"retry_in", next.Round(time.Millisecond).String())
		}))
	if err != nil && last != nil {
		return last // what went wrong, rather than that ctx ended while waiting to try again
	}
	return err
}
