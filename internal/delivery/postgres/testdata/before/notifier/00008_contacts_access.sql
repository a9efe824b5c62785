-- What each app may do with the contacts service's data (appkey.ContactsAccess): 'none',
-- 'read' or 'write'; admin apps may do everything whatever this says. Every app starts with
-- 'none', those from before this migration too: until now any key could read and change every
-- user's contact data, and that is what this closes. Sending needs no access (the notifier
-- resolves recipients with its own key); apps that call ContactsService must be granted it
-- (`heraldctl apps update <app> --contacts read|write`), the workers' app included (read).

-- +goose Up
ALTER TABLE apps ADD COLUMN contacts_access text NOT NULL DEFAULT 'none'
    CONSTRAINT apps_contacts_access CHECK (contacts_access IN ('none', 'read', 'write'));

-- +goose Down
ALTER TABLE apps DROP COLUMN contacts_access;
