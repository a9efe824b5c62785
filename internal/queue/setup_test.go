package queue_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/queue"
)

// TestSetupBoundsEachTry checks that a try that is never answered (a JetStream request lost in
// a leader election) is given up after its own bound and made again, not waited on until the
// start-up's deadline.
func TestSetupBoundsEachTry(t *testing.T) {
	// The start-up's deadline only ends a failing test.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tries := 0
	err := queue.Setup{Log: slog.New(slog.DiscardHandler), Try: 10 * time.Millisecond}.Run(ctx, "test", func(ctx context.Context) error {
		tries++
		if tries == 1 {
			<-ctx.Done() // never answered
			return ctx.Err()
		}
		return nil
	})
	if err != nil || tries != 2 {
		t.Errorf("Setup = %v after %d tries; want success on the second", err, tries)
	}
}

// TestSetupReturnsTheStepsError checks that a step that fails until the start-up ends is tried
// again meanwhile, and that the error says what failed rather than that the start-up ended.
func TestSetupReturnsTheStepsError(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	refused := errors.New("insufficient resources")
	tries := 0
	err := queue.Setup{Log: slog.New(slog.DiscardHandler), Try: time.Second}.Run(ctx, "test", func(context.Context) error {
		if tries++; tries == 3 {
			cancel() // the start-up gives up
		}
		return refused
	})
	if !errors.Is(err, refused) || tries != 3 {
		t.Errorf("Setup = %v after %d tries; want %v after 3", err, tries, refused)
	}
}
