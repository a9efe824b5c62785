-- How users are reached and what they chose: devices, settings, suppressions, and the change
-- feed that keeps every replica's cache exact.

-- +goose Up
-- NULL settings: the user never chose; category defaults apply.
ALTER TABLE users ADD COLUMN settings jsonb;

-- A token belongs to at most one user; registering it again moves it and reactivates it.
CREATE TABLE devices (
    platform           text NOT NULL,
    token              text NOT NULL,
    user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    app                text NOT NULL DEFAULT '',
    active             boolean NOT NULL DEFAULT true,
    deactivated_reason text NOT NULL DEFAULT '',
    deactivated_at     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, token)
);
CREATE INDEX devices_user ON devices (user_id);

-- Opt-outs made at an address (SMS STOP, email unsubscribe) and addresses providers called
-- invalid. category '' covers every category.
CREATE TABLE suppressions (
    channel    text NOT NULL,
    address    text NOT NULL,
    category   text NOT NULL DEFAULT '',
    reason     text NOT NULL,
    invalid    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address, category)
);

-- Every write that changes how a user or an address resolves appends the keys it touched, in
-- the same transaction; caches evict by reading it (see internal/coherent). xid orders it by
-- transaction, so a reader can tell which transactions it may not have seen yet.
CREATE TABLE changes (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    key text NOT NULL,
    at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_xid ON changes (xid);
CREATE INDEX changes_at ON changes (at);

-- +goose Down
DROP TABLE changes;
DROP TABLE suppressions;
DROP TABLE devices;
ALTER TABLE users DROP COLUMN settings;
