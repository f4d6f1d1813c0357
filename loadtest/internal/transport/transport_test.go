package transport

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws/wsutil"
	"github.com/popbox/popbox/loadtest/internal/fakegw"
)

func newClient(t *testing.T, base string, sources ...netip.Addr) *Client {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDialer(sources, 5*time.Second)
	return &Client{Base: u, Dialer: d, PollTimeout: 1, HandshakeTimeout: 5 * time.Second}
}

type got struct {
	q int
	p string
}

// subscribe runs one subscriber in the background and returns its
// messages, an "opened" channel and a function that stops it and returns
// Subscribe's error.
func subscribe(t *testing.T, c *Client, kind Kind, queues ...string) (<-chan got, <-chan struct{}, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	msgs := make(chan got, 100)
	opened := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Subscribe(ctx, kind, queues, Handler{
			OnOpen:    func() { close(opened) },
			OnMessage: func(q int, p string) { msgs <- got{q, p} },
		})
	}()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return msgs, opened, stop
}

func waitMsg(t *testing.T, ch <-chan got) got {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return got{}
}

func TestEveryTransportReceives(t *testing.T) {
	gw := fakegw.New(t)
	c := newClient(t, gw.URL)
	d := NewDialer(nil, 5*time.Second)
	base, _ := url.Parse(gw.URL)
	prov := NewProvisioner([]*url.URL{base}, d, 4, 10*time.Second)
	defer prov.Close()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			q := "q-" + string(kind)
			msgs, opened, stop := subscribe(t, c, kind, q)
			<-opened
			payloads := []string{`{"t":1,"seq":1}`, "with \"quotes\", \\ and\nnewline ü", strings.Repeat("x", 5000)}
			for _, p := range payloads {
				if _, err := prov.Provision(context.Background(), []string{q}, []byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range payloads {
				if g := waitMsg(t, msgs); g.p != p || g.q != 0 {
					t.Fatalf("got %+v, want %q", g, p)
				}
			}
			if err := stop(); err != nil {
				t.Fatalf("Subscribe after cancel: %v", err)
			}
		})
	}
}

func TestMuxSeveralQueues(t *testing.T) {
	gw := fakegw.New(t)
	c := newClient(t, gw.URL)
	msgs, opened, stop := subscribe(t, c, WSMux, "a", "b", "c")
	<-opened
	gw.Push("c", "to-c")
	gw.Push("a", "to-a")
	seen := map[string]int{}
	for i := 0; i < 2; i++ {
		g := waitMsg(t, msgs)
		seen[g.p] = g.q
	}
	if seen["to-c"] != 2 || seen["to-a"] != 0 {
		t.Fatalf("queue indexes: %v", seen)
	}
	stop()
	if err := c.Subscribe(context.Background(), SSE, []string{"a", "b"}, Handler{}); err == nil {
		t.Fatal("SSE with two queues must be refused")
	}
}

func TestSourceAddresses(t *testing.T) {
	gw := fakegw.New(t)
	c := newClient(t, gw.URL, netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"))
	var stops []func() error
	for i := 0; i < 4; i++ {
		_, opened, stop := subscribe(t, c, SSE, fmt.Sprint("s", i))
		<-opened
		stops = append(stops, stop)
	}
	r := gw.Remotes()
	if r["127.0.0.2"] != 2 || r["127.0.0.3"] != 2 {
		t.Fatalf("connections by source: %v", r)
	}
	for _, s := range stops {
		s()
	}
}

func TestFailuresAndReasons(t *testing.T) {
	// a port nobody listens on
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, "http://"+addr)
	err := c.Subscribe(context.Background(), SSE, []string{"q"}, Handler{})
	if Reason(err) != "connection refused" {
		t.Fatalf("refused: %v → %q", err, Reason(err))
	}
	// a gateway that says 503
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c = newClient(t, srv.URL)
	for _, kind := range Kinds {
		opened := false
		err := c.Subscribe(context.Background(), kind, []string{"q"}, Handler{OnOpen: func() { opened = true }})
		if Reason(err) != "http 503" {
			t.Errorf("%s: %v → %q", kind, err, Reason(err))
		}
		if opened {
			t.Errorf("%s: opened on a 503", kind)
		}
	}
	// a server that hangs up mid-stream
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fmt.Fprint(w, "data: {\"data\":\"{\\\"t\\\":1,\\\"seq\\\":1}\"}\n\n")
		http.NewResponseController(w).Flush()
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	}))
	defer srv2.Close()
	c = newClient(t, srv2.URL)
	var n int
	err = c.Subscribe(context.Background(), SSE, []string{"q"}, Handler{OnMessage: func(int, string) { n++ }})
	if n != 1 || !strings.Contains(Reason(err), "EOF") {
		t.Fatalf("hang-up: %d messages, %v → %q", n, err, Reason(err))
	}

	cases := map[error]string{
		context.DeadlineExceeded:                      "timeout",
		&net.OpError{Op: "dial", Err: syscall.EMFILE}: "too many open files",
		fmt.Errorf("x: %w", syscall.EADDRNOTAVAIL):    "no free local port (EADDRNOTAVAIL)",
		io.ErrUnexpectedEOF:                           "closed by peer (EOF)",
		wsutil.ClosedError{Code: 1013}:                "websocket closed 1013",
		os.ErrDeadlineExceeded:                        "timeout",
		errors.New("dial 127.0.0.1:5 to 127.0.0.1:9"): "dial ADDR to ADDR",
	}
	for err, want := range cases {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestProblemsAreReported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context()) // the subscribe frame
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"op":"error","code":"forbidden","message":"no"}`))
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`not json`))
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"op":"message","queue":"other","data":"x"}`))
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"op":"subscribed","queue":"q"}`))
		c.Close(websocket.StatusNormalClosure, "bye")
	}))
	defer srv.Close()
	c := newClient(t, srv.URL)
	var mu sync.Mutex
	var problems []string
	_ = c.Subscribe(context.Background(), WSMux, []string{"q", "r"}, Handler{OnProblem: func(r string) {
		mu.Lock()
		problems = append(problems, r)
		mu.Unlock()
	}})
	want := []string{`error frame: "forbidden"`, "undecodable frame", "message for a queue not subscribed"}
	if fmt.Sprint(problems) != fmt.Sprint(want) {
		t.Fatalf("problems %q, want %q", problems, want)
	}
}

func TestProvisionBodyAndErrors(t *testing.T) {
	var body map[string]any
	var ctype string
	fail := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctype = r.Header.Get("Content-Type")
		_ = json.NewDecoder(r.Body).Decode(&body)
		if fail {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"errors":["undefined payload"]}`)
			return
		}
		fmt.Fprint(w, `{"ok":true,"data":"tid-1"}`)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	p := NewProvisioner([]*url.URL{u}, NewDialer(nil, time.Second), 2, 5*time.Second)
	p.ExpirationDelay = 60
	tid, err := p.Provision(context.Background(), []string{"q1", `we"ird`}, []byte(`{"t":1,"seq":2}`))
	if err != nil || tid != "tid-1" {
		t.Fatal(tid, err)
	}
	want := map[string]any{"payload": `{"t":1,"seq":2}`, "priority": "H", "expirationDelay": float64(60),
		"queue": []any{map[string]any{"id": "q1"}, map[string]any{"id": `we"ird`}}}
	if fmt.Sprint(body) != fmt.Sprint(want) || ctype != "application/json" {
		t.Fatalf("body %v (%s), want %v", body, ctype, want)
	}
	fail = true
	_, err = p.Provision(context.Background(), []string{"q"}, []byte("x"))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Body, "undefined payload") {
		t.Fatalf("error %v", err)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uo\te`, "ctl\x00\x01\x1f\t\r\n", "ünï€😀", "bad\xffutf8", "<html>&"} {
		b := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want {
			t.Errorf("%q → %s → %q", s, b, back)
		}
	}
}

func TestDecodeFrame(t *testing.T) {
	for in, want := range map[string][]string{
		`{"data":"p","transaction":"t","queue":"q","priority":"H"}`: {"p"},
		`{"ok":true,"data":["a","b"],"transactions":["1","2"]}`:     {"a", "b"},
		`{"ok":true,"data":[],"transactions":[]}`:                   {},
		`{"op":"message","queue":"q","data":"x"}`:                   {"x"},
	} {
		f, err := DecodeFrame([]byte(in))
		if err != nil || fmt.Sprint([]string(f.Data)) != fmt.Sprint(want) {
			t.Errorf("%s: %q %v", in, f.Data, err)
		}
	}
	if _, err := DecodeFrame([]byte(`{"data":5}`)); err == nil {
		t.Error("numeric data must fail")
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	frame := []byte(`{"data":"{\"t\":1712345678901234567,\"seq\":123456}","transaction":"b9311d81-3223-435a-b1ba-b8d8b519a871","queue":"lt-1a2b3c4d-0-17","priority":"H"}`)
	for b.Loop() {
		if _, err := DecodeFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProvisionBody(b *testing.B) {
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = appendJSONString(buf[:0], `{"t":1712345678901234567,"seq":123456}`)
	}
}

// TestWSLatePingKeepsSubscriber: a ping whose payload arrives 6 s after its
// header (longer than the 5 s after which coder/websocket's reader closes a
// socket by itself) is answered with its pong, and the subscriber keeps
// reading: a load-tool worker that is starved answers late instead of
// dropping the subscriber. The frames come from a server written by hand,
// which can stall inside a frame as no WebSocket library would.
func TestWSLatePingKeepsSubscriber(t *testing.T) {
	t.Parallel()
	pong := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		rw.Write([]byte{0x89, 4, 'p', 'i'}) // FIN + ping, 4 bytes announced, 2 sent
		rw.Flush()
		time.Sleep(6 * time.Second) // the stall under test, longer than coder/websocket's 5 s
		rw.Write([]byte("ng"))
		rw.Flush()
		// The client's pong: FIN + pong, masked, 4 bytes.
		var h [6]byte
		if _, err := io.ReadFull(rw, h[:]); err != nil || h[0] != 0x8A || h[1] != 0x80|4 {
			t.Errorf("after the late ping: % x, %v; want a masked pong of 4 bytes", h, err)
			return
		}
		p := make([]byte, 4)
		if _, err := io.ReadFull(rw, p); err != nil {
			t.Error(err)
			return
		}
		for i := range p {
			p[i] ^= h[2+i%4]
		}
		pong <- p
		data := []byte(`{"data":"{\"t\":1,\"seq\":1}"}`)
		rw.Write(append([]byte{0x81, byte(len(data))}, data...)) // a message after the stall
		rw.Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- newClient(t, srv.URL).Subscribe(ctx, WS, []string{"q"}, Handler{OnMessage: func(_ int, p string) { got <- p }})
	}()
	select {
	case p := <-pong:
		if string(p) != "ping" {
			t.Fatalf("pong payload %q, want the ping's", p)
		}
	case err := <-errc:
		t.Fatalf("the subscriber ended before answering the late ping: %v (%s)", err, Reason(err))
	case <-time.After(30 * time.Second):
		t.Fatal("no pong within 30 s")
	}
	select {
	case <-got:
	case err := <-errc:
		t.Fatalf("the subscriber ended after the late ping: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no message after the late ping")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Subscribe after cancel: %v, want nil (a cancelled subscription is no failure)", err)
	}
}
