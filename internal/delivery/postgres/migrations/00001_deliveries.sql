-- The delivery schema: the system of record for deliveries, one row per channel target of a
-- notification, and the attempt log, one row per claim answered. Only internal/delivery writes
-- them: the notifier creates deliveries, the workers claim and record them, the reconciler moves
-- the ones whose deadline passed.
--
-- Databases made before this schema existed keep these tables in the notifier's and the
-- workers' schemas; they are moved here as they are, so this migration also brings any such
-- table up to the shape below.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF to_regclass('notifier.deliveries') IS NOT NULL AND to_regclass('delivery.deliveries') IS NULL THEN
        ALTER TABLE notifier.deliveries SET SCHEMA delivery;
    END IF;
    IF to_regclass('workers.attempts') IS NOT NULL AND to_regclass('delivery.attempts') IS NULL THEN
        ALTER TABLE workers.attempts SET SCHEMA delivery;
    END IF;
END $$;
-- +goose StatementEnd

-- due_at is when the reconciler must look at the row next: the send time of a scheduled
-- delivery, the end of a retry's backoff, the re-publish deadline of a queued one, the lease
-- expiry of a sending one; NULL once terminal. publishes counts re-publishes (each doubles the
-- next deadline); published is false for a queued delivery whose message never reached its
-- queue. drive numbers re-drives of a dead letter, each with a fresh attempt budget.
-- notification_id has no foreign key: the notifier's schema is its own, and retention drops
-- both by time.
CREATE TABLE IF NOT EXISTS deliveries (
    id                  uuid PRIMARY KEY,
    notification_id     uuid NOT NULL,
    user_id             text,
    channel             text NOT NULL,
    address             text NOT NULL,
    category            text NOT NULL,
    priority            text NOT NULL,
    critical            boolean NOT NULL DEFAULT false,
    default_opt_in      boolean NOT NULL DEFAULT true,
    state               text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    content             jsonb NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    drive               integer NOT NULL DEFAULT 0,
    last_error          text NOT NULL DEFAULT '',
    provider            text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    lease_owner         text,
    publishes           integer NOT NULL DEFAULT 0,
    published           boolean NOT NULL DEFAULT true,
    due_at              timestamptz,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    sent_at             timestamptz
);
ALTER TABLE deliveries
    DROP CONSTRAINT IF EXISTS deliveries_notification_id_fkey,
    ADD COLUMN IF NOT EXISTS user_id text,
    ADD COLUMN IF NOT EXISTS critical boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS default_opt_in boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS drive integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS published boolean NOT NULL DEFAULT true;

CREATE INDEX IF NOT EXISTS deliveries_notification ON deliveries (notification_id);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_user ON deliveries (user_id) WHERE user_id IS NOT NULL;
-- Twilio's status callbacks name the message only by its SID.
CREATE INDEX IF NOT EXISTS deliveries_provider_message ON deliveries (provider, provider_message_id)
    WHERE provider_message_id <> '';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (id) WHERE state = 'dead';
-- The ops watcher counts the deliveries that wait, per channel and state, every few seconds: the
-- queue's messages are batches, so its own counts say little of the work waiting.
DROP INDEX IF EXISTS deliveries_waiting;
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (channel, state)
    WHERE state IN ('queued', 'sending', 'scheduled', 'retrying', 'dead');

-- Attempts are numbered within a drive.
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id         uuid NOT NULL,
    drive               integer NOT NULL DEFAULT 0,
    attempt             integer NOT NULL,
    worker              text NOT NULL,
    provider            text NOT NULL,
    outcome             text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    error               text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    started_at          timestamptz NOT NULL,
    latency_us          bigint NOT NULL,
    PRIMARY KEY (delivery_id, drive, attempt)
);
-- An attempt log from before re-drives numbered attempts without their drive.
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS drive integer NOT NULL DEFAULT 0;
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = 'attempts'::regclass AND indisprimary AND indnatts = 3) THEN
        ALTER TABLE attempts DROP CONSTRAINT attempts_pkey, ADD PRIMARY KEY (delivery_id, drive, attempt);
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE attempts;
DROP TABLE deliveries;
