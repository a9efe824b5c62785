package postgres

// Retention's statements, whose plans the tests check.
const (
	PruneNotificationsSQL  = pruneNotificationsSQL
	PruneClicksSQL         = pruneClicksSQL
	PruneLinksSQL          = pruneLinksSQL
	PruneProviderEventsSQL = pruneProviderEventsSQL
)
