package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

// streamTransports are the transports popbox_stream_ends_total counts.
var streamTransports = []string{gateway.TransportStream, gateway.TransportSSE, gateway.TransportWS, gateway.TransportWSMux}

// streamEnds scrapes the node's /metrics and returns
// popbox_stream_ends_total of each transport by reason, and the series of
// StreamEndReasons that are not there at all.
func streamEnds(t *testing.T, base string) (map[string]map[string]float64, []string) {
	t.Helper()
	text := "\n" + metricsText(t, base)
	ends := map[string]map[string]float64{}
	var missing []string
	for _, tr := range streamTransports {
		ends[tr] = map[string]float64{}
		for _, r := range gateway.StreamEndReasons {
			series := fmt.Sprintf(`popbox_stream_ends_total{reason=%q,transport=%q}`, r, tr)
			if !strings.Contains(text, "\n"+series+" ") {
				missing = append(missing, series)
				continue
			}
			if v := seriesValue(text, series); v != 0 {
				ends[tr][r] = v
			}
		}
	}
	return ends, missing
}

// waitEnds waits until the node counted as many ended streams of transport
// tr as want holds, then requires exactly want's reasons: a stream counted
// under another reason fails the test.
func waitEnds(t *testing.T, base, tr string, want map[string]float64) {
	t.Helper()
	var total float64
	for _, v := range want {
		total += v
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ends, _ := streamEnds(t, base)
		var got float64
		for _, v := range ends[tr] {
			got += v
		}
		if got >= total {
			if !maps.Equal(ends[tr], want) {
				t.Fatalf("%s streams ended with %v, want %v", tr, ends[tr], want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s streams ended with %v after 20 s, want %v", tr, ends[tr], want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawWS opens a WebSocket on path with a handshake written by hand over a
// plain TCP connection, and reads nothing after the handshake's answer: the
// node's pings are never answered (a WebSocket library answers pings while
// something reads). The connection is closed when the test ends.
func rawWS(t *testing.T, base, path string) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, u.Host); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake of %s answered %s", path, resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// waitOpen waits until the node counts n live connections of transport tr.
func waitOpen(t *testing.T, base, tr string, n float64) {
	t.Helper()
	series := fmt.Sprintf(`popbox_connections{transport=%q}`, tr)
	waitSeries(t, series, n, 20*time.Millisecond, func() float64 { return metricValue(t, base, series) })
}

// startEndsNode starts an in-process node with opts on its own
// redis-server and returns it with its plain port's URL.
func startEndsNode(t *testing.T, opts gateway.Options) (*testNode, string) {
	t.Helper()
	r := testenv.StartRedis(t)
	n := startTestNode(t, r.URL(), nodeSetup{opts: opts})
	return n, n.plain.URL
}

// TestStreamEndsPreinitialised: every (transport, reason) series of
// popbox_stream_ends_total is exported at 0 before any stream ended.
func TestStreamEndsPreinitialised(t *testing.T) {
	_, base := startEndsNode(t, gateway.Options{})
	ends, missing := streamEnds(t, base)
	if len(missing) > 0 {
		t.Fatalf("/metrics lacks %v", missing)
	}
	for tr, byReason := range ends {
		if len(byReason) > 0 {
			t.Errorf("%s: %v before any stream", tr, byReason)
		}
	}
}

// TestStreamEndPongTimeout: a WebSocket client that stops answering pings
// (a raw connection that never reads) is closed after the pong timeout and
// counted as pong_timeout, on the per-queue socket and on /ws; a client
// that reads (and so answers the pings) on the same node lives on.
func TestStreamEndPongTimeout(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startTestNode(t, r.URL(), nodeSetup{opts: gateway.Options{
		HeartbeatInterval: 200 * time.Millisecond, WSPongTimeout: 300 * time.Millisecond}})
	base := n.plain.URL
	good := subscribe(t, base, "ws", "pong-good", "")
	waitOpen(t, base, gateway.TransportWS, 1)
	start := time.Now()
	rawWS(t, base, "/queue/pong-raw/ws")
	rawWS(t, base, "/ws")
	waitEnds(t, base, gateway.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
	waitEnds(t, base, gateway.TransportWSMux, map[string]float64{gateway.StreamEndPongTimeout: 1})
	// One heartbeat (150 ms at least) and the pong timeout passed first.
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Fatalf("silent sockets closed after %v, before a heartbeat and the pong timeout", took)
	}
	// The client that answers its pings was not cut: it still gets messages.
	tid := provision(t, base, "pong-good", "H", "still here")
	if m := next(t, good, 10*time.Second); m.TID != tid {
		t.Fatalf("got %+v, want %s", m, tid)
	}
	if got := metricValue(t, base, `popbox_connections{transport="ws"}`); got != 1 {
		t.Fatalf("%v live per-queue sockets, want the answering one", got)
	}
	waitEnds(t, base, gateway.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
}

// TestStreamEndClientClosed: a client that closes its stream (HTTP
// stream and SSE: the request ends; WebSockets: a close frame) is counted
// as client_closed on its transport.
func TestStreamEndClientClosed(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{})
	for _, tr := range []string{gateway.TransportStream, gateway.TransportSSE} {
		c := subscribe(t, base, tr, "closed-"+tr, "")
		waitOpen(t, base, tr, 1)
		c.close()
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndClientClosed: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tr := range []string{gateway.TransportWS, gateway.TransportWSMux} {
		conn, write := dialStreamWS(t, ctx, base, tr, "closed-"+tr, "")
		if tr == gateway.TransportWSMux {
			write(map[string]any{"op": "subscribe", "queue": "closed-" + tr})
		}
		waitOpen(t, base, tr, 1)
		if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("%s: close: %v", tr, err)
		}
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndClientClosed: 1})
	}
}

// TestStreamEndFrameRate: a WebSocket client that floods the node with
// frames is closed with 1008 and counted as frame_rate.
func TestStreamEndFrameRate(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{WSFrameRate: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _ := dialStreamWS(t, ctx, base, gateway.TransportWS, "flood", "")
	defer conn.CloseNow()
	closed := make(chan error, 1)
	go func() { // reads the node's answers, and its close
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	// The burst is 1+256 frames: 400 in a row exceed it.
	for i := 0; i < 400; i++ {
		if conn.Write(ctx, websocket.MessageText, []byte(`{}`)) != nil {
			break
		}
	}
	select {
	case err := <-closed:
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many frames" {
			t.Fatalf("flood ended with %v, want 1008 too many frames", err)
		}
	case <-ctx.Done():
		t.Fatal("the flooding socket was not closed")
	}
	waitEnds(t, base, gateway.TransportWS, map[string]float64{gateway.StreamEndFrameRate: 1})
}

// TestStreamEndShutdown: the streams that a node's shutdown ends are
// counted as shutdown.
func TestStreamEndShutdown(t *testing.T) {
	t.Parallel()
	n, base := startEndsNode(t, gateway.Options{})
	for _, tr := range streamTransports {
		subscribe(t, base, tr, "sd-"+tr, "")
		waitOpen(t, base, tr, 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx) // returns once the streams ended
	for _, tr := range streamTransports {
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndShutdown: 1})
	}
}

// TestStreamEndShedAndAuthFailed: with POPBOX_REQUIRE_AUTH a /ws that
// proves nothing within the auth timeout is counted as shed (as in
// popbox_shed_connections_total); a /ws closed for three refused
// subscriptions (a forged token, on the TLS port) as auth_failed. Neither
// as closed by the client.
func TestStreamEndShedAndAuthFailed(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	guarded := startTestNode(t, r.URL(), nodeSetup{opts: gateway.Options{JWT: limitVerifier(t), RequireAuth: true,
		WSAuthTimeout: 500 * time.Millisecond}})
	if _, end := dialMuxWS(t, guarded.plain.URL, "", nil, nil); !isPolicyClose(end(10 * time.Second)) {
		t.Fatal("silent /ws not closed with 1008")
	}
	waitEnds(t, guarded.plain.URL, gateway.TransportWSMux, map[string]float64{gateway.StreamEndShed: 1})

	n := startTestNode(t, r.URL(), nodeSetup{opts: gateway.Options{JWT: limitVerifier(t)}})
	forged := limitToken(t, "another-secret-that-is-long-enough-0123")
	tlsConf := n.secure.Client().Transport.(*http.Transport).TLSClientConfig
	refused, end := dialMuxWS(t, n.secure.URL, "?access_token="+forged, nil, tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := refused.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"op":"subscribe","queue":"q%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if code, reason := end(10 * time.Second); code != websocket.StatusPolicyViolation || reason != "too many failed authentications" {
		t.Fatalf("refused /ws ended with %d %q", code, reason)
	}
	waitEnds(t, n.plain.URL, gateway.TransportWSMux, map[string]float64{gateway.StreamEndAuthFailed: 1})
}

func isPolicyClose(code websocket.StatusCode, _ string) bool {
	return code == websocket.StatusPolicyViolation
}

// TestStreamTimingSettings: POPBOX_HEARTBEAT_INTERVAL and
// POPBOX_WS_PONG_TIMEOUT reach the streams of a real `popbox serve`: with
// 1 s each, an SSE stream gets its first heartbeat within 1.25 s and a
// socket that never answers its pings is closed for pong_timeout within
// 2.25 s (with the defaults: 22.5 s and 52.5 s at the least).
func TestStreamTimingSettings(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL(), testenv.WithEnv("POPBOX_HEARTBEAT_INTERVAL=1s", "POPBOX_WS_PONG_TIMEOUT=1s"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/queue/timing/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	opened := time.Now()
	rawWS(t, g.URL, "/queue/timing/ws")
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != ": heartbeat" {
	}
	if took := time.Since(opened); sc.Err() != nil || took > 4*time.Second {
		t.Fatalf("first SSE heartbeat after %v (%v), want about 1 s", took, sc.Err())
	}
	waitEnds(t, g.URL, gateway.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
	if took := time.Since(opened); took > 10*time.Second {
		t.Fatalf("silent socket closed after %v, want about 2 s", took)
	}
}

// TestStreamEndControlTimeout: a client that sends a ping frame's header
// and then stalls in its payload makes coder/websocket give up after its
// fixed 5 s and close the socket itself; the node counts that as
// control_timeout (in a 100K run on a starved box the same happens to
// pongs), not as a client that closed.
func TestStreamEndControlTimeout(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{})
	c := rawWS(t, base, "/queue/control-stall/ws")
	waitOpen(t, base, gateway.TransportWS, 1)
	// FIN + ping; masked, 10 bytes of payload announced; mask key; 2 sent.
	if _, err := c.Write([]byte{0x89, 0x80 | 10, 1, 2, 3, 4, 'p', 'i'}); err != nil {
		t.Fatal(err)
	}
	waitEnds(t, base, gateway.TransportWS, map[string]float64{gateway.StreamEndControlTimeout: 1})
}
