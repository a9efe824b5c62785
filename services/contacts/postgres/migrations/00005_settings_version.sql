-- Each state of a user's settings has a version, so that a read-modify-write of them (the
-- preference page, UpdateSettings with an etag) updates them only if no one changed them since
-- it read them. Versions come from one sequence for every user, so a user deleted and created
-- again never brings back a version an old reader holds. 0: no change since the user was created
-- (or since this migration). A constant default adds the column without rewriting the table.

-- +goose Up
CREATE SEQUENCE settings_versions;
ALTER TABLE users ADD COLUMN settings_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN settings_version;
DROP SEQUENCE settings_versions;
