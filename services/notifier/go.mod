module github.com/heraldhq/herald/services/notifier

go 1.26.8

require (
	github.com/heraldhq/herald/internal v0.0.0
	github.com/heraldhq/herald/proto v0.0.0
)

require github.com/twilio/twilio-go v1.31.0

require (
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/golang/mock v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)

replace github.com/heraldhq/herald/internal => ../../internal

replace github.com/heraldhq/herald/proto => ../../proto
