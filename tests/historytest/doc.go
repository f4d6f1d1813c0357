// Package historytest holds black-box tests of the event stream and its
// sinks (API.md 2.4, issue 7): real `popbox serve` processes, a real
// redis-server and a real MongoDB-wire server (mongod, or the embedded
// FerretDB of tools/ferretdb) started by internal/testenv, driven over real
// HTTP. They check that provision → pop → ack is recorded in order with the
// right fields and served by the history endpoints, that a MongoDB outage
// or a dead events webhook changes nothing for clients (drops are counted,
// writing resumes by itself), that the events webhook receives every
// Delivered event in batches, and they measure provision+pop throughput
// with history on and off.
//
// Everything lives in _test.go files; run it with
// `go test -race ./tests/historytest/`.
package historytest
