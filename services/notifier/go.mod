module github.com/heraldhq/herald/services/notifier

go 1.26.8

require (
	github.com/heraldhq/herald/internal v0.0.0
	github.com/heraldhq/herald/proto v0.0.0
)

replace github.com/heraldhq/herald/internal => ../../internal

replace github.com/heraldhq/herald/proto => ../../proto
