-- Re-driving dead letters: each re-drive starts a new "drive" with a fresh attempt budget, and
-- the attempt log keys attempts by drive, so earlier attempts stay in the history.

-- +goose Up
ALTER TABLE deliveries ADD COLUMN drive integer NOT NULL DEFAULT 0;
CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';

-- +goose Down
DROP INDEX deliveries_dead;
ALTER TABLE deliveries DROP COLUMN drive;
