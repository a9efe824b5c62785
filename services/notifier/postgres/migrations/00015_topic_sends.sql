-- Topic sends (SendToTopic): the request every subscriber's notification is decided by, how far
-- the fan-out got through the topic's subscribers (cursor: the contacts service's page token of
-- the first page not yet committed) with its counts, and the lease of the replica working it. A
-- topic send is also a row of notifications with the same id (no deliveries), which holds its
-- idempotency key; topic_send_id links it and every notification it created to it. A canceled
-- topic send (CancelNotification of its own notification) is claimed and advanced no more.
--
-- The cancel pages through the recipients' notifications by id within their topic send, so the
-- link's index holds the id too: one index range per page, whatever the number of recipients.
-- Adding a nullable column rewrites nothing; the index is built concurrently, so that
-- notifications go on being written meanwhile (hence no transaction, and IF NOT EXISTS so that
-- a migration interrupted half way runs again).

-- +goose NO TRANSACTION
-- +goose Up
CREATE TABLE IF NOT EXISTS topic_sends (
    id          uuid PRIMARY KEY,
    app_id      uuid NOT NULL,
    topic       text NOT NULL,
    request     jsonb NOT NULL,
    state       text NOT NULL CHECK (state IN ('fanning_out', 'done', 'canceled')),
    cursor      text NOT NULL DEFAULT '',
    recipients  bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    lease_owner text,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL,
    done_at     timestamptz
);
-- The fan-out's claim looks only at the topic sends not yet done.
CREATE INDEX IF NOT EXISTS topic_sends_fanning_out ON topic_sends (created_at) WHERE state = 'fanning_out';

ALTER TABLE notifications ADD COLUMN IF NOT EXISTS topic_send_id uuid;
CREATE INDEX CONCURRENTLY IF NOT EXISTS notifications_topic_send_id ON notifications (topic_send_id, id)
    WHERE topic_send_id IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notifications_topic_send_id;
ALTER TABLE notifications DROP COLUMN topic_send_id;
DROP TABLE topic_sends;
