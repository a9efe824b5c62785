-- Retention (--delivery-retention) deletes provider events by when they arrived, oldest first.
-- Built concurrently: on a deployment with years of events, webhooks go on being recorded
-- meanwhile.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS provider_events_received ON provider_events (received_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS provider_events_received;
