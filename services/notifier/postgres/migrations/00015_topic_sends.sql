-- Topic sends (SendToTopic): the request every subscriber's notification is decided by, how far
-- the fan-out got through the topic's subscribers (cursor: the contacts service's page token of
-- the first page not yet committed) with its counts, and the lease of the replica working it. A topic send is
-- also a row of notifications with the same id (no deliveries), which holds its idempotency
-- key; topic_send_id links it and every notification it created to it.

-- +goose Up
CREATE TABLE topic_sends (
    id          uuid PRIMARY KEY,
    app_id      uuid NOT NULL,
    topic       text NOT NULL,
    request     jsonb NOT NULL,
    state       text NOT NULL CHECK (state IN ('fanning_out', 'done')),
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
CREATE INDEX topic_sends_fanning_out ON topic_sends (created_at) WHERE state = 'fanning_out';

ALTER TABLE notifications ADD COLUMN topic_send_id uuid;
CREATE INDEX notifications_topic_send ON notifications (topic_send_id) WHERE topic_send_id IS NOT NULL;

-- +goose Down
DROP INDEX notifications_topic_send;
ALTER TABLE notifications DROP COLUMN topic_send_id;
DROP TABLE topic_sends;
