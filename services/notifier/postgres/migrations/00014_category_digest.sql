-- A category's digest: a Send of the category that asks for no digest of its own is collected
-- into the recipient's digest ({"window": ns} or {"daily_at": "HH:MM"}, and "template"); NULL
-- sends each notification at once.

-- +goose Up
ALTER TABLE categories ADD COLUMN IF NOT EXISTS digest jsonb;

-- +goose Down
ALTER TABLE categories DROP COLUMN digest;
