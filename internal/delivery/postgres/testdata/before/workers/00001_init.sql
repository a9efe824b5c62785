-- The workers' schema: the attempt log, one row per provider call. Deliveries themselves live
-- in the notifier's schema; the workers claim and update them there.

-- +goose Up
CREATE TABLE attempts (
    delivery_id         uuid NOT NULL,
    attempt             integer NOT NULL,
    worker              text NOT NULL,
    provider            text NOT NULL,
    outcome             text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    error               text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    started_at          timestamptz NOT NULL,
    latency_us          bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- +goose Down
DROP TABLE attempts;
