package notifier

import (
	"context"
	"encoding/base64"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/appkey"
	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
)

// Operations answers for deliveries after they were accepted: admin apps list and re-drive dead
// letters and read delivery statistics, and calling apps report what recipients did
// (TrackEvent). None of it decides a Send, so none of it needs what Sender does.
type Operations struct {
	Deliveries DeadLetterStore
	Store      StatsStore
	// Handoff puts re-driven dead letters on their queues.
	Handoff *Handoff
	Log     *slog.Logger
	// RepublishAfter is how long a re-driven delivery may wait for a worker before the
	// reconciler publishes it again.
	RepublishAfter time.Duration
}

// DeadLetterFilter selects dead letters. The zero filter selects all of them.
type DeadLetterFilter = delivery.DeadFilter

func empty(f DeadLetterFilter) bool { return len(f.IDs) == 0 && f.Channel == "" && f.Reason == "" }

// Limits of ListDeadLetters and RedriveDeadLetters.
const (
	defaultPage = 100
	maxPage     = 1000
	// MaxRedrive is the most dead letters one RedriveDeadLetters may name by id.
	MaxRedrive   = 10_000
	maxReason    = 128 // reasons are short words such as "provider_unavailable"
	maxPageToken = 64  // tokens are 22 characters
)

// check validates a filter's reason and the number of ids.
func check(f DeadLetterFilter, v *errs.Violations) {
	v.Count("delivery_ids", len(f.IDs), MaxRedrive)
	checkLen(v, "reason", f.Reason, maxReason)
}

// ListDeadLetters returns a page of dead letters and the token of the next page ("" on the
// last). Errors: PermissionDenied, Invalid (page token).
func (s *Operations) ListDeadLetters(ctx context.Context, caller appkey.Caller, f DeadLetterFilter, size int, token string) ([]Delivery, string, error) {
	if err := RequireAdmin(caller, "list dead letters"); err != nil {
		return nil, "", err
	}
	var v errs.Violations
	check(f, &v)
	v.Bytes("page_token", token, maxPageToken)
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	if size <= 0 {
		size = defaultPage
	}
	size = min(size, maxPage)
	var after uuid.UUID
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err == nil {
			after, err = uuid.FromBytes(b)
		}
		if err != nil {
			return nil, "", errs.Field("page_token", "is not a token this service gave")
		}
	}
	list, err := s.Deliveries.DeadLetters(ctx, f, after, size+1)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(list) > size {
		list = list[:size]
		next = base64.RawURLEncoding.EncodeToString(list[size-1].ID[:])
	}
	return list, next, nil
}

// RedriveDeadLetters queues the selected dead letters again and publishes them. Selecting
// everything needs all, so a forgotten filter cannot re-send every dead letter.
// Errors: PermissionDenied, Invalid.
func (s *Operations) RedriveDeadLetters(ctx context.Context, caller appkey.Caller, f DeadLetterFilter, all bool) (int, error) {
	if err := RequireAdmin(caller, "re-drive dead letters"); err != nil {
		return 0, err
	}
	if empty(f) && !all {
		return 0, errs.Field("delivery_ids", "select dead letters by id, channel or reason, or set all")
	}
	var v errs.Violations
	check(f, &v)
	if err := v.Err(); err != nil {
		return 0, err
	}
	dues, err := s.Deliveries.Redrive(ctx, f, time.Now(), s.RepublishAfter)
	if err != nil {
		return 0, err
	}
	if len(dues) > 0 {
		byChannel := map[delivery.Channel][]uuid.UUID{}
		for _, d := range dues {
			byChannel[d.Channel] = append(byChannel[d.Channel], d.ID)
		}
		s.Handoff.publish(ctx, byChannel)
		s.Log.Info("re-drove dead letters", "count", len(dues), "app", caller.AppName)
	}
	return len(dues), nil
}
