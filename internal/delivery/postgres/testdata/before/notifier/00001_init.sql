-- The notifier's schema: calling apps and their keys, templates, and the system of record for
-- notifications and their deliveries. The workers update deliveries (claim, outcome); the
-- reconciler scans them by due_at.

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

-- One row per channel target. due_at is when the reconciler must look at the row next: the send
-- time of a scheduled delivery, the re-publish deadline of a queued or retrying one, the lease
-- expiry of a sending one; NULL once terminal.
CREATE TABLE deliveries (
    id                  uuid PRIMARY KEY,
    notification_id     uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel             text NOT NULL,
    address             text NOT NULL,
    category            text NOT NULL,
    priority            text NOT NULL,
    state               text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    content             jsonb NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text NOT NULL DEFAULT '',
    provider            text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    lease_owner         text,
    publishes           integer NOT NULL DEFAULT 0,
    due_at              timestamptz,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    sent_at             timestamptz
);
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;

-- +goose Down
DROP TABLE deliveries;
DROP TABLE notifications;
DROP TABLE templates;
DROP TABLE app_keys;
DROP TABLE apps;
