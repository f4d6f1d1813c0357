package testenv

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// HangingServer starts an HTTP server that accepts every request and never
// answers it: a request is held until its client gives up or the test
// ends, when the server is released and closed. It stands for a callback
// or webhook destination that hangs.
func HangingServer(t testing.TB) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}
