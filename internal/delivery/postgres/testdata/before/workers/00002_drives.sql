-- Attempts are numbered within a drive (see the notifier's 00004_redrive): a re-driven dead
-- letter starts again at attempt 1 without losing its earlier attempts.

-- +goose Up
ALTER TABLE attempts ADD COLUMN drive integer NOT NULL DEFAULT 0;
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD PRIMARY KEY (delivery_id, drive, attempt);

-- +goose Down
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD PRIMARY KEY (delivery_id, attempt);
ALTER TABLE attempts DROP COLUMN drive;
