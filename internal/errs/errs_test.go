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
		{"aborted", E(Aborted, "changed since"), codes.Aborted, "changed since"},
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
	if (&Violations{}).Err() != nil {
		t.Fatal("no violations must be no error")
	}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name string
		add  func(v *Violations) bool
		ok   bool
		want string
	}{
		{"bytes at the limit", func(v *Violations) bool { return v.Bytes("name", "abcd", 4) }, true, ""},
		{"bytes over the limit", func(v *Violations) bool { return v.Bytes("name", "abcde", 4) }, false,
			"invalid request; name: at most 4 bytes, got 5"},
		{"count at the limit", func(v *Violations) bool { return v.Count("recipients", 1000, 1000) }, true, ""},
		{"count over the limit", func(v *Violations) bool { return v.Count("recipients", 1200, 1000) }, false,
			"invalid request; recipients: at most 1000, got 1200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v Violations
			if ok := tt.add(&v); ok != tt.ok {
				t.Fatalf("fits = %v, want %v", ok, tt.ok)
			}
			st := Status(v.Err())
			if tt.ok {
				if st != nil {
					t.Fatalf("Status = %v, want none", st)
				}
				return
			}
			if st.Code() != codes.InvalidArgument || st.Message() != tt.want {
				t.Fatalf("Status = %s %q, want InvalidArgument %q", st.Code(), st.Message(), tt.want)
			}
		})
	}
}

func TestViolationsAreBounded(t *testing.T) {
	for _, n := range []int{MaxViolations, MaxViolations + 1, 10 * MaxViolations} {
		var v Violations
		for i := range n {
			v.Add(fmt.Sprintf("channels[%d]", i), "is repeated")
		}
		var e *Error
		if !errors.As(v.Err(), &e) {
			t.Fatalf("%d violations: no error", n)
		}
		want := FieldViolation{fmt.Sprintf("channels[%d]", n-1), "is repeated"}
		if n > MaxViolations {
			want = FieldViolation{"request", fmt.Sprintf("and %d more violations", n-MaxViolations)}
		}
		if len(e.Fields) != min(n, MaxViolations+1) || e.Fields[len(e.Fields)-1] != want {
			t.Fatalf("%d violations: %d reported, the last %+v; want %d, the last %+v",
				n, len(e.Fields), e.Fields[len(e.Fields)-1], min(n, MaxViolations+1), want)
		}
	}
}
