package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

// rawRequest opens a TCP connection to base, writes req and any extra bytes
// in one write, and reads the response head.
func rawRequest(t *testing.T, base, req string, extra []byte) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, host := dialRaw(t, base)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(append([]byte(strings.ReplaceAll(req, "HOST", host)), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

// dialRaw opens a TCP connection to the host of base, closed when the test
// ends, and returns it with the host.
func dialRaw(t *testing.T, base string) (net.Conn, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, u.Host
}

// wsHandshake is the request of a WebSocket handshake on path, for
// rawRequest.
func wsHandshake(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: HOST\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// readChunk reads one HTTP/1.1 chunk off the wire as it is framed.
func readChunk(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("chunk size line: %v", err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		t.Fatalf("chunk size line %q does not end in CRLF", line)
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(line, "\r\n"), 16, 64)
	if err != nil || strings.ToLower(line) != line {
		t.Fatalf("chunk size line %q: want lower-case hex (%v)", line, err)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("chunk of %d bytes: %v", n, err)
	}
	if string(b[n:]) != "\r\n" {
		t.Fatalf("chunk %q does not end in CRLF", b)
	}
	return string(b[:n])
}

// TestHijackedSSEWire: after its headers an SSE stream leaves net/http and
// writes its chunks itself; on the wire they are what net/http wrote (one
// chunk per event, lower-case hex sizes), the stream's end is an end event,
// the last chunk, and the connection closes.
func TestHijackedSSEWire(t *testing.T) {
	r := testenv.StartRedis(t)
	n := startContractNode(t, r.URL(), nil, nil)
	_, br, resp := rawRequest(t, n.plain, "GET /queue/wire-sse/events?reliable=1&timeoutACK=1 HTTP/1.1\r\nHost: HOST\r\n\r\n", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("status %d, headers %v, transfer encoding %v", resp.StatusCode, resp.Header, resp.TransferEncoding)
	}
	if got := readChunk(t, br); got != "retry: 2000\n: connected\n\n" {
		t.Fatalf("first chunk %q", got)
	}
	tid := provision(t, n.plain, "wire-sse", "H", "hello")
	ev := readChunk(t, br)
	if !strings.HasPrefix(ev, "id: "+tid+"\nevent: message\ndata: {") || !strings.HasSuffix(ev, "}\n\n") {
		t.Fatalf("event chunk %q", ev)
	}
	// Not acknowledged: the stream ends with the reason, then the body.
	if got := readChunk(t, br); got != "event: end\ndata: acknowledgement timed out\n\n" {
		t.Fatalf("end chunk %q", got)
	}
	if got, err := br.ReadString('\n'); got != "0\r\n" || err != nil {
		t.Fatalf("last chunk %q (%v)", got, err)
	}
	if got, err := br.ReadString('\n'); got != "\r\n" || err != nil {
		t.Fatalf("after the last chunk %q (%v)", got, err)
	}
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the body: %q, %v; want the connection closed", b, err)
	}
}

// TestHijackedStreamWire: the same for HTTP streaming (one JSON object and
// newline per chunk).
func TestHijackedStreamWire(t *testing.T) {
	r := testenv.StartRedis(t)
	n := startContractNode(t, r.URL(), nil, nil)
	_, br, resp := rawRequest(t, n.plain, "POST /queue/wire-st/subscribe HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n", nil)
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 {
		t.Fatalf("status %d, transfer encoding %v", resp.StatusCode, resp.TransferEncoding)
	}
	// The stream opens with its headers alone; the first message follows.
	tid := provision(t, n.plain, "wire-st", "H", strings.Repeat("x", 3000)) // larger than net/http's 2 KiB response buffer
	got := readChunk(t, br)
	var m struct {
		OK           bool
		Data         []string
		Transactions []string
	}
	if err := json.Unmarshal([]byte(got), &m); err != nil || !strings.HasSuffix(got, "}\n") || !m.OK ||
		len(m.Transactions) != 1 || m.Transactions[0] != tid || m.Data[0] != strings.Repeat("x", 3000) {
		t.Fatalf("message chunk %q (%v)", got, err)
	}
}

// wsClientFrame is a masked client text frame (payload < 126 bytes).
func wsClientFrame(payload string) []byte {
	mask := [4]byte{1, 2, 3, 4}
	b := []byte{0x81, 0x80 | byte(len(payload))}
	b = append(b, mask[:]...)
	for i := 0; i < len(payload); i++ {
		b = append(b, payload[i]^mask[i%4])
	}
	return b
}

// readServerFrame reads one unmasked server frame (payload < 64 KiB).
func readServerFrame(t *testing.T, br *bufio.Reader) (byte, string) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("frame header: %v", err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			t.Fatal(err)
		}
		n = int(l[0])<<8 | int(l[1])
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("frame payload: %v", err)
	}
	return h[0], string(b)
}

// TestWSFrameBehindHandshake: a client frame that arrives in the same
// packet as the WebSocket handshake is not lost when the connection is
// handed to the library with its own small buffers; the server's frames
// are whole frames.
func TestWSFrameBehindHandshake(t *testing.T) {
	r := testenv.StartRedis(t)
	n := startContractNode(t, r.URL(), nil, nil)
	req := wsHandshake("/ws")
	frames := append(wsClientFrame(`{"op":"subscribe","queue":"wire-a"}`), wsClientFrame(`{"op":"subscribe","queue":"wire-b"}`)...)
	_, br, resp := rawRequest(t, n.plain, req, frames)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, q := range []string{"wire-a", "wire-b"} {
		op, got := readServerFrame(t, br)
		if want := fmt.Sprintf(`{"op":"subscribed","queue":%q}`, q); op != 0x81 || got != want {
			t.Fatalf("frame %#x %q, want %q", op, got, want)
		}
	}
	big := strings.Repeat("y", 1000) // several times the library's write buffer
	tid := provision(t, n.plain, "wire-b", "H", big)
	op, got := readServerFrame(t, br)
	var m struct{ Op, Queue, Data, Transaction string }
	if err := json.Unmarshal([]byte(got), &m); err != nil || op != 0x81 || m.Op != "message" || m.Queue != "wire-b" || m.Transaction != tid || m.Data != big {
		t.Fatalf("frame %#x %q (%v)", op, got, err)
	}
}

// TestDetachedStreamKeepsConnSlot: a stream that outlived its handler
// still holds its place under MaxConnections, and gives it back when the
// client goes.
func TestDetachedStreamKeepsConnSlot(t *testing.T) {
	r := testenv.StartRedis(t)
	for _, path := range []string{"/queue/slot/events", "/queue/slot/ws"} {
		t.Run(path, func(t *testing.T) {
			n := startContractNode(t, r.URL(), nil, func(o *gateway.Options) { o.MaxConnections = 1 })
			req := "GET " + path + " HTTP/1.1\r\nHost: HOST\r\n\r\n"
			if strings.HasSuffix(path, "/ws") {
				req = wsHandshake(path)
			}
			conn, _, resp := rawRequest(t, n.plain, req, nil)
			if resp.StatusCode != 200 && resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", resp.StatusCode)
			}
			get := func() int {
				resp, err := n.plainClient.Get(n.plain + "/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := get(); code != http.StatusServiceUnavailable {
				t.Fatalf("with the stream open: %d, want 503", code)
			}
			conn.Close()
			for deadline := time.Now().Add(10 * time.Second); get() != 200; {
				if time.Now().After(deadline) {
					t.Fatal("the slot was not given back after the client left")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestReadTimeoutCutsSlowBody: the body must arrive within the read
// timeout (408), while a long poll outliving it is answered normally.
func TestReadTimeoutCutsSlowBody(t *testing.T) {
	n := startTestNode(t, testenv.StartRedis(t).URL(), nodeSetup{opts: gateway.Options{Node: "bounds",
		Bounds: gateway.Bounds{ReadTimeout: 300 * time.Millisecond}}})
	base := n.plain.URL
	poll := make(chan string, 1)
	go func() {
		resp, err := http.Post(base+"/queue/slow/pop?timeout=20", "", nil)
		if err != nil {
			poll <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- string(b)
	}()

	start := time.Now()
	// Nothing more than the body's first byte is sent: the answer comes
	// when the deadline passes.
	_, _, resp := rawRequest(t, base, "POST /trans HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", nil)
	if resp.Proto != "HTTP/1.1" || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body answered %s %s", resp.Proto, resp.Status)
	}
	rest, _ := io.ReadAll(resp.Body) // the connection is closed after it
	if !strings.Contains(string(rest), `request body not received within 300ms`) {
		t.Fatalf("408 body: %q", rest)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("cut after %v, before the read timeout", took)
	}
	// The long poll started before the slow body outlived it.
	tid := provision(t, base, "slow", "H", "late")
	got := <-poll
	if !strings.Contains(got, tid) {
		t.Fatalf("long poll past the read timeout answered %q", got)
	}
}
