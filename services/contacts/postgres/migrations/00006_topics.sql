-- Topic subscriptions, for SendToTopic. The key (topic, user_id) is also the order the notifier
-- pages through a topic's subscribers in (keyset: WHERE topic = $1 AND user_id > $2), so a page
-- costs an index range scan however many pages came before. A subscription belongs to its user:
-- deleting the user ends it.

-- +goose Up
CREATE TABLE subscriptions (
    topic      text NOT NULL,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, user_id)
);
-- A user's topics, and the cascade of a user's deletion.
CREATE INDEX subscriptions_user ON subscriptions (user_id, topic);

-- +goose Down
DROP TABLE subscriptions;
