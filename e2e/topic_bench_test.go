package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
)

// BenchmarkTopicFanOut measures the fan-out of one SendToTopic to a topic of 20,000
// subscribers, each reachable on email and SMS (40,000 deliveries), from the answer until the
// topic send is done: every recipient's notification and deliveries committed and handed to
// the queues, each page decided per recipient as SendBatch does. No workers run. It reports
// deliveries/s, the figure `make bench` prints for topics.
func BenchmarkTopicFanOut(b *testing.B) {
	const subscribers = 20_000
	s := startStack(b, stackOptions{noWorkers: true, republishAfter: 10 * 60e9})
	ctx := context.Background()
	seedTopic(b, s, "bench", subscribers, 0)
	var deliveries int64
	b.ResetTimer()
	for i := range b.N {
		res, err := s.notify.SendToTopic(ctx, topicRequest("bench", fmt.Sprint("bench-", i)))
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := s.notify.GetNotification(ctx, &heraldv1.GetNotificationRequest{NotificationId: res.NotificationId})
			if err != nil {
				b.Fatal(err)
			}
			if tp := n.Notification.GetTopic(); tp.GetState() == heraldv1.TopicSendState_TOPIC_SEND_STATE_DONE {
				if tp.Recipients != subscribers {
					b.Fatalf("progress %v, want %d recipients", tp, subscribers)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		deliveries += 2 * subscribers
	}
	b.StopTimer()
	b.ReportMetric(float64(deliveries)/b.Elapsed().Seconds(), "deliveries/s")
}
