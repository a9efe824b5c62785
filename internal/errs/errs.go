// Package errs is Herald's error vocabulary: every service returns these kinds from its domain
// code, and the gRPC edge maps them to status codes in one table (Status). Internal causes stay
// in the logs; clients see a message written for them.
package errs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds of error.
const (
	Internal           Kind = iota // a bug or an unexpected failure: not the caller's doing
	Invalid                        // the request is malformed; see the field violations
	NotFound                       // the named thing does not exist (or is not the caller's)
	Conflict                       // the request contradicts existing state
	Unauthenticated                // no valid credentials
	PermissionDenied               // valid credentials, not allowed
	Exhausted                      // a rate limit or quota; see RetryAfter
	Unavailable                    // a dependency is down; retrying later may work
	FailedPrecondition             // the system is not in a state to do this
	Aborted                        // a concurrent change came first: read again, redo and retry
)

var codeOf = map[Kind]codes.Code{
	Internal:           codes.Internal,
	Invalid:            codes.InvalidArgument,
	NotFound:           codes.NotFound,
	Conflict:           codes.AlreadyExists,
	Unauthenticated:    codes.Unauthenticated,
	PermissionDenied:   codes.PermissionDenied,
	Exhausted:          codes.ResourceExhausted,
	Unavailable:        codes.Unavailable,
	FailedPrecondition: codes.FailedPrecondition,
	Aborted:            codes.Aborted,
}

// FieldViolation names one bad field of a request and why it is bad.
type FieldViolation struct {
	Field  string // dotted path, e.g. "recipient.address.email"
	Reason string
}

// Error is an error of a known kind with a message safe to show the caller.
type Error struct {
	Kind       Kind
	Message    string
	Fields     []FieldViolation
	RetryAfter time.Duration
	// Err is the internal cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	msg := e.Message
	for _, f := range e.Fields {
		msg += fmt.Sprintf("; %s: %s", f.Field, f.Reason)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// E returns an error of the given kind with a message formatted for the caller.
func E(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of the given kind whose message is for the caller and whose cause err
// is kept for the logs.
func Wrap(k Kind, err error, message string) *Error {
	return &Error{Kind: k, Message: message, Err: err}
}

// Field returns an Invalid error for one field.
func Field(field, reason string) *Error {
	return &Error{Kind: Invalid, Message: "invalid request", Fields: []FieldViolation{{field, reason}}}
}

// Violations collects field violations; Err returns nil when there are none. The zero value
// is ready to use.
type Violations struct {
	list []FieldViolation
	more int // violations past MaxViolations: counted, not kept
}

// MaxViolations is the most field violations an error lists: a request with more gets the
// first ones and a count of the rest, so that a bad request cannot make a huge answer (nor
// cost memory in proportion to its entries).
const MaxViolations = 100

// Add records that field is bad for reason.
func (v *Violations) Add(field, reason string) {
	if len(v.list) == MaxViolations {
		v.more++
		return
	}
	v.list = append(v.list, FieldViolation{field, reason})
}

// Bytes records a violation when s is longer than max bytes ("at most 256 bytes, got 300")
// and reports whether s fits.
func (v *Violations) Bytes(field, s string, max int) bool {
	if len(s) > max {
		v.Add(field, fmt.Sprintf("at most %d bytes, got %d", max, len(s)))
		return false
	}
	return true
}

// Count records a violation when a repeated or map field holds more than max entries
// ("at most 1000, got 1200") and reports whether it fits. Check counts before the entries, so
// that an oversized list is refused without looking at each of its entries.
func (v *Violations) Count(field string, n, max int) bool {
	if n > max {
		v.Add(field, fmt.Sprintf("at most %d, got %d", max, n))
		return false
	}
	return true
}

// Err returns an Invalid error holding the violations, or nil. Past MaxViolations, one more
// violation of the field "request" counts the rest.
func (v *Violations) Err() error {
	if len(v.list) == 0 {
		return nil
	}
	fields := v.list
	if v.more > 0 {
		fields = append(fields[:len(fields):len(fields)], FieldViolation{"request", fmt.Sprintf("and %d more violations", v.more)})
	}
	return &Error{Kind: Invalid, Message: "invalid request", Fields: fields}
}

// KindOf returns the kind of err: the kind of the first *Error in its chain, Unavailable for
// context deadlines and cancellations, Internal otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Unavailable
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// Status turns err into the gRPC status a client sees: the kind's code, the message written for
// the caller (never the internal cause), BadRequest details for field violations and RetryInfo
// for exhausted limits. A gRPC status error passes through as it is, but only when it is err
// itself: one wrapped inside another error (a downstream service's answer kept as the cause of
// an *Error, say) would otherwise bring the whole chain's text, internal causes included, to the
// client (status.FromError puts err.Error() in the message).
func Status(err error) *status.Status {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e.status()
	}
	if s, ok := err.(interface{ GRPCStatus() *status.Status }); ok && s.GRPCStatus() != nil {
		return s.GRPCStatus()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "canceled")
	}
	return status.New(codes.Internal, "internal error")
}

// status is the client's view of e: its kind's code and its message, never its cause.
func (e *Error) status() *status.Status {
	msg := e.Message
	if e.Kind == Internal || msg == "" {
		msg = "internal error"
	}
	for _, f := range e.Fields {
		msg += fmt.Sprintf("; %s: %s", f.Field, f.Reason)
	}
	st := status.New(codeOf[e.Kind], msg)
	var details []protoadapt.MessageV1
	if len(e.Fields) > 0 {
		br := &errdetails.BadRequest{}
		for _, f := range e.Fields {
			br.FieldViolations = append(br.FieldViolations,
				&errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Reason})
		}
		details = append(details, br)
	}
	if e.Kind == Exhausted && e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if len(details) > 0 {
		if withDetails, err := st.WithDetails(details...); err == nil {
			st = withDetails
		}
	}
	return st
}

// UnaryServerInterceptor logs internal failures with their causes and answers the client with
// Status(err), so handlers return domain errors and nothing else decides codes.
func UnaryServerInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", r,
					"stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error")
			}
		}()
		resp, err = h(ctx, req)
		if err == nil {
			return resp, nil
		}
		st := Status(err)
		switch st.Code() {
		case codes.Internal, codes.Unavailable, codes.Unknown:
			log.ErrorContext(ctx, "request failed", "method", info.FullMethod, "code", st.Code().String(), "err", err)
		}
		return nil, st.Err()
	}
}
