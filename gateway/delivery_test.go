package gateway_test

import (
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
