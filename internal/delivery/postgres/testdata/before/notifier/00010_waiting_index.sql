-- +goose Up
-- The ops watcher counts scheduled, retrying and dead deliveries per channel every few seconds.
-- Without an index it read the whole table each time, sent history included. Queued deliveries
-- are left out on purpose: an index over them would offer the planner a scan of the whole
-- backlog for the workers' claim (state = 'queued' OR ...), which a generic plan may take.
CREATE INDEX deliveries_waiting ON deliveries (channel, state)
    WHERE state IN ('scheduled', 'retrying', 'dead');

-- +goose Down
DROP INDEX deliveries_waiting;
