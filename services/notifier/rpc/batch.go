package rpc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// CancelNotification implements NotificationService.CancelNotification.
func (s *Server) CancelNotification(ctx context.Context, req *heraldv1.CancelNotificationRequest) (*heraldv1.CancelNotificationResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.GetNotificationId())
	if err != nil {
		return nil, errs.Field("notification_id", "must be a notification id (a UUID)")
	}
	cancel := s.Sender.CancelNotification
	if s.Topics != nil {
		cancel = s.Topics.CancelNotification
	}
	n, err := cancel(ctx, c, id)
	if err != nil {
		return nil, err
	}
	return &heraldv1.CancelNotificationResponse{Notification: notificationProto(n)}, nil
}

// SendBatch implements NotificationService.SendBatch. Each recipient becomes the SendRequest
// it stands for, so it is validated, hashed for idempotency and answered exactly as a Send.
func (s *Server) SendBatch(ctx context.Context, req *heraldv1.SendBatchRequest) (*heraldv1.SendBatchResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	// What every recipient shares is checked once, for the whole batch: otherwise each
	// recipient would copy and encode shared data of any size.
	var v errs.Violations
	n := len(req.GetRecipients())
	if n == 0 {
		v.Add("recipients", "is required")
	}
	v.Count("recipients", n, notifier.MaxBatch)
	v.Count("channels", len(req.GetChannels()), len(protoconv.ChannelDomain))
	checkData(&v, "data", req.GetData())
	// A batch's idempotency key (the HTTP API's Idempotency-Key header) stands for the keys of
	// the recipients that have none: "<key>/<index>". A retried batch then replays each
	// recipient, and one whose recipients moved answers ALREADY_EXISTS for those that did.
	batchKey, err := metadataKey(ctx, "")
	if err != nil {
		return nil, err
	}
	if len(batchKey) > notifier.MaxIdempotencyKey-len("/999") {
		v.Add("idempotency_key", fmt.Sprintf("the Idempotency-Key header of a batch is at most %d bytes, got %d",
			notifier.MaxIdempotencyKey-len("/999"), len(batchKey)))
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	out := &heraldv1.SendBatchResponse{Results: make([]*heraldv1.BatchResult, n)}
	reqs := make([]*notifier.SendRequest, 0, n)
	index := make([]int, 0, n) // reqs[k] answers recipient index[k]
	for i, r := range req.GetRecipients() {
		key := r.GetIdempotencyKey()
		if key == "" && batchKey != "" {
			key = batchKey + "/" + strconv.Itoa(i)
		}
		one := &heraldv1.SendRequest{
			IdempotencyKey: key, Recipient: r.GetRecipient(), Category: req.GetCategory(),
			Channels: req.GetChannels(), Data: mergeData(req.GetData(), r.GetData()), Priority: req.GetPriority(),
			SendAt: req.GetSendAt(), Ttl: req.GetTtl(), Fallback: req.GetFallback(), Digest: req.GetDigest(),
		}
		switch m := req.GetMessage().(type) {
		case *heraldv1.SendBatchRequest_Template:
			one.Message = &heraldv1.SendRequest_Template{Template: m.Template}
		case *heraldv1.SendBatchRequest_Content:
			one.Message = &heraldv1.SendRequest_Content{Content: m.Content}
		}
		dreq, err := sendRequest(one)
		if err != nil {
			out.Results[i] = &heraldv1.BatchResult{Error: batchError(err)}
			continue
		}
		reqs = append(reqs, dreq)
		index = append(index, i)
	}
	if len(reqs) > 0 {
		results, err := s.Sender.SendBatch(ctx, c, reqs)
		if err != nil {
			return nil, err
		}
		for k, r := range results {
			if r.Err != nil {
				out.Results[index[k]] = &heraldv1.BatchResult{Error: batchError(r.Err)}
				continue
			}
			out.Results[index[k]] = &heraldv1.BatchResult{Response: sendResponse(r.Result)}
		}
	}
	return out, nil
}

// mergeData returns shared with each of own's fields set over it.
func mergeData(shared, own *structpb.Struct) *structpb.Struct {
	if own == nil {
		return shared
	}
	if shared == nil {
		return own
	}
	out := proto.Clone(shared).(*structpb.Struct)
	if out.Fields == nil { // shared is an empty struct: data: {}
		out.Fields = make(map[string]*structpb.Value, len(own.GetFields()))
	}
	for k, v := range own.GetFields() {
		out.Fields[k] = v
	}
	return out
}

// batchError is the answer a Send would have given, as data.
func batchError(err error) *heraldv1.BatchError {
	st := errs.Status(err)
	out := &heraldv1.BatchError{Code: codeName(st.Code()), Message: st.Message()}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out.Violations = append(out.Violations, &heraldv1.FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return out
}

// codeName returns a gRPC code as the API documents it, e.g. "INVALID_ARGUMENT".
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// Explain implements NotificationService.Explain.
func (s *Server) Explain(ctx context.Context, req *heraldv1.ExplainRequest) (*heraldv1.ExplainResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRequest() == nil {
		return nil, errs.Field("request", "is required")
	}
	dreq, err := sendRequest(req.GetRequest())
	if err != nil {
		return nil, err
	}
	n, err := s.Sender.Explain(ctx, c, dreq)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.ExplainResponse{}
	now := time.Now()
	for _, d := range n.Deliveries {
		ct := d.Content
		out.Deliveries = append(out.Deliveries, &heraldv1.ExplainedDelivery{
			Channel:  protoconv.ChannelProto[d.Channel],
			State:    protoconv.StateProto[d.State],
			Reason:   d.Reason,
			Step:     int32(d.Step),
			SendTime: timestamppb.New(d.SendTime(now)),
			Content: &heraldv1.RenderedContent{
				PushTitle: pushOnly(d, ct.Title), PushBody: pushOnly(d, ct.Body), SmsBody: smsOnly(d, ct.Body),
				EmailSubject: ct.Subject, EmailHtml: ct.HTML, EmailText: ct.Text,
			},
		})
	}
	return out, nil
}

func pushOnly(d *notifier.Delivery, s string) string {
	if d.Channel == "ios" || d.Channel == "android" {
		return s
	}
	return ""
}

func smsOnly(d *notifier.Delivery, s string) string {
	if d.Channel == "sms" {
		return s
	}
	return ""
}
