-- Short links: each http(s) link in a delivery's content is replaced by a short link of its
-- own, so a click tells which delivery (and so which channel, category and template) it came
-- from. links.id is the link id behind the code (services/notifier/links): the second the
-- delivery goes out in its high 32 bits, a number from link_ids in its low 32. The sequence
-- advances by 1000 so that a notifier reserves a block of ids per round trip.
-- No foreign keys: links and clicks are pruned on their own schedule (--link-retention).

-- +goose Up
CREATE SEQUENCE link_ids INCREMENT BY 1000;

CREATE TABLE links (
    id              bigint PRIMARY KEY,
    delivery_id     uuid NOT NULL,
    notification_id uuid NOT NULL,
    app_id          uuid NOT NULL,
    channel         text NOT NULL,
    category        text NOT NULL,
    template_name   text,
    -- The long URL. It may carry tokens: never logged.
    url             text NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX links_delivery ON links (delivery_id);

-- One row per click counted: a person's (bot = ''), or a bot's or link previewer's
-- (bot = 'agent' by user agent, 'timing' by how soon after the send it came). Repeated clicks
-- on a delivery within the dedupe window are not stored.
CREATE TABLE link_clicks (
    link_id     bigint NOT NULL,
    delivery_id uuid NOT NULL,
    clicked_at  timestamptz NOT NULL,
    bot         text NOT NULL DEFAULT ''
);
CREATE INDEX link_clicks_delivery ON link_clicks (delivery_id, clicked_at);

-- +goose Down
DROP TABLE link_clicks;
DROP TABLE links;
DROP SEQUENCE link_ids;
