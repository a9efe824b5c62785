-- +goose Up
-- A queued delivery whose publish failed after its commit has no message in the queue: the
-- reconciler must publish it again at once, and must not hold it back as waiting in a backlog.
ALTER TABLE deliveries ADD COLUMN published boolean NOT NULL DEFAULT true;

-- +goose Down
ALTER TABLE deliveries DROP COLUMN published;
