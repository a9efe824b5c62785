-- Categories: the kinds of notification, with the rules settings and caps apply per kind.

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

-- +goose Down
DROP TABLE categories;
