package rpc

import (
	"context"
	"crypto/sha256"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// SendToTopic implements NotificationService.SendToTopic.
func (s *Server) SendToTopic(ctx context.Context, req *heraldv1.SendToTopicRequest) (*heraldv1.SendToTopicResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if s.Topics == nil {
		return nil, errs.E(errs.FailedPrecondition, "topic sends need the contacts service (--contacts-addr)")
	}
	key, err := metadataKey(ctx, req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	if key != req.GetIdempotencyKey() {
		req = proto.CloneOf(req)
		req.IdempotencyKey = key
	}
	// The shared fields convert as a Send's do; the hash is the topic request's.
	send := &heraldv1.SendRequest{IdempotencyKey: req.GetIdempotencyKey(), Category: req.GetCategory(),
		Channels: req.GetChannels(), Data: req.GetData(), Priority: req.GetPriority(), SendAt: req.GetSendAt(),
		Ttl: req.GetTtl(), Fallback: req.GetFallback()}
	switch m := req.GetMessage().(type) {
	case *heraldv1.SendToTopicRequest_Template:
		send.Message = &heraldv1.SendRequest_Template{Template: m.Template}
	case *heraldv1.SendToTopicRequest_Content:
		send.Message = &heraldv1.SendRequest_Content{Content: m.Content}
	}
	dreq, err := sendRequest(send)
	if err != nil {
		return nil, err
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, errs.Field("request", "cannot be encoded")
	}
	hash := sha256.Sum256(raw)
	dreq.RequestHash = hash[:]
	res, err := s.Topics.SendToTopic(ctx, c, req.GetTopic(), dreq)
	if err != nil {
		return nil, err
	}
	return &heraldv1.SendToTopicResponse{NotificationId: res.Notification.ID.String(), Duplicate: res.Duplicate}, nil
}

// topicProto is a notification's topic send: with its progress on the topic send's own.
func topicProto(ts *notifier.TopicSend) *heraldv1.TopicSend {
	if ts == nil {
		return nil
	}
	out := &heraldv1.TopicSend{TopicSendId: ts.ID.String(), Topic: ts.Topic}
	switch ts.State {
	case notifier.TopicFanningOut:
		out.State = heraldv1.TopicSendState_TOPIC_SEND_STATE_FANNING_OUT
	case notifier.TopicDone:
		out.State = heraldv1.TopicSendState_TOPIC_SEND_STATE_DONE
	case notifier.TopicCanceled:
		out.State = heraldv1.TopicSendState_TOPIC_SEND_STATE_CANCELED
	default:
		return out // a recipient's notification: only which topic send
	}
	out.Recipients, out.Skipped, out.Failed = ts.Recipients, ts.Skipped, ts.Failed
	out.DoneTime = optTime(ts.DoneAt)
	states := make([]delivery.State, 0, len(ts.Deliveries))
	for st := range ts.Deliveries {
		states = append(states, st)
	}
	slices.SortFunc(states, func(a, b delivery.State) int { return int(protoconv.StateProto[a]) - int(protoconv.StateProto[b]) })
	for _, st := range states {
		out.Deliveries = append(out.Deliveries, &heraldv1.TopicDeliveryCount{State: protoconv.StateProto[st], Count: ts.Deliveries[st]})
	}
	return out
}
