-- The notifier's schema: calling apps and their keys, templates, and the system of record for
-- notifications. Their deliveries are internal/delivery's (schema "delivery").

-- +goose Up
CREATE TABLE apps (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    admin      boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 hash of each key's secret is stored.
CREATE TABLE app_keys (
    id          text PRIMARY KEY,
    app_id      uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX app_keys_app ON app_keys (app_id);

-- Template versions are immutable: a change is a new version.
CREATE TABLE templates (
    name        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    description text NOT NULL DEFAULT '',
    parts       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE notifications (
    id               uuid PRIMARY KEY,
    app_id           uuid NOT NULL,
    idempotency_key  text,
    request_hash     bytea,
    category         text NOT NULL,
    user_id          text,
    template_name    text,
    template_version integer,
    template_locale  text,
    priority         text NOT NULL,
    send_at          timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX notifications_idempotency ON notifications (app_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- +goose Down
DROP TABLE notifications;
DROP TABLE templates;
DROP TABLE app_keys;
DROP TABLE apps;
