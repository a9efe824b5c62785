-- Fallback chains: a notification may go to its channels one after another instead of all at
-- once. step is a delivery's place in its chain (from 1; 0 outside any chain) and step_timeout
-- how long a sent step waits for a delivery event before the next one goes (0: sent is
-- enough). A later step is created 'waiting', due when the reconciler must decide it: when an
-- earlier step moves on (the record or the provider event marks it due at once), when the step
-- timeout of a sent step passes, and at its expiry at the latest. deliveries_steps_due finds
-- the due ones without walking the other due deliveries (a backlog of queued ones, say), and
-- deliveries_notification the steps before one.
--
-- Adding the columns with constant defaults rewrites nothing; the index is built concurrently,
-- so that deliveries go on being written meanwhile.

-- +goose NO TRANSACTION
-- +goose Up
ALTER TABLE deliveries
    ADD COLUMN IF NOT EXISTS step integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS step_timeout interval NOT NULL DEFAULT '0';
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_steps_due ON deliveries (due_at) WHERE state = 'waiting';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS deliveries_steps_due;
ALTER TABLE deliveries DROP COLUMN step, DROP COLUMN step_timeout;
