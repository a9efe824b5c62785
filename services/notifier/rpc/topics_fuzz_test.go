package rpc

import (
	"context"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protofuzz"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

var _ notifier.TopicStore = (*strictStore)(nil)

var topicName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// CreateTopicSend implements notifier.TopicStore: it records a problem for whatever
// PostgreSQL could not store, in the notification, the topic or the request (jsonb).
func (s *strictStore) CreateTopicSend(_ context.Context, n *notifier.Notification, ts *notifier.TopicSend) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notification(n)
	if !topicName.MatchString(ts.Topic) {
		s.problem("topic %q is not a topic name", ts.Topic)
	}
	if len(n.Deliveries) != 0 || n.TopicSendID != n.ID || ts.ID != n.ID {
		s.problem("a topic send's notification %+v", n)
	}
	raw, err := json.Marshal(ts.Request)
	if err != nil {
		s.problem("the request cannot be encoded: %v", err)
	}
	var back map[string]any
	if err := json.Unmarshal(raw, &back); err != nil {
		s.problem("the request does not decode: %v", err)
	}
	s.jsonb("topic request", back)
	return true, nil
}

func (s *strictStore) TopicSend(context.Context, uuid.UUID, bool) (*notifier.TopicSend, error) {
	return nil, errs.E(errs.NotFound, "topic send not found")
}

func (s *strictStore) ClaimTopicSend(context.Context, string, time.Duration) (*notifier.TopicSend, error) {
	return nil, nil
}

func (s *strictStore) AdvanceTopicSend(context.Context, *notifier.TopicSend, string, string, notifier.TopicCounts, bool, time.Duration) (bool, error) {
	return false, nil
}

func (s *strictStore) CancelTopicSend(context.Context, uuid.UUID, time.Time) error { return nil }

func (s *strictStore) TopicRecipients(context.Context, uuid.UUID, uuid.UUID, int) ([]uuid.UUID, error) {
	return nil, nil
}

func (s *strictStore) CancelNotifications(context.Context, []uuid.UUID, time.Time) (int, error) {
	return 0, nil
}

// FuzzSendToTopic feeds SendToTopic arbitrary requests, as FuzzSend does Send: no panic, only
// the documented answers, field violations named, nothing stored that PostgreSQL would refuse.
// Whatever Send refuses as invalid for a recipient, SendToTopic refuses before it fans out.
func FuzzSendToTopic(f *testing.F) {
	for _, r := range sendSeeds() {
		t := &heraldv1.SendToTopicRequest{Topic: "releases", IdempotencyKey: r.IdempotencyKey, Category: r.Category,
			Channels: r.Channels, Data: r.Data, Priority: r.Priority, SendAt: r.SendAt, Ttl: r.Ttl, Fallback: r.Fallback}
		switch m := r.Message.(type) {
		case *heraldv1.SendRequest_Template:
			t.Message = &heraldv1.SendToTopicRequest_Template{Template: m.Template}
		case *heraldv1.SendRequest_Content:
			t.Message = &heraldv1.SendToTopicRequest_Content{Content: m.Content}
		}
		f.Add(marshal(t), uint8(255), "")
	}
	f.Add(marshal(&heraldv1.SendToTopicRequest{Topic: "Bad Topic", Category: "news", Ttl: durationpb.New(-1)}), uint8(255), "")
	f.Fuzz(func(t *testing.T, raw []byte, field uint8, text string) {
		in := input{raw, field, text}
		var req heraldv1.SendToTopicRequest
		if !in.decode(&req) {
			return
		}
		store := newStrictStore()
		srv := newServer(store)
		srv.Topics = notifier.NewTopics(notifier.Topics{Sender: srv.Sender, Store: store})
		res, err := srv.SendToTopic(appkey.WithCaller(context.Background(), billingCaller), &req)
		code := protofuzz.Answer(t, "SendToTopic", err)
		noProblems(t, store)
		if code != codes.OK {
			return
		}
		if _, err := uuid.Parse(res.NotificationId); err != nil {
			t.Fatalf("notification id %q", res.NotificationId)
		}
		// A subscriber's Send (to the known user) is not refused as invalid: what would be was
		// refused for the whole topic send.
		send := &heraldv1.SendRequest{Recipient: &heraldv1.Recipient{Kind: &heraldv1.Recipient_UserId{UserId: knownUser.ID}},
			Category: req.Category, Channels: req.Channels, Data: req.Data, Priority: req.Priority, SendAt: req.SendAt,
			Ttl: req.Ttl, Fallback: req.Fallback}
		switch m := req.Message.(type) {
		case *heraldv1.SendToTopicRequest_Template:
			send.Message = &heraldv1.SendRequest_Template{Template: m.Template}
		case *heraldv1.SendToTopicRequest_Content:
			send.Message = &heraldv1.SendRequest_Content{Content: m.Content}
		}
		_, err = srv.Send(appkey.WithCaller(context.Background(), billingCaller), send)
		if protofuzz.Answer(t, "Send", err) == codes.InvalidArgument {
			t.Fatalf("SendToTopic accepted what a subscriber's Send refuses: %v", err)
		}
	})
}
