-- Was: the ops watcher's index of waiting deliveries: part of the deliveries table, which
-- internal/delivery/postgres migrates now. The version stays, empty, so that the notifier's
-- versions keep their numbers.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
