-- The contacts service's schema: recipients and how to reach them.

-- +goose Up
CREATE TABLE users (
    id         text PRIMARY KEY,
    email      text NOT NULL DEFAULT '',
    phone      text NOT NULL DEFAULT '',
    locale     text NOT NULL DEFAULT '',
    timezone   text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE users;
