-- What the notifier enforces per caller and per category: app scopes and request rates,
-- category channels and frequency caps, and a change feed that lets every replica see a
-- revoked key or a changed scope at once.

-- +goose Up
ALTER TABLE apps
    ADD COLUMN allowed_categories text[] NOT NULL DEFAULT '{}',
    ADD COLUMN allowed_channels text[] NOT NULL DEFAULT '{}',
    ADD COLUMN requests_per_second double precision NOT NULL DEFAULT 0,
    ADD COLUMN burst integer NOT NULL DEFAULT 0;

ALTER TABLE categories
    ADD COLUMN allowed_channels text[] NOT NULL DEFAULT '{}',
    ADD COLUMN caps jsonb NOT NULL DEFAULT '[]';

-- Keys and apps whose authentication changed (see internal/coherent).
CREATE TABLE key_changes (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    key text NOT NULL,
    at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_changes_xid ON key_changes (xid);
CREATE INDEX key_changes_at ON key_changes (at);

-- +goose Down
DROP TABLE key_changes;
ALTER TABLE categories DROP COLUMN allowed_channels, DROP COLUMN caps;
ALTER TABLE apps DROP COLUMN allowed_categories, DROP COLUMN allowed_channels,
    DROP COLUMN requests_per_second, DROP COLUMN burst;
