package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// TestStreamsShareAByteBudget: the subscriptions of one connection hold at
// most their shared byte budget of messages taken from Redis and not yet
// written (without it, a client that stops reading makes the node hold
// every outbox full: here 32 messages, 3.2 MiB, instead of 3); writing one
// message out lets them take again, and removing them loses nothing.
func TestStreamsShareAByteBudget(t *testing.T) {
	s, h := startOneHub(t)
	const size, perQueue = 100 << 10, 10
	payload := strings.Repeat("x", size)
	for i := 0; i < perQueue; i++ {
		push(t, s, "ba", payload, 'L')
		push(t, s, "bb", payload, 'L')
	}
	budget := hub.NewByteBudget(3 * size)
	wa := hub.NewStream("UNSEC:ba", 16, hub.Mode{}, "test")
	wb := hub.NewStream("UNSEC:bb", 16, hub.Mode{}, "test")
	for _, w := range []*hub.Waiter{wa, wb} {
		w.ShareBytes(budget)
		h.Add(w)
	}
	held := func() int { return len(wa.Outbox()) + len(wb.Outbox()) }
	var most int64
	watch := func(want int) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, fmt.Sprintf("outboxes hold %d messages", want), func() bool {
			most = max(most, budget.Held())
			return held() >= want
		}, func() string { return fmt.Sprintf("%d messages, %d bytes", held(), budget.Held()) })
		if most > 3*size || held() != want || budget.Held() != int64(want*size) {
			t.Fatalf("outboxes hold %d messages, %d bytes (at most %d seen); want %d within %d bytes",
				held(), budget.Held(), most, want, 3*size)
		}
	}
	watch(3)

	// The writer takes one message: the budget frees its bytes and the
	// subscriptions pull again, up to the budget and no further.
	w := wa
	if len(wa.Outbox()) == 0 {
		w = wb
	}
	if _, ok := w.Next(); !ok {
		t.Fatal("Next found no message in a non-empty outbox")
	}
	if budget.Held() != 2*size {
		t.Fatalf("after Next the budget holds %d bytes, want %d", budget.Held(), 2*size)
	}
	h.Pulled(wa)
	h.Pulled(wb)
	watch(3)

	// Removed, the subscriptions hand back what they held: every message
	// not written is in Redis again. A pop batch still in flight at the
	// removal hands its messages back when it returns, so wait for them.
	h.Remove(wa)
	h.Remove(wb)
	if budget.Held() != 0 {
		t.Fatalf("after removal the budget holds %d bytes", budget.Held())
	}
	queued := func() (n int) {
		for _, q := range []string{"UNSEC:ba", "UNSEC:bb"} {
			got, err := s.Peek(context.Background(), q, 100)
			if err != nil {
				t.Fatal(err)
			}
			n += len(got)
		}
		return n
	}
	testenv.Eventually(t, 5*time.Second, "every unwritten message back in Redis", func() bool {
		return queued() >= 2*perQueue-1
	}, func() string { return fmt.Sprintf("%d queued", queued()) })
	left := 0
	for _, q := range []string{"UNSEC:ba", "UNSEC:bb"} {
		got, err := s.Pop(context.Background(), q, 100, redisq.PopOptions{})
		if err != nil {
			t.Fatal(err)
		}
		left += len(got)
	}
	if left != 2*perQueue-1 {
		t.Fatalf("%d messages left in Redis, want %d (one written)", left, 2*perQueue-1)
	}
}

// TestByteBudgetPassesOneLargeMessage: a message larger than the whole
// budget is still delivered when the connection holds nothing, and the
// next one follows once it is written.
func TestByteBudgetPassesOneLargeMessage(t *testing.T) {
	s, h := startOneHub(t)
	big := strings.Repeat("y", 64<<10)
	push(t, s, "large1", big, 'L')
	push(t, s, "large2", big, 'L')
	budget := hub.NewByteBudget(1 << 10)
	w1 := hub.NewStream("UNSEC:large1", 16, hub.Mode{}, "test")
	w1.ShareBytes(budget)
	h.Add(w1)
	testenv.Eventually(t, 5*time.Second, "the large message reaches the outbox", func() bool { return len(w1.Outbox()) == 1 })
	w2 := hub.NewStream("UNSEC:large2", 16, hub.Mode{}, "test")
	w2.ShareBytes(budget)
	h.Add(w2)
	// (That w2 takes nothing meanwhile is TestStreamsShareAByteBudget's
	// bound; here: once w1's message is taken, w2 gets its own.)
	if m, ok := w1.Next(); !ok || m.Payload != big {
		t.Fatalf("Next = %v, %v", len(m.Payload), ok)
	}
	h.Pulled(w1)
	h.Pulled(w2)
	testenv.Eventually(t, 5*time.Second, "the second large message follows", func() bool { return len(w2.Outbox()) == 1 })
	h.Remove(w1)
	h.Remove(w2)
}
