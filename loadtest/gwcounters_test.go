package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestCapacityGatewayCounters: a small capacity run against a real
// gateway fills the result with the gateway's counters: the stream a
// client closed before the run is counted as client_closed, nothing of
// the run itself ended, and the summary and the JSON carry them.
func TestCapacityGatewayCounters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and a gateway")
	}
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	// One SSE stream opened and closed by its client before the run.
	ctx, cancel := context.WithCancel(testCtx(t))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/queue/before/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	testenv.Eventually(t, 10*time.Second, "the closed SSE stream counted", func() bool {
		gc := gatewayCounters(testCtx(t), []*url.URL{mustURL(t, g.URL)}, 1)
		return gc.StreamEnds["client_closed"] == 1
	})

	res := run(t, "capacity", "--target", g.URL, "--conns", "20", "--mix", allKinds,
		"--duration", "1s", "--idle-window", "200ms", "--verify-timeout", "10s", "--poll-timeout", "1")
	if len(res.Problems) > 0 || res.Verify.Verified != 20 {
		t.Fatalf("problems %v, verify %+v", res.Problems, res.Verify)
	}
	gc := res.GwCounters
	if gc == nil || len(gc.Nodes) != 1 || gc.Expected != 1 || gc.Error != "" {
		t.Fatalf("gateway counters %+v", gc)
	}
	var total int64
	for _, n := range gc.StreamEnds {
		total += n
	}
	if total != 1 || gc.ByTransport["sse"]["client_closed"] != 1 || gc.Rejected != 0 {
		t.Fatalf("stream ends %v (by transport %v), rejected %d: want the one SSE stream closed before the run",
			gc.StreamEnds, gc.ByTransport, gc.Rejected)
	}
	// Every transport and reason is there, at zero or more.
	for _, tr := range []string{"stream", "sse", "ws", "wsmux"} {
		for _, reason := range []string{"client_closed", "pong_timeout", "heartbeat_failed", "slow_consumer", "shutdown"} {
			if _, ok := gc.ByTransport[tr][reason]; !ok {
				t.Errorf("no %s/%s in %v", tr, reason, gc.ByTransport)
			}
		}
	}
	if _, ok := gc.Shed["ws_silent"]; !ok {
		t.Errorf("shed reasons %v", gc.Shed)
	}
	var sum bytes.Buffer
	res.printSummary(&sum)
	if !strings.Contains(sum.String(), "gateway counters: 1 of 1 gateway process(es) read; streams ended: client_closed 1; rejected 0, shed: none") {
		t.Fatalf("summary:\n%s", sum.String())
	}
}

// TestGatewayCountersSharedPort: two processes behind one port (as with
// SO_REUSEPORT, connections reach either at random) are both read, each
// once, their node name and metrics taken on the same connection.
func TestGatewayCountersSharedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*chanListener{newChanListener(ln.Addr()), newChanListener(ln.Addr())}
	var wg sync.WaitGroup
	var servers []*http.Server
	for i, l := range nodes {
		name := fmt.Sprintf("node-%d", i)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, `{"node":%q}`, name) })
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "# TYPE popbox_stream_ends_total counter\n"+
				"popbox_stream_ends_total{reason=\"pong_timeout\",transport=\"ws\"} %d\n"+
				"popbox_stream_ends_total{reason=\"client_closed\",transport=\"sse\"} 1\n"+
				"# TYPE popbox_rejected_connections_total counter\npopbox_rejected_connections_total %d\n"+
				"# TYPE popbox_shed_connections_total counter\npopbox_shed_connections_total{reason=\"idle\"} 2\n"+
				"# TYPE popbox_connections_closed_before_request_total counter\npopbox_connections_closed_before_request_total 3\n", 10*(i+1), i)
		})
		srv := &http.Server{Handler: mux}
		servers = append(servers, srv)
		wg.Go(func() { _ = srv.Serve(l) })
	}
	wg.Go(func() { // the kernel's part: each new connection to one of them, by turns
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				for _, l := range nodes {
					l.Close()
				}
				return
			}
			select {
			case nodes[i%2].conns <- c:
			case <-nodes[i%2].done:
				c.Close()
			}
		}
	})
	defer func() {
		ln.Close()
		for _, s := range servers {
			s.Close()
		}
		wg.Wait()
	}()
	gc := gatewayCounters(testCtx(t), []*url.URL{mustURL(t, "http://"+ln.Addr().String())}, 2)
	if len(gc.Nodes) != 2 || gc.Error != "" || gc.StreamEnds["pong_timeout"] != 30 || gc.StreamEnds["client_closed"] != 2 ||
		gc.ByTransport["ws"]["pong_timeout"] != 30 || gc.Rejected != 1 || gc.Shed["idle"] != 4 || gc.Unanswered != 6 {
		t.Fatalf("counters %+v", gc)
	}
	if want := "2 of 2 gateway process(es) read; streams ended: pong_timeout 30, client_closed 2; rejected 1, shed: idle 4, closed before a request 6"; gc.text() != want {
		t.Fatalf("text %q, want %q", gc.text(), want)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// chanListener is a net.Listener fed with connections accepted elsewhere.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *chanListener) Addr() net.Addr { return l.addr }

// TestCapacity100kRowNamesTheGatewaysEnds: when the 100K run dropped or
// failed connections, its row of the targets table and its capacity table
// say why the gateways ended streams.
func TestCapacity100kRowNamesTheGatewaysEnds(t *testing.T) {
	r := &Result{Scenario: "capacity", Subscribers: 100000, Options: &Options{},
		Conns:   ConnStats{Attempted: 100000, Open: 99450, Failed: 550, Dropped: 2000},
		Verify:  &VerifyStats{Expected: 100000, Verified: 97450},
		Gateway: &GatewayStats{PIDs: []int{1, 2, 3, 4, 5, 6}},
		GwCounters: &GatewayCounters{Nodes: []string{"a", "b", "c", "d", "e", "f"}, Expected: 6, Rejected: 550, Unanswered: 1200,
			StreamEnds: map[string]int64{"pong_timeout": 1500, "client_closed": 500, "shutdown": 0}, Shed: map[string]int64{"idle": 0}}}
	doc := renderBench([]*suiteData{{meta: SuiteMeta{Mode: "full"}, results: map[string]*Result{"capacity-100k": r}, cases: map[string]CaseMeta{}}})
	for _, want := range []string{
		"550 failed, 2000 dropped, 97,450 of 100,000 messages delivered (one run); the gateways ended streams: pong_timeout 1,500, client_closed 500; rejected 550; closed before a request 1,200 | missed |",
		"| the gateways' counters at the end (popbox_stream_ends_total by reason, rejected, shed, closed before a request) | 6 of 6 gateway process(es) read; streams ended: pong_timeout 1,500, client_closed 500; rejected 550, shed: none, closed before a request 1,200 |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the document lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(doc)
	}
}
