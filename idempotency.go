package herald

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// fillIdempotencyKeys is a unary client interceptor that gives a Send, and each recipient of a
// SendBatch, a random idempotency key when it has none. The server answers a repeat of a key
// with the first result, so the retries after it can never send a notification twice. The keys
// go on a clone: the caller's request is left as it was.
//
// A key made here is unique to the call, so an answer of Duplicate for it can only mean that an
// earlier attempt of the same call went through: the notification is this call's, and the
// answer says so by clearing Duplicate.
func fillIdempotencyKeys(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch r := req.(type) {
	case *heraldv1.SendRequest:
		if r.GetIdempotencyKey() != "" {
			break
		}
		r = proto.CloneOf(r)
		r.IdempotencyKey = uuid.NewString()
		if err := invoker(ctx, method, r, reply, cc, opts...); err != nil {
			return err
		}
		if res, ok := reply.(*heraldv1.SendResponse); ok {
			res.Duplicate = false
		}
		return nil
	case *heraldv1.SendBatchRequest:
		var made []bool
		for i, rcpt := range r.GetRecipients() {
			if rcpt.GetIdempotencyKey() != "" {
				continue
			}
			if made == nil {
				r = proto.CloneOf(r)
				made = make([]bool, len(r.Recipients))
			}
			r.Recipients[i].IdempotencyKey = uuid.NewString()
			made[i] = true
		}
		if made == nil {
			break
		}
		if err := invoker(ctx, method, r, reply, cc, opts...); err != nil {
			return err
		}
		if res, ok := reply.(*heraldv1.SendBatchResponse); ok {
			for i, result := range res.GetResults() {
				if i < len(made) && made[i] && result.GetResponse() != nil {
					result.Response.Duplicate = false
				}
			}
		}
		return nil
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
