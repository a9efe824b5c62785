-- A topic send can be canceled (CancelNotification of its own notification): its fan-out stops
-- and its recipients' deliveries not yet being sent are canceled. The cancel pages through the
-- recipients' notifications by id within their topic send, so the link's index holds the id
-- too: one index range per page, whatever the number of recipients.

-- +goose Up
ALTER TABLE topic_sends DROP CONSTRAINT topic_sends_state_check;
ALTER TABLE topic_sends ADD CONSTRAINT topic_sends_state_check
    CHECK (state IN ('fanning_out', 'done', 'canceled'));
CREATE INDEX notifications_topic_send_id ON notifications (topic_send_id, id) WHERE topic_send_id IS NOT NULL;
DROP INDEX notifications_topic_send;

-- +goose Down
CREATE INDEX notifications_topic_send ON notifications (topic_send_id) WHERE topic_send_id IS NOT NULL;
DROP INDEX notifications_topic_send_id;
UPDATE topic_sends SET state = 'done', cursor = '', lease_owner = NULL, lease_until = NULL WHERE state = 'canceled';
ALTER TABLE topic_sends DROP CONSTRAINT topic_sends_state_check;
ALTER TABLE topic_sends ADD CONSTRAINT topic_sends_state_check CHECK (state IN ('fanning_out', 'done'));
