package historytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// hook is an events webhook receiver.
type hook struct {
	srv *httptest.Server

	mu      sync.Mutex
	batches [][]event
	bad     []string // problems with requests
}

func newHook(t testing.TB) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []event `json:"events"`
		}
		err := json.NewDecoder(r.Body).Decode(&body)
		h.mu.Lock()
		defer h.mu.Unlock()
		switch {
		case r.Method != http.MethodPost:
			h.bad = append(h.bad, "method "+r.Method)
		case !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json"):
			h.bad = append(h.bad, "content type "+r.Header.Get("Content-Type"))
		case err != nil:
			h.bad = append(h.bad, "body: "+err.Error())
		case len(body.Events) == 0:
			h.bad = append(h.bad, "empty batch")
		}
		h.batches = append(h.batches, body.Events)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) received() (batches [][]event, bad []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]event(nil), h.batches...), append([]string(nil), h.bad...)
}

// TestEventsWebhook: with POPBOX_EVENTS_FILTER=Delivered the webhook gets
// every Delivered event of a run (plain pops, reliable pops acked, fan-out
// to several queues) exactly once, batched, and nothing else.
func TestEventsWebhook(t *testing.T) {
	t.Parallel()
	h := newHook(t)
	r := testenv.StartRedis(t)
	n := startNode(t, r.URL(), "POPBOX_EVENTS_WEBHOOK="+h.srv.URL+"/events", "POPBOX_EVENTS_FILTER=Delivered")

	const msgs = 150
	want := map[string]string{} // tid/queue → expected transport
	for i := range msgs {
		queues := []string{"wh-plain"}
		if i%3 == 0 {
			queues = append(queues, "wh-rel") // fan-out
		}
		tid := n.Provision(t, fmt.Sprint("m", i), "H", queues...)
		want[tid+"/wh-plain"] = "longpoll"
		if i%3 == 0 {
			want[tid+"/wh-rel"] = "ack"
		}
	}
	for popped := 0; popped < msgs; {
		popped += len(n.Pop(t, "/queue/wh-plain/pop?timeout=1&max=7").Transactions)
	}
	for acked := 0; acked < (msgs+2)/3; {
		tids := n.Pop(t, "/queue/wh-rel/poprel?timeout=1&max=10&timeoutACK=60").Transactions
		b, _ := json.Marshal(map[string][]string{"transactions": tids})
		n.Must(t, http.MethodPost, "/queue/wh-rel/ack", b, http.StatusOK)
		acked += len(tids)
	}

	var batches [][]event
	total := 0
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("webhook got %d events", len(want)), func() bool {
		var bad []string
		batches, bad = h.received()
		if len(bad) > 0 {
			t.Fatalf("bad webhook requests: %v", bad)
		}
		total = 0
		for _, b := range batches {
			total += len(b)
		}
		return total >= len(want)
	}, func() string { return fmt.Sprintf("%d events in %d batches", total, len(batches)) })
	time.Sleep(1500 * time.Millisecond) // > the flush interval: late duplicates would show
	batches, _ = h.received()
	seen := map[string]int{}
	biggest := 0
	for _, b := range batches {
		biggest = max(biggest, len(b))
		for _, e := range b {
			key := e.Transaction + "/" + e.Queue
			seen[key]++
			if e.Kind != "state" || e.State != "Delivered" {
				t.Errorf("filtered webhook got %+v", e)
				continue
			}
			if tr, ok := want[key]; !ok {
				t.Errorf("unexpected Delivered event %+v", e)
			} else if e.Transport != tr || e.Node != n.name || e.Namespace != "UNSEC:" || e.Time.IsZero() {
				t.Errorf("event %+v: want transport %s, node %s, namespace UNSEC:, a time", e, tr, n.name)
			}
		}
	}
	for key := range want {
		if seen[key] != 1 {
			t.Errorf("%s: Delivered sent %d times, want once", key, seen[key])
		}
	}
	t.Logf("webhook: %d Delivered events in %d batches (largest %d)", len(want), len(batches), biggest)
	if len(batches) >= len(want) || biggest < 2 {
		t.Errorf("%d events came in %d batches (largest %d): not batched", len(want), len(batches), biggest)
	}
	if c := n.sink(t, "webhook"); c.written != float64(len(want)) || c.dropped != 0 {
		t.Errorf("webhook sink: %v, want %d written, none dropped", c, len(want))
	}
}

// TestDeadWebhook: a webhook endpoint that refuses connections or never
// answers changes nothing for clients: every request succeeds, as fast
// as on a gateway without a webhook.
func TestDeadWebhook(t *testing.T) {
	// Not parallel: it measures latency.
	hanging := testenv.HangingServer(t)
	closedPort := fmt.Sprintf("http://127.0.0.1:%d/events", testenv.FreePort(t))

	r := testenv.StartRedis(t)
	nodes := map[string]*node{
		"none":    startNode(t, r.URL()),
		"refused": startNode(t, r.URL(), "POPBOX_EVENTS_WEBHOOK="+closedPort),
		"hanging": startNode(t, r.URL(), "POPBOX_EVENTS_WEBHOOK="+hanging.URL+"/events"),
	}
	names := []string{"none", "refused", "hanging"}
	lat := map[string][]time.Duration{}
	// Interleave short runs so that load from elsewhere on the machine
	// hits every configuration alike.
	for round := range 6 {
		for _, name := range names {
			ds := nodes[name].latencies(t, "dead-"+name, 40)
			if round > 0 { // the first round warms up connections
				lat[name] = append(lat[name], ds...)
			}
		}
	}
	base := percentile(lat["none"], 50)
	for _, name := range names {
		p50, p99 := percentile(lat[name], 50), percentile(lat[name], 99)
		t.Logf("webhook %-7s: provision+pop p50 %v p99 %v", name, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
		if limit := 3*base + 20*time.Millisecond; p50 > limit {
			t.Errorf("webhook %s: p50 %v > 3×%v + 20ms", name, p50, base)
		}
	}
	// The sinks are failing meanwhile, and say so in the metrics.
	var c sinkCounters
	testenv.Eventually(t, 20*time.Second, "refused webhook sink retrying", func() bool {
		c = nodes["refused"].sink(t, "webhook")
		return c.retries > 0 && c.written == 0
	}, func() string { return c.String() })
	c = nodes["hanging"].sink(t, "webhook")
	if c.written != 0 || c.queued == 0 {
		t.Errorf("hanging webhook sink: %v, want nothing written and events waiting", c)
	}
	t.Logf("refused: %v", nodes["refused"].sink(t, "webhook"))
	t.Logf("hanging: %v", c)
}
