package ops

import (
	"context"
	"time"
)

// EngagementRow is what recipients did with one template's deliveries on one channel in one
// category over EngagementPeriod: how many were sent, and how many a person clicked a link in
// (short links' clicks and the providers' click events).
type EngagementRow struct {
	Template  string  `json:"template"` // "" for inline content
	Category  string  `json:"category"`
	Channel   string  `json:"channel"`
	Sent      int64   `json:"sent"`
	Clicked   int64   `json:"clicked"`
	ClickRate float64 `json:"click_rate"` // Clicked / Sent
}

// EngagementPeriod is how far back the status page's engagement looks; EngagementInterval is
// how often it is counted again (it reads every delivery of the period, so not every sample).
const (
	EngagementPeriod   = time.Hour
	EngagementInterval = 5 * time.Minute
)

// EngagementFunc counts engagement since a time: the notifier's delivery statistics.
type EngagementFunc func(ctx context.Context, since time.Time) ([]EngagementRow, error)

// refreshEngagement counts engagement again when EngagementInterval has passed since the last
// count (or the last failure).
func (w *Watcher) refreshEngagement(ctx context.Context, now time.Time) {
	if w.Engagement == nil || now.Sub(w.engagementAt) < EngagementInterval {
		return
	}
	w.engagementAt = now
	rows, err := w.Engagement(ctx, now.Add(-EngagementPeriod))
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("count engagement for the status page", "err", err)
		}
		return
	}
	w.mu.Lock()
	w.engagement = rows
	w.mu.Unlock()
}
