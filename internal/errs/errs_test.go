package errs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatus(t *testing.T) {
	secret := errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user herald")
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"invalid", Field("recipient.address.email", "must be an email address"), codes.InvalidArgument,
			"invalid request; recipient.address.email: must be an email address"},
		{"not found", E(NotFound, "template %q not found", "welcome"), codes.NotFound, `template "welcome" not found`},
		{"conflict", E(Conflict, "taken"), codes.AlreadyExists, "taken"},
		{"unauthenticated", E(Unauthenticated, "bad key"), codes.Unauthenticated, "bad key"},
		{"permission", E(PermissionDenied, "no"), codes.PermissionDenied, "no"},
		{"exhausted", &Error{Kind: Exhausted, Message: "slow down", RetryAfter: time.Second}, codes.ResourceExhausted, "slow down"},
		{"unavailable keeps its cause out", Wrap(Unavailable, secret, "try again"), codes.Unavailable, "try again"},
		{"internal hides its message", Wrap(Internal, secret, "boom"), codes.Internal, "internal error"},
		{"wrapped", fmt.Errorf("send: %w", E(NotFound, "gone")), codes.NotFound, "gone"},
		{"plain error", secret, codes.Internal, "internal error"},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded"},
		{"grpc status passes", status.Error(codes.Aborted, "as is"), codes.Aborted, "as is"},
		// A downstream service's answer kept as a cause: its text (and the chain's) stays in the
		// logs, the kind decides the code.
		{"wrapped grpc status keeps its cause out", Wrap(Unavailable,
			status.Error(codes.Unavailable, "connection error: dial tcp 10.0.0.7:7401: connect: connection refused"),
			"the contacts service is unavailable; try again"), codes.Unavailable, "the contacts service is unavailable; try again"},
		{"wrapped grpc status of another code", Wrap(Invalid, status.Error(codes.PermissionDenied, "password rejected"),
			"the recipient is not valid"), codes.InvalidArgument, "the recipient is not valid"},
		{"grpc status wrapped in a plain error", fmt.Errorf("call 10.0.0.7: %w", status.Error(codes.NotFound, "x")),
			codes.Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := Status(tt.err)
			if st.Code() != tt.code || st.Message() != tt.msg {
				t.Fatalf("Status = %s %q, want %s %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if strings.Contains(st.Message(), "10.0.0.7") || strings.Contains(st.Message(), "password") {
				t.Fatalf("internal cause leaked: %q", st.Message())
			}
		})
	}
}

func TestStatusDetails(t *testing.T) {
	var v Violations
	v.Add("a", "bad")
	v.Add("b.c", "worse")
	st := Status(v.Err())
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if x, ok := d.(*errdetails.BadRequest); ok {
			br = x
		}
	}
	if br == nil || len(br.FieldViolations) != 2 || br.FieldViolations[1].Field != "b.c" ||
		br.FieldViolations[1].Description != "worse" {
		t.Fatalf("details = %v", st.Details())
	}

	st = Status(&Error{Kind: Exhausted, Message: "later", RetryAfter: 3 * time.Second})
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		if x, ok := d.(*errdetails.RetryInfo); ok {
			ri = x
		}
	}
	if ri == nil || ri.RetryDelay.AsDuration() != 3*time.Second {
		t.Fatalf("details = %v", st.Details())
	}
	if Violations(nil).Err() != nil {
		t.Fatal("no violations must be no error")
	}
}
