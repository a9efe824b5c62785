-- Provider events: what SendGrid's event webhook and Twilio's status callbacks reported about
-- messages they accepted (delivered, bounced, opened, unsubscribed...). Each event is stored once,
-- keyed by the provider's own event id, so a webhook the provider delivers twice is applied once.
-- details keeps the provider's fields worth keeping for operators, never an address.

-- +goose Up
CREATE TABLE provider_events (
    provider     text NOT NULL,
    event_id     text NOT NULL,
    -- NULL when the event is about no delivery Herald knows. No foreign key: the event history
    -- outlives deliveries that retention removes.
    delivery_id  uuid,
    kind         text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    -- What the event says about the address ('invalid', 'opted_out'); announced_at is when that
    -- fact reached the events stream, NULL until then (and for events without one).
    effect       text NOT NULL DEFAULT '',
    announced_at timestamptz,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    details      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX provider_events_delivery ON provider_events (delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX provider_events_unannounced ON provider_events (received_at)
    WHERE effect <> '' AND delivery_id IS NOT NULL AND announced_at IS NULL;

-- +goose Down
DROP TABLE provider_events;
