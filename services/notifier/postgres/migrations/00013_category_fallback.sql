-- A category's fallback chain: the channels a Send of the category that asks for none goes to
-- one after another, and the step timeout ({"channels": [...], "step_timeout": ns}); NULL sends
-- on every channel at once.

-- +goose Up
ALTER TABLE categories ADD COLUMN IF NOT EXISTS fallback jsonb;

-- +goose Down
ALTER TABLE categories DROP COLUMN fallback;
