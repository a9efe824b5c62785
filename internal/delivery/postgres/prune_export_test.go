package postgres

// Retention's statements, whose plans the tests check.
const (
	PruneDeliveriesSQL = pruneDeliveriesSQL
	PruneAttemptsSQL   = pruneAttemptsSQL
	PruneDigestsSQL    = pruneDigestsSQL
)
