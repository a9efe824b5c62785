package notifier

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/delivery"
)

// Handoff puts committed deliveries on their channels' queues: those a Send created, and dead
// letters queued again. Both answer their caller once the deliveries are committed, so a publish
// that fails must not fail the call; Handoff is the one place that turns such a failure into
// work for the reconciler.
type Handoff struct {
	Publisher Publisher
	// Deliveries takes the deliveries of a failed publish, for the reconciler.
	Deliveries UnpublishedStore
	Log        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// publish hands deliveries to the broker. They are committed already, so a failure only delays
// them: they are marked due at once, and the reconciler's next pass publishes them.
func (h *Handoff) publish(ctx context.Context, byChannel map[delivery.Channel][]uuid.UUID) {
	if len(byChannel) == 0 {
		return
	}
	err := h.Publisher.Publish(ctx, byChannel)
	if err == nil {
		return
	}
	var ids []uuid.UUID
	for _, l := range byChannel {
		ids = append(ids, l...)
	}
	h.Log.Warn("publish failed; the reconciler will publish again", "deliveries", len(ids), "err", err)
	// Within a pass, not after the deliveries' deadline (RepublishAfter): a broker that fell
	// behind would otherwise hold them back for minutes.
	if err := h.Deliveries.Unpublished(context.WithoutCancel(ctx), ids, clock(h.Now)); err != nil {
		h.Log.Warn("cannot mark the deliveries for the reconciler; they wait for their deadline",
			"deliveries", len(ids), "err", err)
	}
}
