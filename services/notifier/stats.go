package notifier

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
)

// DeliveryStats counts one template's deliveries on one channel in one category, and what
// recipients did with them.
type DeliveryStats struct {
	Template                                                    string // "" for inline content
	Category                                                    string
	Channel                                                     delivery.Channel
	Accepted, Sent, Delivered, Opened, Clicked, Failed, Skipped int64
}

// MaxStatsPeriod bounds how far back DeliveryStats looks.
const MaxStatsPeriod = 31 * 24 * time.Hour

// DeliveryStats counts the deliveries accepted within period, per template, category and
// channel, with their engagement. Errors: PermissionDenied, Invalid.
func (s *Operations) DeliveryStats(ctx context.Context, caller appkey.Caller, period time.Duration) ([]DeliveryStats, error) {
	if err := RequireAdmin(caller, "read delivery statistics"); err != nil {
		return nil, err
	}
	if period <= 0 || period > MaxStatsPeriod {
		return nil, errs.Field("period", fmt.Sprintf("must be between 1s and %s", MaxStatsPeriod))
	}
	return s.Store.DeliveryStats(ctx, time.Now().Add(-period))
}

// Engagement is what a recipient did with a delivery, as the app saw it.
type Engagement string

// The kinds of engagement an app reports.
const (
	Opened    Engagement = "opened"
	Dismissed Engagement = "dismissed"
	Clicked   Engagement = "clicked"
)

// TrackEvent records an engagement event the calling app saw for one of its deliveries (a push
// opened or dismissed, a link clicked). Each kind counts once per delivery: it returns false
// when that kind was already recorded. Errors: NotFound (unknown, or another app's delivery).
func (s *Operations) TrackEvent(ctx context.Context, caller appkey.Caller, deliveryID uuid.UUID, kind Engagement, at time.Time) (bool, error) {
	owner, err := s.Store.DeliveryApp(ctx, deliveryID)
	if err != nil {
		return false, err
	}
	if owner != caller.AppID {
		return false, errs.E(errs.NotFound, "delivery not found")
	}
	if at.IsZero() || at.After(time.Now()) {
		at = time.Now()
	}
	recorded, err := s.Store.RecordProviderEvents(ctx, []ProviderEvent{
		engagementEvent(deliveryID, kind, at, `{"engagement":"`+string(kind)+`"}`)})
	if err != nil {
		return false, err
	}
	return len(recorded) > 0, nil
}

// engagementEvent is the event that records an engagement with a delivery, with details. Its
// id is the delivery's and the kind's, so each kind counts once per delivery whoever reports it:
// TrackEvent, or a read in the inbox (inbox.go).
func engagementEvent(deliveryID uuid.UUID, kind Engagement, at time.Time, details string) ProviderEvent {
	k := ProviderEventKind(kind)
	if kind == Dismissed {
		k = EventOther
	}
	return ProviderEvent{Provider: "app", ID: deliveryID.String() + ":" + string(kind), Kind: k,
		DeliveryID: deliveryID, OccurredAt: at, Details: []byte(details)}
}
