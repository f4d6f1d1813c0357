// Package e2e holds black-box tests of the gateway: real `popbox serve`
// processes (built with -race) and real redis-server processes, driven over
// real HTTP. The tests check the classic PopBox contract of API.md part 1
// byte for byte (status codes, JSON shapes, error strings), waiter
// wake-ups across nodes, "blocked" accounting when a node dies, durable
// deferred provisioning and the Redis connection budget under thousands of
// waiting pops.
//
// Everything lives in _test.go files; run it with `go test -race ./tests/e2e/`.
package e2e
