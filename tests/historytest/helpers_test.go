package historytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/internal/testenv"
)

// event is an event as the history endpoints and the events webhook
// serialise it (the JSON form of events.Event).
type event struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	State       string    `json:"state"`
	Action      string    `json:"action"`
	Transaction string    `json:"transaction"`
	Queue       string    `json:"queue"`
	Namespace   string    `json:"namespace"`
	Node        string    `json:"node"`
	Callback    string    `json:"callback"`
	Count       int       `json:"count"`
	Payload     string    `json:"payload"`
	Transport   string    `json:"transport"`
	Error       string    `json:"error"`
}

// what names the event: its state or action, and queue.
func (e event) what() string {
	name := e.State
	if name == "" {
		name = e.Action
	}
	if e.Queue != "" {
		name += "@" + e.Queue
	}
	return name
}

func whats(evs []event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.what()
	}
	return out
}

// node is one gateway process seen from a client (the shared harness),
// with the node id the gateway stamps on its events.
type node struct {
	*testenv.Node
	name string
}

func startNode(t testing.TB, redisURL string, env ...string) *node {
	t.Helper()
	n := testenv.StartNode(t, redisURL, testenv.WithEnv(env...))
	return &node{Node: n, name: n.NodeName()}
}

// mongoEnv is the gateway environment that switches history on.
func mongoEnv(m *testenv.Mongo) []string {
	return []string{"POPBOX_MONGO_URI=" + m.URI, "POPBOX_MONGO_DB=" + m.DB}
}

// roundTrip provisions one message to q and pops it back: the unit of
// work of the latency and throughput measurements.
func (n *node) roundTrip(q string) error {
	ctx := context.Background()
	tid, _, err := n.TryProvision(ctx, "/trans", testenv.Message("m", "H", q), nil)
	if err != nil {
		return err
	}
	p, err := n.TryPop(ctx, "/queue/"+q+"/pop?timeout=5&max=1")
	if err != nil {
		return err
	}
	if len(p.Transactions) != 1 || p.Transactions[0] != tid {
		return fmt.Errorf("pop %s gave %v, want [%s]", q, p.Transactions, tid)
	}
	return nil
}

// history reads a history endpoint ({"ok": true, "data": [...]}).
func (n *node) history(t testing.TB, path string) []event {
	t.Helper()
	b := n.Must(t, http.MethodGet, path, nil, http.StatusOK).Body
	var r struct {
		OK   *bool            `json:"ok"`
		Data *json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.OK == nil || !*r.OK || r.Data == nil {
		t.Fatalf("GET %s: want {\"ok\":true,\"data\":[...]}, got %s", path, b)
	}
	var evs []event
	if err := json.Unmarshal(*r.Data, &evs); err != nil || evs == nil {
		t.Fatalf("GET %s: data is not a list of events (%v): %s", path, err, b)
	}
	return evs
}

// transHistory polls GET /trans/{tid}/history until it holds at least
// want events (history writes are asynchronous).
func (n *node) transHistory(t testing.TB, tid string, want int) []event {
	t.Helper()
	var evs []event
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("trans %s history has %d events", tid, want), func() bool {
		evs = n.history(t, "/trans/"+tid+"/history")
		return len(evs) >= want
	}, func() string { return fmt.Sprint(whats(evs)) })
	return evs
}

// queueHistory pages through GET /queue/{id}/history with the given page
// size and returns every event and the page count.
func (n *node) queueHistory(t testing.TB, q string, limit int) ([]event, int) {
	t.Helper()
	var all []event
	since := ""
	pages := 0
	for {
		path := "/queue/" + url.PathEscape(q) + "/history?limit=" + strconv.Itoa(limit)
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		page := n.history(t, path)
		if len(page) == 0 {
			return all, pages
		}
		pages++
		if pages > 10000 {
			t.Fatalf("paging %s does not end", q)
		}
		all = append(all, page...)
		since = page[len(page)-1].Time.Format(time.RFC3339Nano)
	}
}

// metric sums the samples of a Prometheus series whose name and labels
// match (labels given as `sink="history"`; every one must be present).
func (n *node) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	b := n.Must(t, http.MethodGet, "/metrics", nil, http.StatusOK).Body
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		sp := strings.LastIndexByte(rest, ' ')
		lbls, val := rest[:sp], rest[sp+1:]
		match := true
		for _, l := range labels {
			if !strings.Contains(lbls, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// latencies runs n provision+pop round trips on q one after the other and
// returns how long each took.
func (n *node) latencies(t testing.TB, q string, count int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, count)
	for range count {
		start := time.Now()
		if err := n.roundTrip(q); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// procCPU returns the CPU time (user + system) a process has used so
// far (0 where /proc is unavailable or pid is 0).
func procCPU(pid int) time.Duration {
	d, _ := sysinfo.Proc{}.CPUTime(pid)
	return d
}
