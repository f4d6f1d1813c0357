package historytest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
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
	testenv.Eventually(t, timeout, fmt.Sprintf("sink %s: nothing queued, %v accounted for", name, want), func() bool {
		c = n.sink(t, name)
		return c.queued == 0 && c.written+c.dropped >= want
	}, func() string { return c.String() })
	return c
}

// TestMongoOutage: with MongoDB stopped in the middle of a run, clients
// see no errors and no slowdown. The history sink retries the batch in
// hand and buffers what follows (20000 events); beyond that events are
// dropped and counted. Once MongoDB is back the buffered events and new
// ones are stored without a gateway restart, and every event published is
// either written or counted as dropped.
func TestMongoOutage(t *testing.T) {
	// Not parallel: it measures latency.
	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t, testenv.OwnMongo())
	// A small buffer keeps the backlog after the restart short on a busy
	// test machine; the behaviour is the same at the default 20,000.
	n := startNode(t, r.URL(), append(mongoEnv(m), "POPBOX_HISTORY_BUFFER=3000")...)

	const warm, rounds = 20, 150
	published := 0.0
	n.latencies(t, "outage", warm)
	before := n.latencies(t, "outage", rounds)
	published += (warm + rounds) * eventsPerRoundTrip
	c := n.settle(t, "history", published, 30*time.Second)
	if c.dropped != 0 || c.written != published {
		t.Fatalf("before the outage: %v, want all %v written", c, published)
	}
	writtenBefore := c.written
	buffer := c.capa

	m.Stop()
	t.Logf("%s stopped", m.Kind)
	outageStart := time.Now()
	during := n.latencies(t, "outage", rounds)
	published += rounds * eventsPerRoundTrip
	// History reads fail cleanly while MongoDB is down.
	resp, err := n.DoJSON(context.Background(), http.MethodGet, "/queue/outage/history", nil)
	if err != nil || resp.Status != http.StatusServiceUnavailable || !strings.Contains(string(resp.Body), "history unavailable") {
		t.Errorf("GET /queue/outage/history while MongoDB is down = %s %v, want 503 history unavailable", resp, err)
	}
	// The sink retries and buffers; nothing is lost yet.
	testenv.Eventually(t, 30*time.Second, "history sink retrying while MongoDB is down", func() bool {
		c = n.sink(t, "history")
		return c.retries > 0 && c.queued > 0
	}, func() string { return c.String() })
	if c.dropped != 0 {
		t.Errorf("dropped with room in the buffer: %v", c)
	}
	t.Logf("%v into the outage: %v", time.Since(outageStart).Round(time.Millisecond), c)

	// Overflow the buffer: fan-outs to 1000 queues publish 1001 events
	// each (the provision action and one Pending per queue).
	const fanQueues = 1000
	var fan []string
	for i := range fanQueues {
		fan = append(fan, fmt.Sprint("outage-fan-", i))
	}
	fanouts := int(buffer)/fanQueues + 2
	for range fanouts {
		n.Provision(t, "fan", "H", fan...)
	}
	published += float64(fanouts * (fanQueues + 1))
	testenv.Eventually(t, 10*time.Second, "buffer_full drops with the buffer overflowing", func() bool {
		c = n.sink(t, "history")
		return c.bufferFull > 0
	}, func() string { return c.String() })
	// Requests keep succeeding at the same speed with the sink failing and
	// its buffer full.
	during = append(during, n.latencies(t, "outage", rounds)...)
	published += rounds * eventsPerRoundTrip
	c = n.sink(t, "history")
	t.Logf("%v into the outage, %v events published since it began: %v", time.Since(outageStart).Round(time.Millisecond),
		published-writtenBefore, c)
	if c.queued != buffer || c.writeFailed != 0 {
		t.Errorf("want a full buffer (%v) and no write_failed drops: %v", buffer, c)
	}
	// At most the buffer and the batch in hand are kept.
	if kept := published - writtenBefore - c.dropped; kept > buffer+500 || kept < buffer {
		t.Errorf("%v events kept during the outage, want between %v and %v", kept, buffer, buffer+500)
	}

	p50b, p50d := percentile(before, 50), percentile(during, 50)
	p99b, p99d := percentile(before, 99), percentile(during, 99)
	t.Logf("provision+pop latency with MongoDB up: p50 %v p99 %v; down: p50 %v p99 %v",
		p50b.Round(time.Microsecond), p99b.Round(time.Microsecond), p50d.Round(time.Microsecond), p99d.Round(time.Microsecond))
	if limit := 3*p50b + 20*time.Millisecond; p50d > limit {
		t.Errorf("p50 latency during the outage %v > 3×%v + 20ms", p50d, p50b)
	}

	m.Restart(t)
	t.Logf("%s restarted after %v down", m.Kind, time.Since(outageStart).Round(time.Millisecond))
	// The buffered events are written, oldest first, then new ones,
	// without touching the gateway. New events that arrive while the
	// buffer is still full are dropped and counted (the bound at work), so
	// the new transaction is provisioned once the backlog is being written
	// and there is room for its events.
	testenv.Eventually(t, 60*time.Second, "history sink writing its backlog after the restart", func() bool {
		c = n.sink(t, "history")
		return c.written > writtenBefore && c.queued+eventsPerRoundTrip <= c.capa
	}, func() string { return c.String() })
	tid := n.Provision(t, "after", "H", "outage-after")
	if got := n.Pop(t, "/queue/outage-after/pop?timeout=5").Transactions; !slices.Equal(got, []string{tid}) {
		t.Fatalf("pop after restart = %v", got)
	}
	published += eventsPerRoundTrip
	back := time.Now()
	var last testenv.Response
	var lastErr error
	testenv.Eventually(t, 60*time.Second, "history of "+tid+" after the restart", func() bool {
		// provision, Pending, Delivered.
		last, lastErr = n.DoJSON(context.Background(), http.MethodGet, "/trans/"+tid+"/history", nil)
		return lastErr == nil && last.Status == http.StatusOK && len(n.history(t, "/trans/"+tid+"/history")) == 3
	}, func() string { return fmt.Sprint(last, lastErr) })
	t.Logf("events stored again %v after the restart", time.Since(back).Round(time.Millisecond))

	// Nothing is lost silently: each event is written or counted, and the
	// log says so, at a rate limit.
	c = n.settle(t, "history", published, 60*time.Second)
	t.Logf("published %v events; history sink: %v", published, c)
	if c.written+c.dropped != published {
		t.Errorf("written %v + dropped %v != published %v", c.written, c.dropped, published)
	}
	var failed, dropped, again int
	for _, line := range strings.Split(n.Log(), "\n") {
		if !strings.Contains(line, "sink=history") {
			continue
		}
		switch {
		case strings.Contains(line, `msg="events sink write failed"`):
			failed++
		case strings.Contains(line, `msg="events dropped"`):
			dropped++
		case strings.Contains(line, `msg="events sink writing again"`):
			again++
		}
	}
	if failed != 1 || dropped < 1 || dropped > 3 || again != 1 {
		t.Errorf("gateway log: %d 'write failed' (want 1), %d 'events dropped' (want 1 to 3), %d 'writing again' (want 1) lines for the history sink:\n%s",
			failed, dropped, again, n.Log())
	}
	// The round trips before the buffer filled are all stored, in order.
	stored, _ := n.queueHistory(t, "outage", 1000)
	wantStored := (warm + 2*rounds) * (eventsPerRoundTrip - 1) // the provision actions name no queue
	if len(stored) < wantStored {
		t.Errorf("queue outage has %d stored events, want at least the %d published before the buffer filled", len(stored), wantStored)
	}
	for i := 1; i < len(stored); i++ {
		if stored[i].Time.Before(stored[i-1].Time) {
			t.Fatalf("queue history out of order at %d: %v after %v", i, stored[i].Time, stored[i-1].Time)
		}
	}
}
