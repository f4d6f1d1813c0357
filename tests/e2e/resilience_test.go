package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestRedisRestart restarts the redis-server under a gateway with a pop
// waiting: once Redis is back, a message provisioned through the gateway
// reaches the waiting pop promptly. (A restarted server has lost the
// notify-keyspace-events setting the gateway made at start.)
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	r, n := startRedisNode(t, testenv.OwnRedis())
	q := qn(t, "")

	// Before: a waiter is woken at once.
	ch := n.asyncPop(context.Background(), "", q, "timeout=10")
	eventually(t, 5*time.Second, "pop waiting", func() bool { return n.blocked(t, q) })
	tid := n.send1(t, "before", "H", q)
	expectPop(t, waitPop(t, ch, 10*time.Second).p, []string{"before"}, []string{tid})

	r.Restart(t)
	eventually(t, 15*time.Second, "gateway ready again", func() bool {
		resp, err := n.try(req{method: http.MethodGet, path: "/readyz"})
		return err == nil && resp.Status == http.StatusOK
	})
	ch = n.asyncPop(context.Background(), "", q, "timeout=10")
	eventually(t, 10*time.Second, "pop waiting after the restart", func() bool {
		resp, err := n.try(req{method: http.MethodGet, path: "/queue/" + q})
		return err == nil && resp.Status == 200 && object(t, resp, 200)["blocked"] == true
	})
	start := time.Now()
	tid = n.send1(t, "after", "H", q)
	o := waitPop(t, ch, 15*time.Second)
	took := time.Since(start)
	expectPop(t, o.p, []string{"after"}, []string{tid})
	if took > 2*time.Second {
		t.Errorf("after a Redis restart, provision -> waiting pop took %v", took)
	}
}

// TestLostWakeupRecoveredBySweep switches keyspace notifications off under
// a running gateway, so a push wakes nobody: the slow re-check must still
// deliver the message to the waiting pop (a lost wake-up delays a message,
// it never strands it).
func TestLostWakeupRecoveredBySweep(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.OwnRedis())
	n := startNode(t, r.URL(), testenv.WithEnv("POPBOX_RECHECK_INTERVAL=1s"))
	q := qn(t, "")
	rc := r.Client()
	defer rc.Close()
	ctx := context.Background()
	ch := n.asyncPop(ctx, "", q, "timeout=15")
	eventually(t, 5*time.Second, "pop waiting", func() bool { return n.blocked(t, q) })
	if err := rc.ConfigSet(ctx, "notify-keyspace-events", "").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tid := n.send1(t, "no wake-up for me", "H", q)
	o := waitPop(t, ch, 20*time.Second)
	took := time.Since(start)
	expectPop(t, o.p, []string{"no wake-up for me"}, []string{tid})
	t.Logf("message without a wake-up reached the waiting pop after %v (re-check interval 1s)", took)
	if took > 5*time.Second {
		t.Errorf("lost wake-up: the re-check took %v to deliver, want ~1 s", took)
	}
}
