package redisq_test

import (
	"context"
	"testing"

	"github.com/popbox/popbox/redisq"
)

// TestTopology: GET /'s view of a Redis server (read with go-redis'
// InfoMap) names its role, version and memory.
func TestTopology(t *testing.T) {
	c := redisClient(t)
	nodes := redisq.New(c, redisq.Options{}).Topology(context.Background())
	if len(nodes) != 1 {
		t.Fatalf("nodes: %+v", nodes)
	}
	n := nodes[0]
	if !n.Reachable || n.Role != "master" || n.Version == "" || n.UsedMemory <= 0 || n.Error != "" {
		t.Fatalf("node: %+v, want a reachable master with version and memory", n)
	}
}
