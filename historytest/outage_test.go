package historytest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// eventsPerRoundTrip is what one provision (to one queue) + pop publishes:
// the provision action, Pending, the pop action and Delivered.
const eventsPerRoundTrip = 4

// sinkCounters are the events bus metrics of one sink.
type sinkCounters struct {
	written, dropped, queued     float64
	bufferFull, writeFailed      float64
	retries, failedBatches, capa float64
}

func (n *node) sink(t testing.TB, name string) sinkCounters {
	t.Helper()
	l := `sink="` + name + `"`
	return sinkCounters{
		written:       n.metric(t, "popbox_events_written_total", l),
		dropped:       n.metric(t, "popbox_events_dropped_total", l),
		bufferFull:    n.metric(t, "popbox_events_dropped_total", l, `reason="buffer_full"`),
		writeFailed:   n.metric(t, "popbox_events_dropped_total", l, `reason="write_failed"`),
		queued:        n.metric(t, "popbox_events_queue_length", l),
		capa:          n.metric(t, "popbox_events_queue_capacity", l),
		retries:       n.metric(t, "popbox_events_write_retries_total", l),
		failedBatches: n.metric(t, "popbox_events_failed_batches_total", l),
	}
}

func (c sinkCounters) String() string {
	return fmt.Sprintf("written=%v dropped=%v (buffer_full=%v write_failed=%v) queued=%v/%v retries=%v failed_batches=%v",
		c.written, c.dropped, c.bufferFull, c.writeFailed, c.queued, c.capa, c.retries, c.failedBatches)
}

// settle waits until the sink has nothing buffered and has accounted
// for (written or dropped) at least want events.
func (n *node) settle(t testing.TB, name string, want float64, timeout time.Duration) sinkCounters {
	t.Helper()
	var c sinkCounters
	waitFor(t, timeout, func() (bool, string) {
		c = n.sink(t, name)
		return c.queued == 0 && c.written+c.dropped >= want, fmt.Sprintf("sink %s: %v; want %v accounted for", name, c, want)
	})
	return c
}

// TestMongoOutage: with MongoDB stopped in the middle of a run, clients
// see no errors and no slowdown, the lost events are counted, and once
// MongoDB is back new events are stored again without a gateway restart.
// Every event published is either written or counted as dropped.
func TestMongoOutage(t *testing.T) {
	// Not parallel: it measures latency.
	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t, testenv.OwnMongo())
	n := startNode(t, r.URL(), mongoEnv(m)...)

	const warm, rounds = 20, 150
	published := 0.0
	n.latencies(t, "outage", warm)
	before := n.latencies(t, "outage", rounds)
	published += (warm + rounds) * eventsPerRoundTrip
	c := n.settle(t, "history", published, 30*time.Second)
	if c.dropped != 0 || c.written != published {
		t.Fatalf("before the outage: %v, want all %v written", c, published)
	}

	m.Stop()
	t.Logf("%s stopped", m.Kind)
	outageStart := time.Now()
	during := n.latencies(t, "outage", rounds)
	published += rounds * eventsPerRoundTrip
	// History reads fail cleanly while MongoDB is down.
	code, body, err := n.do("GET", "/queue/outage/history", "")
	if err != nil || code != 503 {
		t.Errorf("GET /queue/outage/history while MongoDB is down = %d %s %v, want 503", code, body, err)
	}
	// The failing batches exhaust their retries and are counted.
	waitFor(t, 60*time.Second, func() (bool, string) {
		c = n.sink(t, "history")
		return c.writeFailed > 0, fmt.Sprintf("no write_failed drops counted while MongoDB is down: %v", c)
	})
	t.Logf("first drops counted %v after the stop: %v", time.Since(outageStart).Round(time.Millisecond), c)
	// Requests keep succeeding at the same speed while the sink fails.
	during = append(during, n.latencies(t, "outage", rounds)...)
	published += rounds * eventsPerRoundTrip

	p50b, p50d := percentile(before, 50), percentile(during, 50)
	p99b, p99d := percentile(before, 99), percentile(during, 99)
	t.Logf("provision+pop latency with MongoDB up: p50 %v p99 %v; down: p50 %v p99 %v",
		p50b.Round(time.Microsecond), p99b.Round(time.Microsecond), p50d.Round(time.Microsecond), p99d.Round(time.Microsecond))
	if limit := 3*p50b + 20*time.Millisecond; p50d > limit {
		t.Errorf("p50 latency during the outage %v > 3×%v + 20ms", p50d, p50b)
	}

	m.Restart(t)
	t.Logf("%s restarted after %v down", m.Kind, time.Since(outageStart).Round(time.Millisecond))
	// New events are stored again, without touching the gateway.
	tid := n.provision(t, "after", []string{"outage-after"}, "")
	if got := n.pop(t, "/queue/outage-after/pop?timeout=5"); !slices.Equal(got, []string{tid}) {
		t.Fatalf("pop after restart = %v", got)
	}
	published += eventsPerRoundTrip
	back := time.Now()
	waitFor(t, 60*time.Second, func() (bool, string) {
		// provision, Pending, Delivered.
		code, b, err := n.do("GET", "/trans/"+tid+"/history", "")
		return err == nil && code == 200 && len(n.history(t, "/trans/"+tid+"/history")) == 3,
			fmt.Sprintf("history of %s after the restart: %d %s %v", tid, code, b, err)
	})
	t.Logf("events stored again %v after the restart", time.Since(back).Round(time.Millisecond))

	// Nothing is lost silently: each event is written or counted.
	c = n.settle(t, "history", published, 60*time.Second)
	t.Logf("published %v events; history sink: %v", published, c)
	if c.written+c.dropped != published {
		t.Errorf("written %v + dropped %v != published %v", c.written, c.dropped, published)
	}
	if c.dropped == 0 || c.dropped >= published {
		t.Errorf("dropped %v of %v: want some (the outage) but not all", c.dropped, published)
	}
	// What was written is really there: the queue's history has exactly
	// the written events of queue "outage" (all but the provision
	// actions, which name no queue).
	stored, _ := n.queueHistory(t, "outage", 1000)
	t.Logf("queue outage: %d events stored of %d published with a queue", len(stored), (warm+3*rounds)*(eventsPerRoundTrip-1))
	if len(stored) < (warm+rounds)*(eventsPerRoundTrip-1) {
		t.Errorf("queue outage has %d stored events, fewer than the %d written before the outage", len(stored), (warm+rounds)*(eventsPerRoundTrip-1))
	}
}
