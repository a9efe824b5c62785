-- The inbox schema: the messages the inbox channel stored for each user, and each user's feed
-- position. Only internal/inbox/postgres writes them: the workers store messages, the notifier
-- marks them read or archived.

-- +goose Up
-- feeds numbers each user's messages in the order they were stored: storing a message updates
-- its user's row, whose lock serialises the stores of one user, so a committed seq means every
-- smaller one is committed too (the live feed resumes after a seq and misses nothing).
CREATE TABLE feeds (
    user_id text PRIMARY KEY,
    seq     bigint NOT NULL
);

-- id is the delivery id that stored the message (no foreign key: the delivery schema is its
-- own, and its retention drops deliveries by time); a redelivered delivery stores nothing new.
CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    user_id         text NOT NULL,
    seq             bigint NOT NULL,
    notification_id uuid NOT NULL,
    category        text NOT NULL,
    title           text NOT NULL DEFAULT '',
    body            text NOT NULL DEFAULT '',
    data            jsonb,
    created_at      timestamptz NOT NULL,
    read_at         timestamptz,
    archived_at     timestamptz
);

-- Lists (newest first, keyset on seq) and the feed's "after seq" walk this index.
CREATE UNIQUE INDEX messages_user_seq ON messages (user_id, seq);
-- The unread count and the unread list read only the rows still unread: an index-only count.
CREATE INDEX messages_unread ON messages (user_id, seq) INCLUDE (category)
    WHERE read_at IS NULL AND archived_at IS NULL;

-- +goose Down
DROP TABLE messages;
DROP TABLE feeds;
