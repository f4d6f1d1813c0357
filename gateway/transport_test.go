package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/internal/testenv"
)

// msg is a message as a test consumer saw it.
type msg struct {
	Payload, TID, Priority string
}

// consumer is a live subscription of one transport.
type consumer struct {
	C     chan msg
	close func()
	ack   func(tids ...string) // in-band ack (WebSocket only)
}

var transports = []string{"stream", "sse", "ws", "wsmux"}

// dialStreamWS opens the WebSocket of transport tr: queue q's own ("ws",
// query appended) or the multiplexed /ws ("wsmux"). It returns the
// connection and a frame writer that may be called concurrently.
func dialStreamWS(t *testing.T, ctx context.Context, base, tr, q, query string) (*websocket.Conn, func(v any)) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/queue/" + q + "/ws" + query
	if tr == "wsmux" {
		u = "ws" + strings.TrimPrefix(base, "http") + "/ws"
	}
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	var mu sync.Mutex
	return conn, func(v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		defer mu.Unlock()
		_ = conn.Write(ctx, websocket.MessageText, b)
	}
}

// subscribe opens a consumer of the given transport on queue q. It returns
// once the subscription is established. A query with reliable=1 makes it
// reliable, on "wsmux" too (with timeoutACK 1).
func subscribe(t *testing.T, base, transport, q, query string) *consumer {
	t.Helper()
	c := &consumer{C: make(chan msg, 1000)}
	timeoutACK := 0
	if strings.Contains(query, "reliable=1") {
		timeoutACK = 1
	}
	write, stop := openStream(t, base, transport, query, timeoutACK, func(e streamEvent) {
		if e.Kind == "msg" {
			c.C <- msg{Payload: e.Payload, TID: e.TID, Priority: e.Priority}
		}
	}, q)
	c.close = stop
	c.ack = func(tids ...string) {
		if transport == "ws" {
			write(map[string]any{"ack": tids})
		} else {
			write(map[string]any{"op": "ack", "queue": q, "transactions": tids})
		}
	}
	return c
}

func provision(t testing.TB, base, q, prio, payload string, extra ...string) string {
	t.Helper()
	body := fmt.Sprintf(`{"payload":%q,"priority":%q,"queue":[{"id":%q}]%s}`, payload, prio, q, strings.Join(extra, ""))
	status, b := postJSON(t, base+"/trans", body)
	var r struct {
		OK   bool
		Data string
	}
	if err := json.Unmarshal(b, &r); err != nil || !r.OK {
		t.Fatalf("provision: %d %s", status, b)
	}
	return r.Data
}

// postJSON posts body (JSON; none when empty) to url and returns the
// answer's status and body.
func postJSON(t testing.TB, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	status, _, b := send(t, req)
	return status, b
}

// send sends req with the default client and returns the answer's status,
// headers and body.
func send(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func next(t *testing.T, c *consumer, within time.Duration) msg {
	t.Helper()
	select {
	case m := <-c.C:
		return m
	case <-time.After(within):
		t.Fatal("no message")
		return msg{}
	}
}

func transState(t *testing.T, base, tid, q string) string {
	t.Helper()
	resp, err := http.Get(base + "/trans/" + tid + "/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ Data map[string]string }
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r.Data[q]
}

func waitState(t *testing.T, base, tid, q, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := transState(t, base, tid, q)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state of %s on %s = %q, want %q", tid, q, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTransportsPriorityOrderAcrossNodes(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	a := testenv.StartGateway(t, r.URL())
	b := testenv.StartGateway(t, r.URL())
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			q := "order-" + tr
			// Queued before the subscriber comes: H first, then L in order.
			provision(t, a.URL, q, "L", "l1")
			provision(t, a.URL, q, "L", "l2")
			provision(t, a.URL, q, "H", "h1")
			c := subscribe(t, b.URL, tr, q, "")
			var got []string
			for i := 0; i < 3; i++ {
				got = append(got, next(t, c, 5*time.Second).Payload)
			}
			if strings.Join(got, ",") != "h1,l1,l2" {
				t.Fatalf("order = %v", got)
			}
			// Provisioned on node A while subscribed on node B.
			start := time.Now()
			tid := provision(t, a.URL, q, "H", "live")
			m := next(t, c, 5*time.Second)
			if m.Payload != "live" || m.TID != tid {
				t.Fatalf("live message = %+v", m)
			}
			t.Logf("LATENCY %s node A -> node B: %v", tr, time.Since(start))
			waitState(t, a.URL, tid, q, "Delivered")
		})
	}
}

// halfCloseSubscriber opens an HTTP stream or SSE subscription on a raw TCP
// connection. Its leave function half-closes the connection (the server
// sees the client go away) and then reads until the server closes, so the
// test sees every byte the server wrote: exactly what the server's
// "nothing written is lost, nothing is written twice" rule is about.
func halfCloseSubscriber(t *testing.T, addr, transport, q string) (leave func() []string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	method, path := "POST", "/queue/"+q+"/subscribe"
	if transport == "sse" {
		method, path = "GET", "/queue/"+q+"/events"
	}
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n\r\n", method, path, addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	var tids []string
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return func() []string {
		_ = conn.(*net.TCPConn).CloseWrite()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					conn.Close()
					return tids
				}
				if transport == "stream" {
					var m struct{ Transactions []string }
					if json.Unmarshal([]byte(line), &m) == nil && len(m.Transactions) == 1 {
						tids = append(tids, m.Transactions[0])
					}
				} else if data, ok := strings.CutPrefix(line, "data: "); ok {
					var m struct{ Transaction string }
					if json.Unmarshal([]byte(data), &m) == nil {
						tids = append(tids, m.Transaction)
					}
				}
			case <-timeout:
				conn.Close()
				t.Fatal("server did not end the stream after the client left")
			}
		}
	}
}

// TestDisconnectLoop disconnects a subscriber right after a message is
// provisioned, many times: every message ends up delivered exactly once
// (to that subscriber before it left, or to a later consumer).
//
// For HTTP streaming and SSE the client half-closes, so the test sees every
// byte the server wrote. For WebSocket the client drops the connection
// abruptly: a frame the server wrote just before may die in the client's
// socket buffer (at-most-once, as with any push without acks), so the
// plain WebSocket runs check "never duplicated, nothing left behind on the
// server", and the reliable runs check "never lost".
func TestDisconnectLoop(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	const rounds = 30
	for _, tr := range []string{"stream", "sse"} {
		t.Run(tr, func(t *testing.T) {
			q := "disc-" + tr
			seen := map[string]int{}
			sent := map[string]bool{}
			for i := 0; i < rounds; i++ {
				leave := halfCloseSubscriber(t, g.Addr, tr, q)
				sent[provision(t, g.URL, q, "H", fmt.Sprint(i))] = true
				for _, tid := range leave() {
					seen[tid]++
				}
			}
			checkExactlyOnce(t, g.URL, tr, q, sent, seen)
		})
	}
	for _, tr := range []string{"ws", "wsmux"} {
		for _, reliable := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reliable=%v", tr, reliable), func(t *testing.T) {
				q := fmt.Sprintf("disc-%s-%v", tr, reliable)
				query := ""
				if reliable {
					query = "?reliable=1&timeoutACK=1"
				}
				seen := map[string]int{}
				sent := map[string]bool{}
				for i := 0; i < rounds; i++ {
					c := subscribe(t, g.URL, tr, q, query)
					sent[provision(t, g.URL, q, "H", fmt.Sprint(i))] = true
					c.close()
					for drained := false; !drained; {
						select {
						case m := <-c.C:
							seen[m.TID]++ // read but never acked when reliable
						default:
							drained = true
						}
					}
				}
				if !reliable {
					for tid, n := range seen {
						if n != 1 || !sent[tid] {
							t.Fatalf("message %s delivered %d times", tid, n)
						}
					}
					// Nothing the server did not write stays behind.
					final := subscribe(t, g.URL, tr, q, "")
					for drained := false; !drained; {
						select {
						case m := <-final.C:
							seen[m.TID]++
						case <-time.After(500 * time.Millisecond):
							drained = true
						}
					}
					lost := 0
					for tid := range sent {
						switch seen[tid] {
						case 0:
							lost++
							if st := transState(t, g.URL, tid, q); st != "Delivered" {
								t.Fatalf("message %s neither delivered nor written (state %q)", tid, st)
							}
						case 1:
						default:
							t.Fatalf("message %s delivered %d times", tid, seen[tid])
						}
					}
					t.Logf("DISCONNECT %s plain: %d of %d written into a connection the client dropped before reading", tr, lost, rounds)
					return
				}
				// Reliable: whatever was not acknowledged comes back.
				final := subscribe(t, g.URL, tr, q, "?reliable=1&timeoutACK=30")
				got := map[string]bool{}
				deadline := time.After(20 * time.Second)
				for len(got) < len(sent) {
					select {
					case m := <-final.C:
						got[m.TID] = true
						final.ack(m.TID)
					case <-deadline:
						rc := r.Client()
						ctx := context.Background()
						full := "UNSEC:" + q
						t.Logf("h=%v l=%v inflight=%v idx=%v", rc.LRange(ctx, "pb:{q:"+full+"}:h", 0, -1).Val(), rc.LRange(ctx, "pb:{q:"+full+"}:l", 0, -1).Val(),
							rc.ZRangeWithScores(ctx, "pb:{q:"+full+"}:inflight", 0, -1).Val(), rc.ZRangeWithScores(ctx, "pb:{sys}:inflight-queues", 0, -1).Val())
						rc.Close()
						t.Fatalf("reliable: %d of %d messages re-delivered", len(got), len(sent))
					}
				}
			})
		}
	}
}

func checkExactlyOnce(t *testing.T, base, tr, q string, sent map[string]bool, seen map[string]int) {
	t.Helper()
	final := subscribe(t, base, tr, q, "")
	deadline := time.After(10 * time.Second)
	for len(seen) < len(sent) {
		select {
		case m := <-final.C:
			seen[m.TID]++
		case <-deadline:
			t.Fatalf("%d of %d messages delivered; lost %d", len(seen), len(sent), len(sent)-len(seen))
		}
	}
	for tid, n := range seen {
		if n != 1 || !sent[tid] {
			t.Fatalf("message %s delivered %d times", tid, n)
		}
	}
}

func TestReliableTransports(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	for _, tr := range []string{"sse", "ws", "wsmux"} {
		t.Run(tr, func(t *testing.T) {
			q := "rel-" + tr
			c := subscribe(t, g.URL, tr, q, "?reliable=1&timeoutACK=1")
			tid := provision(t, g.URL, q, "H", "r1")
			m := next(t, c, 5*time.Second)
			if m.TID != tid {
				t.Fatalf("got %+v", m)
			}
			waitState(t, g.URL, tid, q, "Blocked")
			if tr == "sse" {
				ackHTTP(t, g.URL, q, tid)
			} else {
				c.ack(tid)
			}
			waitState(t, g.URL, tid, q, "Delivered")
		})
	}
}

func ackHTTP(t *testing.T, base, q string, tids ...string) []map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"transactions": tids})
	_, b := postJSON(t, base+"/queue/"+q+"/ack", string(body))
	var out []map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func popHTTP(t *testing.T, base, path string) (payloads, tids []string) {
	t.Helper()
	_, b := postJSON(t, base+path, "")
	var r struct{ Data, Transactions []string }
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.Data, r.Transactions
}

func TestReliablePopAckAndTimeout(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	tid := provision(t, g.URL, "rp", "H", "x")
	_, tids := popHTTP(t, g.URL, "/queue/rp/poprel?timeoutACK=1&timeout=1")
	if len(tids) != 1 || tids[0] != tid {
		t.Fatalf("poprel = %v", tids)
	}
	if st := transState(t, g.URL, tid, "rp"); st != "Blocked" {
		t.Fatalf("state = %s", st)
	}
	// Not acknowledged: back as Pending after the deadline, popped again.
	waitState(t, g.URL, tid, "rp", "Pending")
	_, tids = popHTTP(t, g.URL, "/queue/rp/poprel?timeoutACK=5&timeout=1")
	if len(tids) != 1 || tids[0] != tid {
		t.Fatalf("re-delivery = %v", tids)
	}
	res := ackHTTP(t, g.URL, "rp", tid, "00000000-0000-4000-8000-000000000000")
	if res[0]["data"] != tid || res[0]["err"] != nil || res[1]["err"] != "00000000-0000-4000-8000-000000000000/rp does not exist" {
		t.Fatalf("ack = %v", res)
	}
	waitState(t, g.URL, tid, "rp", "Delivered")
}

// TestReliableSurvivesNodeKill kills the node that served a reliable pop:
// the message comes back through the other node after the deadline.
func TestReliableSurvivesNodeKill(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	a := testenv.StartGateway(t, r.URL())
	b := testenv.StartGateway(t, r.URL())
	tid := provision(t, b.URL, "rk", "H", "survivor")
	c := subscribe(t, a.URL, "sse", "rk", "?reliable=1&timeoutACK=2")
	if m := next(t, c, 5*time.Second); m.TID != tid {
		t.Fatalf("got %+v", m)
	}
	a.Kill()
	_, tids := popHTTP(t, b.URL, "/queue/rk/pop?timeout=10")
	if len(tids) != 1 || tids[0] != tid {
		t.Fatalf("after kill -9 the message was not re-delivered: %v", tids)
	}
}

// TestCallbacks: exactly one POST per delivery, none on peek, retried
// after a 500.
func TestCallbacks(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	posts := map[string][]map[string]string{}
	failFirst := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		key := b["transaction"] + "/" + b["queue"]
		posts[key] = append(posts[key], b)
		fail := strings.Contains(r.URL.Path, "flaky") && !failFirst[key]
		failFirst[key] = true
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())

	tid := provision(t, g.URL, "cb1", "H", "with callback", fmt.Sprintf(`,"callback":%q`, srv.URL+"/ok"))
	flaky := provision(t, g.URL, "cb2", "H", "flaky callback", fmt.Sprintf(`,"callback":%q`, srv.URL+"/flaky"))
	// Peek never calls back.
	resp, err := http.Get(g.URL + "/queue/cb1/peek")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	popHTTP(t, g.URL, "/queue/cb1/pop?timeout=1")
	popHTTP(t, g.URL, "/queue/cb2/pop?timeout=1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n1, n2 := len(posts[tid+"/cb1"]), len(posts[flaky+"/cb2"])
		mu.Unlock()
		if n1 == 1 && n2 == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("callbacks: ok=%d (want 1), flaky=%d (want 2: a 500 then a retry)", n1, n2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	b := posts[tid+"/cb1"][0]
	mu.Unlock()
	if b["state"] != "Delivered" || b["queue"] != "cb1" || b["callback"] != srv.URL+"/ok" || b["timestamp"] == "" {
		t.Fatalf("callback body = %v", b)
	}
	// No late duplicates.
	time.Sleep(300 * time.Millisecond) // the scenario: nothing more may arrive
	mu.Lock()
	defer mu.Unlock()
	if len(posts[tid+"/cb1"]) != 1 || len(posts[flaky+"/cb2"]) != 2 || len(posts) != 2 {
		t.Fatalf("unexpected callbacks: %v", posts)
	}
}

// TestSlowWebSocketConsumer: a WebSocket client (per-queue, and the
// multiplexed /ws on the same stream runner) that stops reading is cut off,
// its messages stay in Redis, and another subscriber keeps its latency.
func TestSlowWebSocketConsumer(t *testing.T) {
	for _, tr := range []string{"ws", "wsmux"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			testSlowWebSocketConsumer(t, tr)
		})
	}
}

func testSlowWebSocketConsumer(t *testing.T, tr string) {
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A raw TCP client with a tiny receive buffer that never reads.
	d := net.Dialer{Control: nil}
	u := "ws://" + g.Addr + "/queue/slow/ws"
	if tr == "wsmux" {
		u = "ws://" + g.Addr + "/ws"
	}
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(4096)
			}
			return c, err
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if tr == "wsmux" {
		if err := conn.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","queue":"slow"}`)); err != nil {
			t.Fatal(err)
		}
	}
	fast := subscribe(t, g.URL, tr, "fast", "")
	big := strings.Repeat("x", 256<<10)
	for i := 0; i < 64; i++ { // 16 MiB: far more than socket buffers hold
		provision(t, g.URL, "slow", "L", big)
	}
	// The other subscriber keeps getting messages promptly.
	for i := 0; i < 5; i++ {
		start := time.Now()
		provision(t, g.URL, "fast", "H", fmt.Sprint(i))
		next(t, fast, 5*time.Second)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("fast subscriber waited %v while a slow one was stuck", d)
		}
	}
	// The slow one is disconnected after the write deadline, counted.
	deadline := time.Now().Add(40 * time.Second)
	for {
		if metricValue(t, g.URL, `popbox_slow_consumer_disconnects_total{transport="`+tr+`"}`) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow consumer was never disconnected")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Its undelivered messages are still in the queue.
	resp, err := http.Get(g.URL + "/queue/slow")
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Size int }
	_ = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info.Size < 32 {
		t.Fatalf("only %d messages left in the queue: the node buffered the rest", info.Size)
	}
	// The node's memory did not take the 16 MiB.
	if rss := metricValue(t, g.URL, "process_resident_memory_bytes"); rss > 400<<20 {
		t.Fatalf("gateway RSS %v bytes", rss)
	}
}

const eventSourcePage = `<!doctype html><html><body><script>
const es = new EventSource('/queue/browser/events');
es.onopen = () => fetch('/report?open=1');
es.addEventListener('message', (e) => {
  const m = JSON.parse(e.data);
  fetch('/report?payload=' + encodeURIComponent(m.data) + '&tid=' + m.transaction + '&id=' + e.lastEventId);
});
</script></body></html>`

// TestEventSourceInChromium: a page using EventSource in headless Chromium
// receives a provisioned message.
func TestEventSourceInChromium(t *testing.T) {
	browser := testenv.Tool(t, "POPBOX_CHROMIUM", "chromium", "/usr/bin/chromium", "chromium")
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	target, _ := url.Parse(g.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	reports := make(chan url.Values, 10)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, eventSourcePage)
		case r.URL.Path == "/report":
			reports <- r.URL.Query()
		default:
			proxy.ServeHTTP(w, r) // same origin for EventSource
		}
	}))
	defer page.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), page.URL + "/"}
	if runtime.GOOS == "linux" && os.Geteuid() == 0 {
		args = append([]string{"--no-sandbox"}, args...)
	}
	cmd := exec.CommandContext(ctx, browser, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	select {
	case v := <-reports:
		if v.Get("open") != "1" {
			t.Fatalf("first report = %v", v)
		}
	case <-ctx.Done():
		t.Fatal("the page's EventSource never opened")
	}
	tid := provision(t, g.URL, "browser", "H", "hello <browser> ✓")
	select {
	case v := <-reports:
		if v.Get("payload") != "hello <browser> ✓" || v.Get("tid") != tid || v.Get("id") != tid {
			t.Fatalf("browser got %v", v)
		}
	case <-ctx.Done():
		t.Fatal("the browser never received the message")
	}
}
