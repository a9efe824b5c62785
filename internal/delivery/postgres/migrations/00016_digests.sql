-- Digests: a recipient's notifications of a category on one channel collected into one
-- message. A digest is open while items may join it; at most one is open per app, recipient
-- (user_id, '' for a raw address, with its address), category and channel (digests_open), so a
-- Send finds it with INSERT ... ON CONFLICT, which waits for a closing digest's row lock and
-- then opens a new one. Closing sets closed and, when anything was sent, delivery_id: the
-- digest's own delivery, whose notification_id is the digest's id. An item is a delivery whose
-- digest_id names its digest.
--
-- The new column has no default, so adding it rewrites nothing; the index on it is built
-- concurrently, so that deliveries go on being written meanwhile.

-- +goose NO TRANSACTION
-- +goose Up
CREATE TABLE IF NOT EXISTS digests (
    id          uuid PRIMARY KEY,
    app_id      uuid NOT NULL,
    user_id     text NOT NULL,
    category    text NOT NULL,
    channel     text NOT NULL,
    address     text NOT NULL,
    template    text NOT NULL,
    locale      text NOT NULL DEFAULT '',
    closed      boolean NOT NULL DEFAULT false,
    close_at    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    delivery_id uuid
);
CREATE UNIQUE INDEX IF NOT EXISTS digests_open ON digests (app_id, user_id, category, channel, address)
    WHERE NOT closed;
CREATE INDEX IF NOT EXISTS digests_due ON digests (close_at) WHERE NOT closed;
CREATE INDEX IF NOT EXISTS digests_user ON digests (user_id) WHERE user_id <> '';
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS digest_id uuid;
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_digest ON deliveries (digest_id) WHERE digest_id IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS deliveries_digest;
ALTER TABLE deliveries DROP COLUMN digest_id;
DROP TABLE digests;
