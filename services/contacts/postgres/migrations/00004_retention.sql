-- Retention (--sms-keyword-retention) deletes SMS keyword records by when they arrived, oldest
-- first. Built concurrently, so that inbound SMS go on being recorded meanwhile.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS sms_keywords_received ON sms_keywords (received_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS sms_keywords_received;
