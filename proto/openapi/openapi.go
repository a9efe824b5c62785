// Package openapi holds the OpenAPI v2 document of Herald's HTTP/JSON API (herald.swagger.json),
// which `make proto` generates from the protos' HTTP bindings and comments, and serves it.
package openapi

import (
	_ "embed"
	"net/http"
)

// Document is the OpenAPI v2 (Swagger) document of the whole HTTP/JSON API.
//
//go:embed herald.swagger.json
var Document []byte

// Handler serves Document as JSON.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(Document)
	})
}
