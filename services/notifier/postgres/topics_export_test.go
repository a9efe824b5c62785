package postgres

// PruneTopicSendsSQL is the topic sends' retention statement, whose plan the tests check.
const PruneTopicSendsSQL = pruneTopicSendsSQL
