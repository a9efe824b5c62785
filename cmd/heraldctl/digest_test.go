package main

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// digestServer answers Send with an item waiting in its digest and GetNotification with the
// item digested. It keeps the last request.
type digestServer struct {
	heraldv1.UnimplementedNotificationServiceServer
	mu   sync.Mutex
	last *heraldv1.SendRequest
}

func (s *digestServer) Send(_ context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	s.mu.Lock()
	s.last = proto.CloneOf(req)
	s.mu.Unlock()
	return &heraldv1.SendResponse{NotificationId: "n-1", Deliveries: []*heraldv1.Delivery{
		{DeliveryId: "d-1", Channel: heraldv1.Channel_CHANNEL_EMAIL, State: heraldv1.DeliveryState_DELIVERY_STATE_SCHEDULED,
			Reason: "digest", DigestNotificationId: "g-1"},
	}}, nil
}

func (s *digestServer) GetNotification(context.Context, *heraldv1.GetNotificationRequest) (*heraldv1.GetNotificationResponse, error) {
	return &heraldv1.GetNotificationResponse{Notification: &heraldv1.Notification{NotificationId: "n-1", Category: "social",
		Deliveries: []*heraldv1.Delivery{{DeliveryId: "d-1", Channel: heraldv1.Channel_CHANNEL_EMAIL,
			State: heraldv1.DeliveryState_DELIVERY_STATE_DIGESTED, DigestNotificationId: "g-1", DigestDeliveryId: "d-9"}}}}, nil
}

func TestSendDigest(t *testing.T) {
	api := &digestServer{}
	srv := grpc.NewServer()
	heraldv1.RegisterNotificationServiceServer(srv, api)
	server := serveGRPC(t, srv)

	tests := []struct {
		name string
		args []string
		want *heraldv1.Digest
		out  []string
	}{
		{"a window", []string{"--digest-window", "10m", "--digest-template", "weekly"},
			&heraldv1.Digest{Close: &heraldv1.Digest_Window{Window: durationpb.New(10 * time.Minute)}, Template: "weekly"},
			[]string{`d-1\s+-\s+email\s+scheduled\s+digest`, `delivery d-1 waits in digest g-1`}},
		{"daily, waiting for the outcome", []string{"--digest-daily", "08:30", "--digest-template", "daily", "--wait"},
			&heraldv1.Digest{Close: &heraldv1.Digest_DailyAt{DailyAt: "08:30"}, Template: "daily"},
			[]string{`d-1\s+-\s+email\s+digested`, `delivery d-1 went out in digest g-1, sent by delivery d-9 \(heraldctl status g-1\)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := heraldctl(t, server, append([]string{"send", "--email", "a@example.com", "--body", "hi"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			api.mu.Lock()
			got := api.last.GetDigest()
			api.mu.Unlock()
			if got.GetTemplate() != tt.want.GetTemplate() || got.GetDailyAt() != tt.want.GetDailyAt() ||
				got.GetWindow().AsDuration() != tt.want.GetWindow().AsDuration() {
				t.Errorf("sent digest %v, want %v", got, tt.want)
			}
			for _, re := range tt.out {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("output lacks %s:\n%s", re, out)
				}
			}
		})
	}
	for _, args := range [][]string{
		{"--digest-window", "1m"},
		{"--digest-template", "t"},
		{"--digest-window", "1m", "--digest-daily", "08:00", "--digest-template", "t"},
	} {
		if _, err := heraldctl(t, server, append([]string{"send", "--email", "a@example.com"}, args...)...); err == nil ||
			!strings.Contains(err.Error(), "digest") {
			t.Errorf("%q: %v, want an error about the digest flags", args, err)
		}
	}
}
