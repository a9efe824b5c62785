module github.com/heraldhq/herald/services/contacts

go 1.26.8

require (
	github.com/chromedp/chromedp v0.23.0
	github.com/heraldhq/herald/internal v0.0.0
	github.com/heraldhq/herald/proto v0.0.0
	github.com/twilio/twilio-go v1.31.0
)

require (
	github.com/chromedp/cdproto v0.159.0 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/golang/mock v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)

replace github.com/heraldhq/herald/internal => ../../internal

replace github.com/heraldhq/herald/proto => ../../proto
