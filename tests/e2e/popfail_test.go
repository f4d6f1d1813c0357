package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestFailedPopKeepsMessages (issue 13 item 6): a consumer's pop reaches a
// redis-server that stalls (SIGSTOP) longer than the gateway's Redis read
// timeout (read_timeout in POPBOX_REDIS_URL): the pop script reaches the
// server, which runs it once it goes on, but its reply is lost. Afterwards
// every message is received exactly once by a consumer, or is still in the
// queue with state Pending: none is left Delivered (Blocked, for the
// reliable poprel) with nobody holding it (before: all five were taken and
// marked so, and never delivered).
func TestFailedPopKeepsMessages(t *testing.T) {
	t.Parallel()
	for _, verb := range []string{"pop", "poprel"} {
		t.Run(verb, func(t *testing.T) {
			t.Parallel()
			failedPopKeepsMessages(t, verb)
		})
	}
}

// failedPopKeepsMessages is TestFailedPopKeepsMessages with POST
// /queue/{id}/<verb> (pop or the reliable poprel).
func failedPopKeepsMessages(t *testing.T, verb string) {
	r := testenv.StartRedis(t, testenv.OwnRedis())
	n := startNode(t, r.URL()+"?read_timeout=500ms&write_timeout=500ms",
		testenv.WithEnv("POPBOX_RECHECK_INTERVAL=1s"))
	q := qn(t, "")
	ctx := context.Background()
	pid := r.Pid()
	if pid == 0 {
		t.Fatal("redis-server has no pid")
	}

	const total = 5
	var tids []string
	for i := range total {
		tids = append(tids, n.send1(t, fmt.Sprint("m", i), "H", q))
	}

	// Stall Redis, then pop: the pop's round trip times out.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	before := strings.Count(n.g.Log(), "pop failed")
	// A long ack timeout: the reaper must not be what brings a reliable
	// pop's messages back within the test.
	ch := n.asyncVerb(ctx, "", q, verb, "max=10&timeout=30&timeoutACK=600")
	eventually(t, 20*time.Second, "the gateway's pop failing on the stalled Redis", func() bool {
		return strings.Count(n.g.Log(), "pop failed") > before
	})
	resume()
	t0 := time.Now()

	got := map[string]int{}
	take := func(o popOutcome) {
		if o.err != nil {
			t.Logf("pop during the stall: %v", o.err) // e.g. 503 while the gateway saw Redis down
			return
		}
		for _, tid := range o.p.Transactions {
			got[tid]++
		}
		t.Logf("%v after the stall: received %d", time.Since(t0).Round(time.Millisecond), len(o.p.Transactions))
	}
	select {
	case o := <-ch:
		take(o)
	case <-time.After(60 * time.Second):
		t.Fatal("the pop that met the stall did not answer")
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < total && time.Now().Before(deadline) {
		o := waitPopOutcome(n.asyncVerb(ctx, "", q, verb, "max=10&timeout=2&timeoutACK=600"), 30*time.Second)
		if o.err != nil && !strings.Contains(o.err.Error(), "503") {
			t.Fatalf("pop after the stall: %v", o.err)
		}
		take(o)
	}
	for _, tid := range tids {
		switch c := got[tid]; {
		case c > 1:
			t.Errorf("message %s received %d times", tid, c)
		case c == 0:
			// Not received: it must still be in the queue, Pending.
			st := object(t, n.get(t, "/trans/"+tid+"/state"), http.StatusOK)
			qi := n.queueInfo(t, "", q)
			t.Errorf("message %s never received (state %v, queue %v)", tid, st["data"], qi)
		}
	}
	if len(got) > total {
		t.Errorf("received %d distinct messages, sent %d", len(got), total)
	}
	if qi := n.queueInfo(t, "", q); fmt.Sprint(qi["size"]) != "0" && fmt.Sprint(qi["size"]) != "" {
		t.Errorf("queue after every message was received: %v", qi)
	}
}

// waitPopOutcome is waitPop that returns a failed pop instead of failing.
func waitPopOutcome(ch <-chan popOutcome, timeout time.Duration) popOutcome {
	select {
	case o := <-ch:
		return o
	case <-time.After(timeout):
		return popOutcome{err: fmt.Errorf("pop did not answer within %v", timeout)}
	}
}
