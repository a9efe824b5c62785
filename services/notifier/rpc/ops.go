package rpc

import (
	"context"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/protoconv"
	heraldv1 "github.com/heraldhq/herald/proto/gen/herald/v1"
	"github.com/heraldhq/herald/services/notifier"
)

// GetQueueStats implements AdminService.GetQueueStats from the ops watcher's latest sample.
func (s *Server) GetQueueStats(ctx context.Context, _ *heraldv1.GetQueueStatsRequest) (*heraldv1.GetQueueStatsResponse, error) {
	if _, err := admin(ctx, "read queue statistics"); err != nil {
		return nil, err
	}
	if s.QueueStats == nil {
		return nil, errs.E(errs.FailedPrecondition, "queue statistics are not collected on this notifier")
	}
	snap := s.QueueStats.Snapshot()
	out := &heraldv1.GetQueueStatsResponse{Time: timestamppb.New(snap.Latest.Time)}
	for _, ch := range snap.Latest.Channels {
		out.Channels = append(out.Channels, &heraldv1.ChannelStats{
			Channel: protoconv.ChannelProto[delivery.Channel(ch.Channel)], Pending: ch.Pending, InFlight: ch.InFlight,
			OldestAge: durationpb.New(time.Duration(ch.OldestAgeSeconds * float64(time.Second))),
			SendRate:  ch.SendRate, FailureRate: ch.FailureRate, DeadLetters: ch.DeadLetters,
			Scheduled: ch.Scheduled, Retrying: ch.Retrying,
		})
	}
	for _, cs := range snap.Circuits {
		out.Circuits = append(out.Circuits, &heraldv1.CircuitState{
			Channel: protoconv.ChannelProto[delivery.Channel(cs.Channel)], Provider: cs.Provider, Worker: cs.Worker,
			State: cs.State, UpdateTime: timestamppb.New(cs.Updated),
		})
	}
	return out, nil
}

// GetDeliveryStats implements AdminService.GetDeliveryStats.
func (s *Server) GetDeliveryStats(ctx context.Context, req *heraldv1.GetDeliveryStatsRequest) (*heraldv1.GetDeliveryStatsResponse, error) {
	c, err := admin(ctx, "read delivery statistics")
	if err != nil {
		return nil, err
	}
	period := 24 * time.Hour
	if req.Period != nil {
		if err := req.Period.CheckValid(); err != nil {
			return nil, errs.Field("period", "is not a valid duration")
		}
		period = req.Period.AsDuration()
	}
	stats, err := s.Operations.DeliveryStats(ctx, c, period)
	if err != nil {
		return nil, err
	}
	out := &heraldv1.GetDeliveryStatsResponse{}
	for _, st := range stats {
		out.Stats = append(out.Stats, &heraldv1.DeliveryStats{
			Template: st.Template, Category: st.Category, Channel: protoconv.ChannelProto[st.Channel],
			Accepted: st.Accepted, Sent: st.Sent, Delivered: st.Delivered, Opened: st.Opened, Clicked: st.Clicked,
			Failed: st.Failed, Skipped: st.Skipped,
		})
	}
	return out, nil
}

var engagement = map[heraldv1.EngagementKind]notifier.Engagement{
	heraldv1.EngagementKind_ENGAGEMENT_KIND_OPENED:    notifier.Opened,
	heraldv1.EngagementKind_ENGAGEMENT_KIND_DISMISSED: notifier.Dismissed,
	heraldv1.EngagementKind_ENGAGEMENT_KIND_CLICKED:   notifier.Clicked,
}

// TrackEvent implements NotificationService.TrackEvent.
func (s *Server) TrackEvent(ctx context.Context, req *heraldv1.TrackEventRequest) (*heraldv1.TrackEventResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v errs.Violations
	id, err := uuid.Parse(req.GetDeliveryId())
	if err != nil {
		v.Add("delivery_id", "must be a delivery id (a UUID)")
	}
	kind, ok := engagement[req.GetKind()]
	if !ok {
		v.Add("kind", "must be ENGAGEMENT_KIND_OPENED, _DISMISSED or _CLICKED")
	}
	var at time.Time
	if req.Time != nil {
		if err := req.Time.CheckValid(); err != nil {
			v.Add("time", "is not a valid timestamp")
		}
		at = req.Time.AsTime()
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	recorded, err := s.Operations.TrackEvent(ctx, c, id, kind, at)
	if err != nil {
		return nil, err
	}
	return &heraldv1.TrackEventResponse{Recorded: recorded}, nil
}
