package workers_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/services/workers"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	since := now.Add(-time.Hour)
	// Backoffs, before jitter: 10 s, 20 s, 40 s, then 60 s; each waits between half of it and
	// all of it.
	policy := workers.Policy{MaxAttempts: 4, BaseBackoff: 10 * time.Second, MaxBackoff: time.Minute}
	refused := errors.New("refused")
	tests := []struct {
		name    string
		err     error
		attempt int
		jitter  float64
		want    workers.Verdict
	}{
		{name: "sent", err: nil, attempt: 1,
			want: workers.Verdict{State: delivery.Sent}},
		{name: "sent on the last attempt", err: nil, attempt: 4,
			want: workers.Verdict{State: delivery.Sent}},
		{name: "permanent", err: workers.Permanent("bad_address", refused), attempt: 1,
			want: workers.Verdict{State: delivery.Failed, Reason: "bad_address"}},
		{name: "permanent with an effect on the address", attempt: 2,
			err:  workers.PermanentWithEffect("unregistered", workers.DeactivateToken, since, refused),
			want: workers.Verdict{State: delivery.Failed, Reason: "unregistered", Effect: workers.DeactivateToken, Since: since}},
		{name: "permanent on the last attempt is failed, not dead", err: workers.Permanent("bad_address", refused), attempt: 4,
			want: workers.Verdict{State: delivery.Failed, Reason: "bad_address"}},
		{name: "permanent, wrapped", err: fmt.Errorf("send: %w", workers.Permanent("bad_address", refused)), attempt: 1,
			want: workers.Verdict{State: delivery.Failed, Reason: "bad_address"}},
		{name: "transient: the backoff's lower bound without jitter", err: workers.Transient(0, refused), attempt: 1,
			want: workers.Verdict{State: delivery.Retrying, Reason: "provider_unavailable", RetryAt: now.Add(5 * time.Second)}},
		{name: "transient: the backoff grows with the attempt", err: workers.Transient(0, refused), attempt: 3, jitter: 0.5,
			want: workers.Verdict{State: delivery.Retrying, Reason: "provider_unavailable", RetryAt: now.Add(30 * time.Second)}},
		{name: "transient: a Retry-After longer than the backoff", err: workers.Transient(2*time.Minute, refused), attempt: 1,
			want: workers.Verdict{State: delivery.Retrying, Reason: "provider_unavailable", RetryAt: now.Add(2 * time.Minute)}},
		{name: "transient: a Retry-After shorter than the backoff", err: workers.Transient(time.Second, refused), attempt: 2,
			want: workers.Verdict{State: delivery.Retrying, Reason: "provider_unavailable", RetryAt: now.Add(10 * time.Second)}},
		{name: "an error of unknown kind is transient", err: refused, attempt: 1,
			want: workers.Verdict{State: delivery.Retrying, Reason: "provider_error", RetryAt: now.Add(5 * time.Second)}},
		{name: "transient on the last attempt: dead", err: workers.Transient(time.Second, refused), attempt: 4,
			want: workers.Verdict{State: delivery.Dead, Reason: "provider_unavailable"}},
		{name: "unknown on the last attempt: dead", err: refused, attempt: 4,
			want: workers.Verdict{State: delivery.Dead, Reason: "provider_error"}},
		{name: "past the last attempt: dead", err: workers.Transient(0, refused), attempt: 5,
			want: workers.Verdict{State: delivery.Dead, Reason: "provider_unavailable"}},
		{name: "configuration error: given back", err: workers.Misconfigured(refused), attempt: 1,
			want: workers.Verdict{Release: true, Reason: "provider_config"}},
		{name: "configuration error on the last attempt: given back, not dead", err: workers.Misconfigured(refused), attempt: 4,
			want: workers.Verdict{Release: true, Reason: "provider_config"}},
		{name: "not sent: given back after its wait", attempt: 4,
			err:  &workers.NotSentError{Reason: "circuit_open", RetryAfter: 30 * time.Second},
			want: workers.Verdict{Release: true, Reason: "circuit_open", RetryAfter: 30 * time.Second}},
		{name: "not sent, wrapped", attempt: 1,
			err:  fmt.Errorf("chain: %w", &workers.NotSentError{Reason: "rate_limited", RetryAfter: time.Second}),
			want: workers.Verdict{Release: true, Reason: "rate_limited", RetryAfter: time.Second}},
	}
	for _, tt := range tests {
		if got := workers.Decide(tt.err, tt.attempt, policy, now, tt.jitter); got != tt.want {
			t.Errorf("%s: Decide(%v, attempt %d) = %+v, want %+v", tt.name, tt.err, tt.attempt, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	p := workers.Policy{MaxAttempts: 10, BaseBackoff: time.Second, MaxBackoff: 10 * time.Second}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{"first, no jitter: half the base", 1, 0, 0, 500 * time.Millisecond},
		{"first, with jitter", 1, 0, 0.75, 875 * time.Millisecond},
		{"doubles", 3, 0, 0, 2 * time.Second},
		{"capped", 8, 0, 0, 5 * time.Second},
		{"capped, with jitter", 8, 0, 0.5, 7500 * time.Millisecond},
		{"far past the cap does not overflow", 1000, 0, 0, 5 * time.Second},
		{"Retry-After above the backoff", 1, time.Minute, 0.5, time.Minute},
		{"Retry-After below the backoff", 3, time.Second, 0, 2 * time.Second},
	}
	for _, tt := range tests {
		if got := p.Backoff(tt.attempt, tt.retryAfter, tt.jitter); got != tt.want {
			t.Errorf("%s: Backoff(%d, %v, %v) = %v, want %v", tt.name, tt.attempt, tt.retryAfter, tt.jitter, got, tt.want)
		}
	}
}

func TestNotAccepted(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"accepted", nil, false},
		{"refused answer", workers.Refused(0, errors.New("503")), true},
		{"refused answer, wrapped", fmt.Errorf("send: %w", workers.Refused(time.Second, errors.New("429"))), true},
		{"configuration", workers.Misconfigured(errors.New("401")), true},
		{"not sent", &workers.NotSentError{Reason: "circuit_open"}, true},
		{"connection refused", workers.Transient(0, fmt.Errorf("post: %w", refused)), true},
		{"timeout", workers.Transient(0, context.DeadlineExceeded), false},
		{"unknown error", errors.New("connection reset"), false},
		{"permanent", workers.Permanent("rejected", errors.New("400")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := workers.NotAccepted(tc.err); got != tc.want {
				t.Errorf("NotAccepted(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
