package herald

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// The backoff between attempts after UNAVAILABLE: a random wait up to base, doubled after each
// attempt up to the cap ("full jitter"), so that clients cut off together do not come back
// together.
const (
	backoffBase = 100 * time.Millisecond
	backoffCap  = 5 * time.Second
)

// notIdempotent lists the methods of which each call makes something new, so that repeating
// one after an UNAVAILABLE, which the server may give after it acted, could make it twice.
// Send and SendBatch are not here because fillIdempotencyKeys makes them safe to repeat.
var notIdempotent = map[string]bool{
	heraldv1.TemplateService_CreateTemplate_FullMethodName: true, // a new version per call
}

// retrier is a unary client interceptor that gives a call its default deadline and retries it.
//
// It is written by hand because grpc-go's retry policy (a service config's retryPolicy) waits
// by its own backoff and does not honour google.rpc.RetryInfo, which is how Herald tells an app
// over its request rate when to call again: sooner is refused again, later is needlessly slow.
type retrier struct {
	attempts int
	timeout  time.Duration
	// sleep waits d or until ctx ends, whichever is first, and then returns ctx.Err(). Tests
	// replace it to see the waits without spending them.
	sleep func(ctx context.Context, d time.Duration) error
	// jitter returns a random duration from 0 to limit.
	jitter func(limit time.Duration) time.Duration
}

func (r retrier) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok && r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || attempt >= r.attempts {
			return err
		}
		wait, ok := r.wait(method, err, attempt)
		if !ok {
			return err
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return err
		}
		if r.sleep(ctx, wait) != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// wait returns how long to wait before another attempt of method, after err answered the
// attempt-th one, or false when another attempt would not do better.
func (r retrier) wait(method string, err error, attempt int) (time.Duration, bool) {
	st := status.Convert(err)
	delay, told := retryDelay(st)
	switch st.Code() {
	case codes.ResourceExhausted:
		// Without RetryInfo it is no rate limit: a message over maxMessageSize (refused by the
		// client itself) is as large on every attempt.
		return delay, told
	case codes.Unavailable:
		if notIdempotent[method] {
			return 0, false
		}
		if told {
			return delay, true
		}
		return r.jitter(min(backoffCap, backoffBase<<min(attempt-1, 16))), true
	}
	return 0, false
}

// retryDelay returns the delay of st's RetryInfo detail, if it has one.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok && info.GetRetryDelay() != nil {
			return max(0, info.GetRetryDelay().AsDuration()), true
		}
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func jitter(limit time.Duration) time.Duration { return rand.N(limit + 1) }
