package scaletest

import (
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestGatewayCrash kills one of two gateway nodes (SIGKILL) under load.
// Subscribers use every transport in reliable mode and ack in batches (so
// that some deliveries are unacknowledged when the node dies); their
// clients reconnect to the other node. Nothing answered 200 may be lost,
// and every message whose ack the client never sent must come again (the
// in-flight record in Redis outlives the node; any node's reaper re-queues
// it after the ack deadline).
func TestGatewayCrash(t *testing.T) {
	t.Parallel()
	a, b, queues := twoNodesToCrash(t, "gc")
	o := runScenario(t, scenario{
		fault: "kill -9 gateway node", setting: "reliable subscribers (at-least-once), acks sent every 1 s",
		nodes: []*node{a, b}, queues: queues, reliable: true, timeoutACK: 3, ackDelay: time.Second,
		producers: 4, every: 20 * time.Millisecond,
		warmup: 3 * time.Second, after: 4 * time.Second, drain: 60 * time.Second,
		inject: killNode(b),
	})
	if o.row.Lost != 0 {
		t.Errorf("%d messages answered 200 were lost: %v", o.row.Lost, o.led.undelivered())
	}
	if nr := o.led.abandonedNotRedelivered(); len(nr) > 0 {
		t.Errorf("%d messages delivered but never acked were not delivered again: %v", len(nr), nr)
	}
	if o.led.abandonedCount() == 0 {
		t.Errorf("no delivery was unacknowledged at the crash: the test did not exercise re-delivery")
	}
	// Extra deliveries beyond the expected re-deliveries: acks sent to the
	// dying node whose outcome is unknown, one batch per subscriber.
	if extra := o.row.Duplicated - o.row.Expected; extra > len(queues)*16 {
		t.Errorf("%d unexpected duplicate deliveries", extra)
	}
	// Every subscriber ended up on A.
	for _, s := range o.subs {
		if n := s.node(); n != a {
			t.Errorf("%s subscriber of %s is on %s after the crash (%d sessions, last error %v)", s.kind, s.queue, n.name, s.sessions.Load(), s.lastErr.Load())
		}
	}
	checkGatewaysServe(t, a)
}

// TestGatewayCrashPlain is the same crash with plain (at-most-once)
// subscribers: a message taken from Redis by the dying node for one of its
// clients and not yet written dies with it. What can be lost is bounded by
// what that node held for its clients: at most one outbox (16 messages)
// plus the one being written per stream, per long poll its max.
func TestGatewayCrashPlain(t *testing.T) {
	t.Parallel()
	a, b, queues := twoNodesToCrash(t, "gp")
	o := runScenario(t, scenario{
		fault: "kill -9 gateway node", setting: "plain subscribers (at-most-once)",
		nodes: []*node{a, b}, queues: queues, reliable: false,
		producers: 4, every: 20 * time.Millisecond,
		warmup: 3 * time.Second, after: 3 * time.Second, drain: 30 * time.Second,
		inject: killNode(b),
	})
	onB := len(queues) / 2
	if bound := onB * 17; o.row.Lost > bound {
		t.Errorf("%d messages lost, more than what node B could hold for its %d subscribers (%d)", o.row.Lost, onB, bound)
	}
	if o.row.Duplicated != 0 {
		t.Errorf("%d duplicate deliveries in plain mode", o.row.Duplicated)
	}
	if o.row.Lost > 0 {
		t.Logf("lost (at-most-once window of the killed node): %v", o.led.undelivered())
	}
}

// twoNodesToCrash skips under -short, else starts gateway nodes A and B on a
// Redis of their own and names 20 queues starting with prefix.
func twoNodesToCrash(t *testing.T, prefix string) (a, b *node, queues []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault test under load: skipped with -short")
	}
	r := testenv.StartRedis(t, testenv.OwnRedis())
	a, b = startPair(t, r.URL())
	return a, b, queueNames(prefix, 20)
}

// killNode is the fault of the crash tests: SIGKILL node b; the clients
// reconnect to A.
func killNode(b *node) func(*testing.T) string {
	return func(*testing.T) string {
		b.Kill()
		return "clients reconnect to A"
	}
}
