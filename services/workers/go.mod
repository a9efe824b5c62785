module github.com/heraldhq/herald/services/workers

go 1.26.8

require (
	github.com/heraldhq/herald/internal v0.0.0
	github.com/heraldhq/herald/proto v0.0.0
)

require (
	github.com/google/uuid v1.6.0
	github.com/sendgrid/rest v2.6.9+incompatible
	github.com/sendgrid/sendgrid-go v3.16.1+incompatible
)

replace github.com/heraldhq/herald/internal => ../../internal

replace github.com/heraldhq/herald/proto => ../../proto
