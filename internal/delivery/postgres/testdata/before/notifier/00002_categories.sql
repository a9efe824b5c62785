-- Categories: the kinds of notification, with the rules settings and caps apply per kind.
-- Deliveries carry the recipient's user id and their category's rules, so that workers can
-- re-check the user's settings just before they send.

-- +goose Up
CREATE TABLE categories (
    name           text PRIMARY KEY,
    description    text NOT NULL DEFAULT '',
    critical       boolean NOT NULL DEFAULT false,
    default_opt_in boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO categories (name, description, critical, default_opt_in) VALUES
    ('account',   'Activity on your account: receipts, changes, reminders', false, true),
    ('security',  'Sign-ins, password changes and other security alerts',    true,  true),
    ('product',   'News about features you use',                              false, true),
    ('marketing', 'Offers and promotions',                                    false, true);

ALTER TABLE deliveries
    ADD COLUMN user_id text,
    ADD COLUMN critical boolean NOT NULL DEFAULT false,
    ADD COLUMN default_opt_in boolean NOT NULL DEFAULT true;
CREATE INDEX deliveries_user ON deliveries (user_id) WHERE user_id IS NOT NULL;

-- +goose Down
ALTER TABLE deliveries DROP COLUMN user_id, DROP COLUMN critical, DROP COLUMN default_opt_in;
DROP TABLE categories;
