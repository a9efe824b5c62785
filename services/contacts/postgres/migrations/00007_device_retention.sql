-- Retention (--device-retention) deletes devices a provider declared dead, by when that was,
-- oldest first. Built concurrently, so that devices go on being registered meanwhile.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_deactivated ON devices (deactivated_at) WHERE NOT active;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS devices_deactivated;
