package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/delivery"
	"github.com/heraldhq/herald/internal/errs"
	"github.com/heraldhq/herald/internal/ids"
	"github.com/heraldhq/herald/internal/pgdb"
	"github.com/heraldhq/herald/services/notifier"
)

// DeliveryStats implements notifier.StatsStore.
func (s *Store) DeliveryStats(ctx context.Context, since time.Time) ([]notifier.DeliveryStats, error) {
	rows, err := s.pool.Query(ctx, `
		WITH ev AS (
			SELECT delivery_id, bool_or(opened) AS opened, bool_or(clicked) AS clicked
			FROM (
				SELECT delivery_id, kind = 'opened' AS opened, kind = 'clicked' AS clicked
				FROM notifier.provider_events
				WHERE delivery_id >= $1 AND kind IN ('opened', 'clicked')
				UNION ALL
				-- a person's click on a short link (bots' are counted apart, not here)
				SELECT delivery_id, false, true FROM notifier.link_clicks
				WHERE delivery_id >= $1 AND bot = ''
			) e
			GROUP BY delivery_id
		)
		SELECT coalesce(n.template_name, ''), d.category, d.channel,
			count(*) FILTER (WHERE d.state <> 'skipped'),
			count(*) FILTER (WHERE d.sent_at IS NOT NULL),
			count(*) FILTER (WHERE d.state = 'delivered'),
			count(*) FILTER (WHERE ev.opened),
			count(*) FILTER (WHERE ev.clicked),
			count(*) FILTER (WHERE d.state IN ('failed', 'dead', 'bounced')),
			count(*) FILTER (WHERE d.state = 'skipped')
		FROM delivery.deliveries d
		JOIN notifier.notifications n ON n.id = d.notification_id
		LEFT JOIN ev ON ev.delivery_id = d.id
		WHERE d.id >= $1
		GROUP BY 1, 2, 3
		ORDER BY 1, 2, 3`, ids.FirstV7(since))
	if err != nil {
		return nil, pgdb.Err(err)
	}
	stats, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.DeliveryStats, error) {
		var st notifier.DeliveryStats
		var ch string
		err := r.Scan(&st.Template, &st.Category, &ch, &st.Accepted, &st.Sent, &st.Delivered, &st.Opened,
			&st.Clicked, &st.Failed, &st.Skipped)
		st.Channel = delivery.Channel(ch)
		return st, err
	})
	return stats, pgdb.Err(err)
}

// DeliveryApp implements notifier.StatsStore.
func (s *Store) DeliveryApp(ctx context.Context, deliveryID uuid.UUID) (uuid.UUID, error) {
	var app uuid.UUID
	err := s.pool.QueryRow(ctx, `SELECT n.app_id FROM delivery.deliveries d
		JOIN notifier.notifications n ON n.id = d.notification_id WHERE d.id = $1`, deliveryID).Scan(&app)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, errs.E(errs.NotFound, "delivery not found")
	}
	return app, pgdb.Err(err)
}
