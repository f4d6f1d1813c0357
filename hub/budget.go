package hub

import (
	"sync/atomic"

	"github.com/popbox/popbox/redisq"
)

// ByteBudget bounds the bytes that the stream waiters sharing it (the
// subscriptions of one connection) hold in their outboxes: taken from
// Redis, not yet taken by the writer (Next frees a message's bytes, so the
// one message being written comes on top). The outbox of a waiter is bounded in messages; without a
// byte bound, a client that stops reading a multiplexed WebSocket of many
// queues of large messages makes the node hold every outbox full
// (256 queues × 16 messages of 1 MiB: gigabytes) until the write deadline
// ends the connection. With a budget, a waiter takes messages only while
// the connection holds less than the limit; one message always fits when
// the connection holds nothing, so a message larger than the limit is
// still delivered. A nil *ByteBudget bounds nothing.
type ByteBudget struct {
	limit int64
	held  atomic.Int64
}

// NewByteBudget returns a budget of limit bytes (at least 1).
func NewByteBudget(limit int64) *ByteBudget {
	return &ByteBudget{limit: max(limit, 1)}
}

// Held is how many bytes the waiters sharing b hold now.
func (b *ByteBudget) Held() int64 {
	if b == nil {
		return 0
	}
	return b.held.Load()
}

// full tells whether the waiters sharing b should take nothing more now.
func (b *ByteBudget) full() bool { return b != nil && b.held.Load() >= b.limit }

// take reserves n bytes if they fit: the total stays within the limit, or
// nothing was held (one message of any size always fits).
func (b *ByteBudget) take(n int64) bool {
	if b == nil {
		return true
	}
	for {
		h := b.held.Load()
		if h > 0 && h+n > b.limit {
			return false
		}
		if b.held.CompareAndSwap(h, h+n) {
			return true
		}
	}
}

// release frees n bytes taken before.
func (b *ByteBudget) release(n int64) {
	if b != nil {
		b.held.Add(-n)
	}
}

// messageBytes is what a message held in an outbox counts against a
// ByteBudget: its payload and callback URL, the fields of unbounded size.
func messageBytes(m redisq.Message) int64 { return int64(len(m.Payload) + len(m.Callback)) }
