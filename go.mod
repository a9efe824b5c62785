module github.com/heraldhq/herald

go 1.26.8

require (
	github.com/heraldhq/herald/internal v0.0.0
	github.com/heraldhq/herald/proto v0.0.0
	github.com/heraldhq/herald/services/contacts v0.0.0
	github.com/heraldhq/herald/services/notifier v0.0.0
	github.com/heraldhq/herald/services/workers v0.0.0
)

replace (
	github.com/heraldhq/herald/internal => ./internal
	github.com/heraldhq/herald/proto => ./proto
	github.com/heraldhq/herald/services/contacts => ./services/contacts
	github.com/heraldhq/herald/services/notifier => ./services/notifier
	github.com/heraldhq/herald/services/workers => ./services/workers
)
