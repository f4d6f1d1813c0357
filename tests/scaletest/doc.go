// Package scaletest holds the scale-out and high-availability tests: a
// Redis Cluster (3 primaries, 3 replicas) and a Sentinel-monitored Redis
// built from redis-server processes on loopback, several gateway processes
// side by side, and faults injected under load (kill -9 of a Redis primary,
// of a gateway node, a Redis restart with AOF). Each fault test counts what
// happened to every message: provisioned (answered 200), delivered, lost,
// duplicated; TestMain prints the table at the end (go test -v). The tests
// run in parallel, each on servers of its own: most of their time is spent
// waiting (for a failover, an ack deadline, a quiet period), not computing.
//
// The package has only tests; it needs redis-server and redis-cli on PATH.
package scaletest
