package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/tracing"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier/ops"
)

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	return string(b)
}

// TestMetricsQueuesAndStatus: after some sends, /metrics on every service shows the contract's
// metrics, GetQueueStats answers per channel, and the status page's data agrees.
func TestMetricsQueuesAndStatus(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	var last string
	for i := range 3 {
		res, err := s.notify.Send(ctx, emailRequest("ada@example.com"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			last = res.NotificationId
		}
	}
	waitFinal(t, s, last)

	notifier := get(t, "http://"+s.notifier.HTTPAddr()+"/metrics")
	for _, want := range []string{
		`herald_notifications_accepted_total{category="account"} 3`,
		`herald_deliveries_accepted_total{category="account",channel="email"} 3`,
		`herald_accept_duration_seconds_count 3`,
		`herald_queue_pending{channel="email"}`,
		`go_goroutines`,
		`herald_grpc_server_handled_total{grpc_code="OK",grpc_method="Send",grpc_service="herald.v1.NotificationService",grpc_type="unary"} 3`,
		`herald_grpc_server_handling_seconds_count{grpc_method="Send",grpc_service="herald.v1.NotificationService",grpc_type="unary"} 3`,
		`herald_build_info{`,
	} {
		if !strings.Contains(notifier, want) {
			t.Errorf("notifier /metrics lacks %s", want)
		}
	}
	// The notifier's cache of contacts called the contacts service.
	contacts := get(t, "http://"+s.contacts.HTTPAddr()+"/metrics")
	for _, want := range []string{`herald_grpc_server_handled_total{grpc_code="OK"`, `grpc_service="herald.v1.ContactsService"`, `herald_build_info{`} {
		if !strings.Contains(contacts, want) {
			t.Errorf("contacts /metrics lacks %s", want)
		}
	}
	workers := get(t, "http://"+s.workers.HTTPAddr()+"/metrics")
	for _, want := range []string{
		`herald_deliveries_sent_total{channel="email",provider="sendgrid"} 3`,
		`herald_provider_duration_seconds_count{channel="email",provider="sendgrid"} 3`,
		`herald_accept_to_sent_seconds_count{channel="email"} 3`,
		`herald_circuit_state{channel="email",provider="sendgrid"} 0`,
		`herald_build_info{`,
	} {
		if !strings.Contains(workers, want) {
			t.Errorf("workers /metrics lacks %s", want)
		}
	}

	admin := heraldv1.NewAdminServiceClient(s.conn)
	var qs *heraldv1.GetQueueStatsResponse
	waitFor(t, "a queue sample with the workers' report", 30*time.Second, func() (bool, error) {
		var err error
		qs, err = admin.GetQueueStats(ctx, &heraldv1.GetQueueStatsRequest{})
		return err == nil && len(qs.Circuits) > 0, err
	})
	if len(qs.Channels) != len(delivery.Channels) {
		t.Fatalf("GetQueueStats has %d channels", len(qs.Channels))
	}
	for _, c := range qs.Channels {
		if c.Pending != 0 || c.InFlight != 0 || c.DeadLetters != 0 {
			t.Errorf("channel %s after every send: %v", c.Channel, c)
		}
	}
	var data ops.Snapshot
	if err := json.Unmarshal([]byte(get(t, "http://"+s.notifier.HTTPAddr()+"/status/data")), &data); err != nil {
		t.Fatal(err)
	}
	if len(data.Latest.Channels) != len(delivery.Channels) || len(data.History) == 0 {
		t.Fatalf("status data = %+v", data)
	}
	if !strings.Contains(get(t, "http://"+s.notifier.HTTPAddr()+"/status"), "email") {
		t.Fatal("the status page does not show the email channel")
	}
	if _, err := heraldv1.NewAdminServiceClient(dial(t, s.notifier.GRPCAddr(), s.otherAppKey(t))).GetQueueStats(ctx, &heraldv1.GetQueueStatsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("GetQueueStats for a non-admin app: %v", err)
	}
}

// otherAppKey creates a non-admin app and returns its key.
func (s *stack) otherAppKey(t *testing.T) string {
	t.Helper()
	res, err := heraldv1.NewAdminServiceClient(s.conn).CreateApp(context.Background(), &heraldv1.CreateAppRequest{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Key
}

// TestEngagement: an app reports a push opened; each kind counts once; another app cannot
// report on it; GetDeliveryStats counts it per template and category.
func TestEngagement(t *testing.T) {
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	res, err := s.notify.Send(ctx, emailRequest("ada@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, res.NotificationId)
	id := res.Deliveries[0].DeliveryId
	for i, want := range []bool{true, false} {
		r, err := s.notify.TrackEvent(ctx, &heraldv1.TrackEventRequest{DeliveryId: id, Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_OPENED})
		if err != nil || r.Recorded != want {
			t.Fatalf("TrackEvent #%d = %v, %v; want recorded=%v", i+1, r, err, want)
		}
	}
	other := heraldv1.NewNotificationServiceClient(dial(t, s.notifier.GRPCAddr(), s.otherAppKey(t)))
	if _, err := other.TrackEvent(ctx, &heraldv1.TrackEventRequest{DeliveryId: id, Kind: heraldv1.EngagementKind_ENGAGEMENT_KIND_CLICKED}); status.Code(err) != codes.NotFound {
		t.Fatalf("another app's TrackEvent: %v, want NotFound", err)
	}
	stats, err := heraldv1.NewAdminServiceClient(s.conn).GetDeliveryStats(ctx, &heraldv1.GetDeliveryStatsRequest{})
	if err != nil || len(stats.Stats) != 1 {
		t.Fatalf("GetDeliveryStats = %v, %v", stats, err)
	}
	st := stats.Stats[0]
	if st.Category != "account" || st.Sent != 1 || st.Opened != 1 || st.Clicked != 0 {
		t.Fatalf("stats = %v", st)
	}
}

// TestTraceFollowsANotification: with tracing on, the worker's provider call joins the trace of
// the Send that accepted it, across the JetStream hop.
func TestTraceFollowsANotification(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tracing.Use(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	t.Cleanup(tracing.Disable)
	s := startStack(t, stackOptions{})
	ctx := context.Background()
	res, err := s.notify.Send(ctx, emailRequest("ada@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	waitFinal(t, s, res.NotificationId)
	var send, provider tracetest.SpanStub
	waitFor(t, "the provider call's span", 10*time.Second, func() (bool, error) {
		for _, sp := range spans.GetSpans() {
			switch sp.Name {
			case "herald.v1.NotificationService/Send":
				send = sp
			case "send email":
				provider = sp
			}
		}
		return send.Name != "" && provider.Name != "", nil
	})
	if provider.SpanContext.TraceID() != send.SpanContext.TraceID() || provider.Parent.SpanID() != send.SpanContext.SpanID() {
		t.Fatalf("the provider call's span (trace %s, parent %s) is not a child of Send's (trace %s, span %s)",
			provider.SpanContext.TraceID(), provider.Parent.SpanID(), send.SpanContext.TraceID(), send.SpanContext.SpanID())
	}
}
