package main

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// chainServer answers Send with a two-step chain and GetNotification with its outcome: the email
// failed, the SMS sent. It keeps the last request.
type chainServer struct {
	heraldv1.UnimplementedNotificationServiceServer
	mu   sync.Mutex
	last *heraldv1.SendRequest
}

var chainDeliveries = []*heraldv1.Delivery{
	{DeliveryId: "d-email", Step: 1, Channel: heraldv1.Channel_CHANNEL_EMAIL, State: heraldv1.DeliveryState_DELIVERY_STATE_FAILED,
		Reason: "rejected", Provider: "sim"},
	{DeliveryId: "d-sms", Step: 2, Channel: heraldv1.Channel_CHANNEL_SMS, State: heraldv1.DeliveryState_DELIVERY_STATE_SENT,
		Provider: "sim"},
}

func (s *chainServer) Send(_ context.Context, req *heraldv1.SendRequest) (*heraldv1.SendResponse, error) {
	s.mu.Lock()
	s.last = proto.CloneOf(req)
	s.mu.Unlock()
	return &heraldv1.SendResponse{NotificationId: "n-1", Deliveries: []*heraldv1.Delivery{
		{DeliveryId: "d-email", Step: 1, Channel: heraldv1.Channel_CHANNEL_EMAIL, State: heraldv1.DeliveryState_DELIVERY_STATE_QUEUED},
		{DeliveryId: "d-sms", Step: 2, Channel: heraldv1.Channel_CHANNEL_SMS, State: heraldv1.DeliveryState_DELIVERY_STATE_WAITING},
	}}, nil
}

func (s *chainServer) GetNotification(context.Context, *heraldv1.GetNotificationRequest) (*heraldv1.GetNotificationResponse, error) {
	return &heraldv1.GetNotificationResponse{Notification: &heraldv1.Notification{NotificationId: "n-1", Category: "account",
		Deliveries: chainDeliveries}}, nil
}

func TestSendFallback(t *testing.T) {
	api := &chainServer{}
	srv := grpc.NewServer()
	heraldv1.RegisterNotificationServiceServer(srv, api)
	server := serveGRPC(t, srv)

	out, err := heraldctl(t, server, "send", "--email", "fail@example.com", "--phone", "+14155550100",
		"--fallback", "email,sms", "--step-timeout", "10m", "--body", "hi")
	if err != nil {
		t.Fatal(err)
	}
	want := &heraldv1.Fallback{Channels: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS}}
	api.mu.Lock()
	got := api.last.GetFallback()
	api.mu.Unlock()
	if !proto.Equal(&heraldv1.Fallback{Channels: got.GetChannels()}, want) || got.GetStepTimeout().AsDuration() != 10*time.Minute {
		t.Errorf("sent fallback %v, want email then sms, 10m", got)
	}
	for _, re := range []string{`d-email\s+1\s+email\s+queued`, `d-sms\s+2\s+sms\s+waiting`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}

	out, err = heraldctl(t, server, "send", "--email", "fail@example.com", "--phone", "+14155550100",
		"--fallback", "email,sms", "--body", "hi", "--wait")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`d-email\s+1\s+email\s+failed\s+0\s+sim\s+rejected`, `d-sms\s+2\s+sms\s+sent`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--wait output lacks %s:\n%s", re, out)
		}
	}

	for _, args := range [][]string{
		{"send", "--email", "a@example.com", "--fallback", "email,pigeon"},
		{"send", "--email", "a@example.com", "--step-timeout", "1m"},
	} {
		if _, err := heraldctl(t, server, args...); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// serveGRPC serves srv on loopback until the test ends, and returns heraldctl's leading
// arguments for it.
func serveGRPC(t *testing.T, srv *grpc.Server) []string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }() // Stop ends it
	t.Cleanup(srv.Stop)
	return []string{"--addr", lis.Addr().String(), "--key", "test", "--env-file", filepath.Join(t.TempDir(), "none.env")}
}
