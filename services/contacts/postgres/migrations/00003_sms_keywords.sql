-- The SMS keywords (STOP, START) applied, by Twilio's message SID. Twilio's signature covers no
-- time, so a request recorded anywhere on its way can be posted again at any time: a message
-- applied once is not applied again, so that a replayed START cannot undo a later STOP (nor a
-- replayed STOP a later START). Only keyword messages are recorded, and not the number: the
-- table grows with opt-outs and opt-ins alone, and is their record.

-- +goose Up
CREATE TABLE sms_keywords (
    message_sid text PRIMARY KEY,
    stop        boolean NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE sms_keywords;
