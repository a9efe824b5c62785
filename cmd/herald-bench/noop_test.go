package main

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/appkey"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// startNoop serves the no-op server on loopback for the test and returns its gRPC address and
// the key it accepts.
func startNoop(t *testing.T) (addr, key string) {
	t.Helper()
	key = appkey.New().String()
	srv, err := newNoopServer(slog.New(slog.DiscardHandler), "127.0.0.1:0", "127.0.0.1:0", key)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return srv.GRPCAddr(), key
}

var everyChannel = []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL, heraldv1.Channel_CHANNEL_SMS,
	heraldv1.Channel_CHANNEL_IOS, heraldv1.Channel_CHANNEL_ANDROID}

func TestNoopServerAnswersSend(t *testing.T) {
	addr, key := startNoop(t)
	l, err := newLoadgen(addr, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	w := &workload{cycle: everyChannel, templateShare: 0.5}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range int64(len(everyChannel)) {
		req, _ := w.request(i)
		res, err := l.clients[0].Send(ctx, req)
		if err != nil {
			t.Fatalf("Send on %s: %v", w.channel(i), err)
		}
		if id, err := uuid.Parse(res.GetNotificationId()); err != nil || id.Version() != 7 {
			t.Errorf("notification id %q is not a UUIDv7", res.GetNotificationId())
		}
		if len(res.GetDeliveries()) != 1 {
			t.Fatalf("Send on %s: deliveries %v, want one", w.channel(i), res.GetDeliveries())
		}
		d := res.GetDeliveries()[0]
		if d.GetChannel() != w.channel(i) || d.GetState() != heraldv1.DeliveryState_DELIVERY_STATE_QUEUED {
			t.Errorf("delivery on %s, %s; want %s, QUEUED", d.GetChannel(), d.GetState(), w.channel(i))
		}
		if id, err := uuid.Parse(d.GetDeliveryId()); err != nil || id.Version() != 7 {
			t.Errorf("delivery id %q is not a UUIDv7", d.GetDeliveryId())
		}
	}
}

func TestNoopServerRefusesBadKeys(t *testing.T) {
	addr, key := startNoop(t)
	req, _ := (&workload{cycle: everyChannel}).request(0)
	for _, tc := range []struct {
		name string
		opts []grpc.DialOption
	}{
		{"missing", nil},
		{"malformed", []grpc.DialOption{appkey.Credentials("hk_nonsense")}},
		{"another app's", []grpc.DialOption{appkey.Credentials(appkey.New().String())}},
		{"wrong secret", []grpc.DialOption{appkey.Credentials(key[:len(key)-1] + flip(key[len(key)-1]))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(addr, append(tc.opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err = heraldv1.NewNotificationServiceClient(conn).Send(ctx, req)
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("Send = %v, want Unauthenticated", err)
			}
		})
	}
}

// flip returns another character of the base64url alphabet than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// TestLoadgenCountsNoopAnswers drives the no-op server with the load generator as the unary
// phase does: every answer counts as accepted and its delivery as queued.
func TestLoadgenCountsNoopAnswers(t *testing.T) {
	addr, key := startNoop(t)
	l, err := newLoadgen(addr, key, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	tr := newTracker(time.Now())
	l.reset(&workload{cycle: everyChannel, templateShare: 0.5}, tr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l.runCount(ctx, 100, 8)
	if l.sent.Load() != 100 || tr.Queued.Load() != 100 || l.failures.Load() != 0 || len(l.latencies) != 100 {
		t.Errorf("sent %d, queued %d, failures %d (%s), latencies %d; want 100, 100, 0, 100",
			l.sent.Load(), tr.Queued.Load(), l.failures.Load(), l.errorSummary(), len(l.latencies))
	}
	if l.inTime.Load() != 0 {
		t.Errorf("a run of a count counted %d in a timed window", l.inTime.Load())
	}
	l.reset(&workload{cycle: everyChannel, templateShare: 0.5}, newTracker(time.Now()))
	l.runFor(ctx, 100*time.Millisecond, 4)
	if l.failures.Load() != 0 || int64(len(l.latencies)) != l.sent.Load() || l.inTime.Load() > l.sent.Load() {
		t.Errorf("for 100ms: sent %d, in time %d, latencies %d, failures %d (%s); want as many latencies as sends, no more in time, no failures",
			l.sent.Load(), l.inTime.Load(), len(l.latencies), l.failures.Load(), l.errorSummary())
	}
}

// refusingBatches answers SendBatch with an error for every third recipient of a call.
type refusingBatches struct {
	heraldv1.UnimplementedNotificationServiceServer
}

func (refusingBatches) SendBatch(_ context.Context, req *heraldv1.SendBatchRequest) (*heraldv1.SendBatchResponse, error) {
	out := &heraldv1.SendBatchResponse{}
	for i := range req.GetRecipients() {
		if i%3 == 0 {
			out.Results = append(out.Results, &heraldv1.BatchResult{Error: &heraldv1.BatchError{Code: "INVALID_ARGUMENT", Message: "refused"}})
			continue
		}
		out.Results = append(out.Results, &heraldv1.BatchResult{Response: &heraldv1.SendResponse{
			NotificationId: uuid.Must(uuid.NewV7()).String(),
			Deliveries: []*heraldv1.Delivery{{DeliveryId: uuid.Must(uuid.NewV7()).String(),
				Channel: heraldv1.Channel_CHANNEL_EMAIL, State: heraldv1.DeliveryState_DELIVERY_STATE_QUEUED}},
		}})
	}
	return out, nil
}

func TestRunBatchesCountsRefusedRecipientsAsFailedCalls(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	heraldv1.RegisterNotificationServiceServer(srv, refusingBatches{})
	go srv.Serve(lis)
	defer srv.Stop()
	l, err := newLoadgen(lis.Addr().String(), appkey.New().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	tr := newTracker(time.Now())
	l.reset(&workload{cycle: []heraldv1.Channel{heraldv1.Channel_CHANNEL_EMAIL}, templateShare: 0.5}, tr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// 3 calls of 10, of which recipients 0, 3, 6 and 9 are refused.
	l.runBatches(ctx, 2, 10, 30, time.Time{})
	if l.failures.Load() != 12 || l.sent.Load() != 18 || tr.Queued.Load() != 18 || len(l.latencies) != 3 {
		t.Errorf("failures %d, sent %d, queued %d, latencies %d; want 12, 18, 18, 3",
			l.failures.Load(), l.sent.Load(), tr.Queued.Load(), len(l.latencies))
	}
}
