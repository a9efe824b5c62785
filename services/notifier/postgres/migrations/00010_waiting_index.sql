-- +goose Up
-- The ops watcher counts what waits per channel every few seconds: scheduled, retrying and dead
-- deliveries, and the oldest queued one. Without an index it read the whole table each time,
-- sent history included. With this one each count reads only its own rows, and the oldest
-- queued delivery is the first entry of its range. Deliveries enter it when queued and leave it
-- when claimed, so a sent one costs it one entry for a while.
CREATE INDEX deliveries_waiting ON deliveries (channel, state, created_at)
    WHERE state IN ('scheduled', 'queued', 'retrying', 'dead');

-- +goose Down
DROP INDEX deliveries_waiting;
