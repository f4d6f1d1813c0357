package redisq

import (
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

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

// NewTx is the transaction the tests provision unless they need another:
// payload with priority prio to queues of namespace UNSEC:, with a fresh
// id, expiring in an hour.
func NewTx(prio domain.Priority, payload string, queues ...string) *Transaction {
	return &Transaction{ID: uuid.NewString(), NS: "UNSEC:", Queues: queues, Priority: prio,
		ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": payload, "priority": prio.String()}}
}
