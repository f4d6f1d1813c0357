package gateway_test

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/hub/delivery"
)

// TestGoroutinesPerIdleStream holds what an idle stream costs in
// goroutines (docs/ARCHITECTURE.md, "Idle connections"): none per SSE or
// HTTP stream (a stream is served by a goroutine only while an event is
// due; internal/hangup sees the client go), one per WebSocket, per-queue
// or multiplexed (its reader). The clients are raw sockets (a WebSocket's frames written with
// gobwas/ws), which hold no goroutine in this process, and only the
// goroutines that serve connections are counted (connGoroutines).
func TestGoroutinesPerIdleStream(t *testing.T) {
	_, base := startEndsNode(t, gateway.Options{})
	const n = 50
	for _, tc := range []struct {
		transport string
		per       int
		open      func(t *testing.T, q string) net.Conn
	}{
		{delivery.TransportSSE, 0, func(t *testing.T, q string) net.Conn {
			c, _, _ := rawRequest(t, base, "GET /queue/"+q+"/events HTTP/1.1\r\nHost: HOST\r\n\r\n", nil)
			return c
		}},
		{delivery.TransportStream, 0, func(t *testing.T, q string) net.Conn {
			c, _, _ := rawRequest(t, base, "POST /queue/"+q+"/subscribe HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n", nil)
			return c
		}},
		{delivery.TransportWS, 1, func(t *testing.T, q string) net.Conn {
			return rawWS(t, base, "/queue/"+q+"/ws")
		}},
		{delivery.TransportWSMux, 1, func(t *testing.T, q string) net.Conn {
			c := rawWS(t, base, "/ws")
			sub := []byte(`{"op":"subscribe","queue":"` + q + `"}`)
			if err := ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame(sub))); err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		before := connGoroutines()
		conns := make([]net.Conn, n)
		for i := range n {
			conns[i] = tc.open(t, fmt.Sprintf("gr-%s-%d", tc.transport, i))
		}
		waitOpen(t, base, tc.transport, n)
		// Streams are counted open before their handshakes' goroutines
		// end; the metrics scrapes' keep-alive socket comes and goes.
		const slack = 10
		got := goroutinesAtMost(t, before+tc.per*n+slack) - before
		if got > tc.per*n+slack {
			t.Errorf("%s: %d idle streams hold %d goroutines, want at most %d per stream (+%d)", tc.transport, n, got, tc.per, slack)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		waitOpen(t, base, tc.transport, 0)
	}
}

// goroutinesAtMost waits until at most want goroutines serve connections
// (connGoroutines) and returns their count, or the last count after a
// deadline.
func goroutinesAtMost(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := connGoroutines()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connGoroutines counts the goroutines that serve client connections: in
// the gateway package, in coder/websocket or in net/http's per-connection
// serving. The node's other goroutines (the hub and its jobs, which start
// on their own schedule on a loaded machine) are not counted.
func connGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/popbox/popbox/gateway.") || strings.Contains(g, "github.com/coder/websocket.") ||
			strings.Contains(g, "net/http.(*conn).serve") {
			count++
		}
	}
	return count
}
