package request

import (
	"testing"
	"time"
)

// provisionBody is the body of the wrk-like provision load (loadtest
// provision): a small message to one queue.
var provisionBody = []byte(`{"payload":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","priority":"H","expirationDelay":600,"queue":[{"id":"lt-1a2b3c4d-p7"}]}`)

// BenchmarkParseProvision is the request parsing of POST /trans.
func BenchmarkParseProvision(b *testing.B) {
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, errs := ParseProvision("application/json", provisionBody, now); errs != nil {
			b.Fatal(errs)
		}
	}
}
