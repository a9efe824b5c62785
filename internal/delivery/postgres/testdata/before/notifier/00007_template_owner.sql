-- Who created each template version. A template name belongs to the app that created its first
-- version: only that app, or an admin app, may add versions, so that one app cannot change what
-- another app's notifications say. Versions from before this migration have no app: only admin
-- apps may add to them.

-- +goose Up
ALTER TABLE templates ADD COLUMN app_id uuid;

-- +goose Down
ALTER TABLE templates DROP COLUMN app_id;
