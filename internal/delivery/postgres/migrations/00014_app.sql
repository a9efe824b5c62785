-- app_id is the calling app's id, from its notification: the workers choose a channel's
-- credential by it (a providers file's "apps"). NULL for deliveries made before it was kept,
-- which take the channel's default credential.

-- +goose Up
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS app_id uuid;

-- +goose Down
ALTER TABLE deliveries DROP COLUMN app_id;
