package redisq

import "github.com/redis/go-redis/v9"

// Stepwise makes s take the Cluster's path (one script per slot) on a
// single server, for tests and measurements of that path.
func Stepwise(s *Store) { s.stepwise = true }

// IsStepwise tells whether s takes the Cluster's path.
func IsStepwise(s *Store) bool { return !s.fused() }

// NewLike is New taking the same path as s.
func NewLike(s *Store, c redis.UniversalClient, o Options) *Store {
	n := New(c, o)
	n.stepwise = s.stepwise
	return n
}
