package gateway_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/hub/delivery"
)

// TestGoroutinesPerIdleStream holds what an idle stream costs in
// goroutines (docs/ARCHITECTURE.md, "Idle connections"): one per SSE or
// HTTP stream (the writer; internal/hangup sees the client go), two per
// WebSocket, per-queue or multiplexed (the writer and the library's
// reader). The clients are raw sockets (a WebSocket's frames written with
// gobwas/ws), which hold no goroutine in this
// process, so the count is the node's; the test is not parallel (the
// parallel tests start after it), so nothing else adds goroutines.
func TestGoroutinesPerIdleStream(t *testing.T) {
	_, base := startEndsNode(t, gateway.Options{})
	const n = 50
	for _, tc := range []struct {
		transport string
		per       int
		open      func(t *testing.T, q string) net.Conn
	}{
		{delivery.TransportSSE, 1, func(t *testing.T, q string) net.Conn {
			c, _, _ := rawRequest(t, base, "GET /queue/"+q+"/events HTTP/1.1\r\nHost: HOST\r\n\r\n", nil)
			return c
		}},
		{delivery.TransportStream, 1, func(t *testing.T, q string) net.Conn {
			c, _, _ := rawRequest(t, base, "POST /queue/"+q+"/subscribe HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n", nil)
			return c
		}},
		{delivery.TransportWS, 2, func(t *testing.T, q string) net.Conn {
			return rawWS(t, base, "/queue/"+q+"/ws")
		}},
		{delivery.TransportWSMux, 2, func(t *testing.T, q string) net.Conn {
			c := rawWS(t, base, "/ws")
			sub := []byte(`{"op":"subscribe","queue":"` + q + `"}`)
			if err := ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame(sub))); err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		before := runtime.NumGoroutine()
		conns := make([]net.Conn, n)
		for i := range n {
			conns[i] = tc.open(t, fmt.Sprintf("gr-%s-%d", tc.transport, i))
		}
		waitOpen(t, base, tc.transport, n)
		// Streams are counted open before their handshakes' goroutines
		// end; a few others (the metrics scrapes' keep-alive socket)
		// come and go.
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

// goroutinesAtMost waits until the process holds at most want goroutines
// and returns the count, or the last count after a deadline.
func goroutinesAtMost(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}
