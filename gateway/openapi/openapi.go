// Package openapi holds the OpenAPI 3.1 description of the gateway's HTTP
// API (openapi.json, the machine-readable twin of docs/API.md), served at
// GET /openapi.json. The gateway's contract test (gateway/openapi_test.go)
// drives every operation against a real gateway and validates requests and
// answers against it, and compares its paths with the routes the gateway
// registers, so the description cannot drift from the server: a route
// added to the gateway needs its entry here (and a request in that test).
package openapi

import (
	_ "embed"
	"net/http"
)

// JSON is the OpenAPI description, as served.
//
//go:embed openapi.json
var JSON []byte

// Handler serves the description as application/json.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(JSON)
	})
}
