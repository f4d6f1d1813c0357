package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/testenv"
)

// streamTransports are the transports popbox_stream_ends_total counts.
var streamTransports = []string{delivery.TransportStream, delivery.TransportSSE, delivery.TransportWS, delivery.TransportWSMux}

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
	c, _, resp := rawRequest(t, base, wsHandshake(path), nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake of %s answered %s", path, resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// openSSE opens queue q's SSE stream, which lives as long as ctx; its body
// is closed when the test ends.
func openSSE(t *testing.T, ctx context.Context, base, q string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/queue/"+q+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
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
	waitOpen(t, base, delivery.TransportWS, 1)
	start := time.Now()
	rawWS(t, base, "/queue/pong-raw/ws")
	rawWS(t, base, "/ws")
	waitEnds(t, base, delivery.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
	waitEnds(t, base, delivery.TransportWSMux, map[string]float64{gateway.StreamEndPongTimeout: 1})
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
	waitEnds(t, base, delivery.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
}

// TestStreamEndClientClosed: a client that closes its stream (HTTP
// stream and SSE: the request ends; WebSockets: a close frame) is counted
// as client_closed on its transport.
func TestStreamEndClientClosed(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{})
	for _, tr := range []string{delivery.TransportStream, delivery.TransportSSE} {
		c := subscribe(t, base, tr, "closed-"+tr, "")
		waitOpen(t, base, tr, 1)
		c.close()
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndClientClosed: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tr := range []string{delivery.TransportWS, delivery.TransportWSMux} {
		conn, write := dialStreamWS(t, ctx, base, tr, "closed-"+tr, "")
		if tr == delivery.TransportWSMux {
			write(map[string]any{"op": "subscribe", "queue": "closed-" + tr})
		}
		waitOpen(t, base, tr, 1)
		if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("%s: close: %v", tr, err)
		}
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndClientClosed: 1})
	}
}

// TestStreamEndClientClosedUnwatched: where a socket cannot be watched for
// the client going away (internal/hangup: not Linux, or a connection that
// is not a socket, as here behind a listener that hides it), a reader
// goroutine per stream sees the client go instead.
func TestStreamEndClientClosedUnwatched(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startTestNode(t, r.URL(), nodeSetup{listener: func(l net.Listener) net.Listener { return opaqueListener{l} }})
	base := n.plain.URL
	for _, tr := range []string{delivery.TransportStream, delivery.TransportSSE} {
		c := subscribe(t, base, tr, "unwatched-"+tr, "")
		waitOpen(t, base, tr, 1)
		c.close()
		waitEnds(t, base, tr, map[string]float64{gateway.StreamEndClientClosed: 1})
	}
}

// opaqueListener accepts connections that are net.Conn and nothing more
// (no SyscallConn, no NetConn).
type opaqueListener struct{ net.Listener }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// TestStreamEndFrameRate: a WebSocket client that floods the node with
// frames is closed with 1008 and counted as frame_rate.
func TestStreamEndFrameRate(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{WSFrameRate: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _ := dialStreamWS(t, ctx, base, delivery.TransportWS, "flood", "")
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
	waitEnds(t, base, delivery.TransportWS, map[string]float64{gateway.StreamEndFrameRate: 1})
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
	waitEnds(t, guarded.plain.URL, delivery.TransportWSMux, map[string]float64{gateway.StreamEndShed: 1})

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
	waitEnds(t, n.plain.URL, delivery.TransportWSMux, map[string]float64{gateway.StreamEndAuthFailed: 1})
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
	resp := openSSE(t, ctx, g.URL, "timing")
	opened := time.Now()
	rawWS(t, g.URL, "/queue/timing/ws")
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != ": heartbeat" {
	}
	if took := time.Since(opened); sc.Err() != nil || took > 4*time.Second {
		t.Fatalf("first SSE heartbeat after %v (%v), want about 1 s", took, sc.Err())
	}
	waitEnds(t, g.URL, delivery.TransportWS, map[string]float64{gateway.StreamEndPongTimeout: 1})
	if took := time.Since(opened); took > 10*time.Second {
		t.Fatalf("silent socket closed after %v, want about 2 s", took)
	}
}

// TestStreamEndControlTimeout: a client that sends a ping frame's header
// and then stalls in its payload makes coder/websocket give up after its
// fixed 5 s and close the socket itself; the node counts that as
// control_timeout, not as a client that closed.
func TestStreamEndControlTimeout(t *testing.T) {
	t.Parallel()
	_, base := startEndsNode(t, gateway.Options{})
	c := rawWS(t, base, "/queue/control-stall/ws")
	waitOpen(t, base, delivery.TransportWS, 1)
	// FIN + ping; masked, 10 bytes of payload announced; mask key; 2 sent.
	if _, err := c.Write([]byte{0x89, 0x80 | 10, 1, 2, 3, 4, 'p', 'i'}); err != nil {
		t.Fatal(err)
	}
	waitEnds(t, base, delivery.TransportWS, map[string]float64{gateway.StreamEndControlTimeout: 1})
}

// streamEvent is what a test client saw on a stream: a message, the end of
// one subscription of a multiplexed socket (an error frame), or the end of
// the connection with what the server said about it.
type streamEvent struct {
	Kind     string // "msg", "suberror", "end"
	Queue    string
	TID      string
	Payload  string
	Priority string
	Text     string // error frame text, SSE end data, close code and reason, or the last stream line
	At       time.Time
}

// openStream opens a stream of transport tr ("stream", "sse", "ws",
// "wsmux") on the given queues (several only for "wsmux"), hands every
// event it reads to emit in order, and returns once the stream is
// established. query is appended to the per-queue URL; on "wsmux" reliable
// and timeoutACK go into the subscribe frames. It returns the WebSocket
// frame writer (nil on HTTP) and stop, which ends the stream and waits for
// its reader; the test's cleanup stops it too.
func openStream(t *testing.T, base, tr, query string, timeoutACK int, emit func(streamEvent), queues ...string) (write func(v any), stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	q := queues[0]
	switch tr {
	case "stream", "sse":
		method, path := http.MethodPost, "/queue/"+q+"/subscribe"
		if timeoutACK > 0 {
			path = "/queue/" + q + "/subscriberel"
		}
		if tr == "sse" {
			method, path = http.MethodGet, "/queue/"+q+"/events"
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			close(done)
			t.Fatalf("open %s: %v %v", tr, resp, err)
		}
		go func() {
			defer close(done)
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 2<<20)
			last, event := "", ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case tr == "stream" && strings.HasPrefix(line, "{"):
					var m struct {
						OK                 bool
						Data, Transactions []string
					}
					if json.Unmarshal([]byte(line), &m) == nil && len(m.Transactions) == 1 {
						e := streamEvent{Kind: "msg", Queue: q, TID: m.Transactions[0]}
						if len(m.Data) == 1 {
							e.Payload = m.Data[0]
						}
						emit(e)
					} else {
						last = line
					}
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					data := strings.TrimPrefix(line, "data: ")
					if event == "end" {
						last = data
						continue
					}
					var m struct{ Data, Transaction, Priority string }
					if json.Unmarshal([]byte(data), &m) == nil {
						emit(streamEvent{Kind: "msg", Queue: q, TID: m.Transaction, Payload: m.Data, Priority: m.Priority})
					}
				}
			}
			emit(streamEvent{Kind: "end", Text: last})
		}()
	case "ws", "wsmux":
		var conn *websocket.Conn
		conn, write = dialStreamWS(t, ctx, base, tr, q, query)
		subscribed := make(chan struct{}, len(queues))
		go func() {
			defer close(done)
			defer conn.CloseNow()
			for {
				_, data, err := conn.Read(ctx)
				if err != nil {
					var ce websocket.CloseError
					text := err.Error()
					if errors.As(err, &ce) {
						text = ce.Code.String() + " " + ce.Reason
					}
					emit(streamEvent{Kind: "end", Text: text})
					return
				}
				var m struct{ Op, Queue, Data, Transaction, Priority, Error string }
				if json.Unmarshal(data, &m) != nil {
					continue
				}
				switch {
				case m.Op == "subscribed":
					subscribed <- struct{}{}
				case m.Op == "error":
					emit(streamEvent{Kind: "suberror", Queue: m.Queue, Text: m.Error})
				case m.Transaction != "":
					if m.Queue == "" {
						m.Queue = q
					}
					emit(streamEvent{Kind: "msg", Queue: m.Queue, TID: m.Transaction, Payload: m.Data, Priority: m.Priority})
				}
			}
		}()
		if tr == "wsmux" {
			for _, q := range queues {
				write(map[string]any{"op": "subscribe", "queue": q, "reliable": timeoutACK > 0, "timeoutACK": timeoutACK})
			}
			for range queues {
				select {
				case <-subscribed:
				case <-time.After(10 * time.Second):
					t.Fatalf("open %s: subscription not confirmed", tr)
				}
			}
		}
	}
	return write, stop
}

// watcher is a raw stream client that records every event in order.
type watcher struct {
	Events chan streamEvent
	write  func(v any) // WebSocket frames
}

// watch opens a stream of transport tr on the given queues, as openStream
// does, and records its events.
func watch(t *testing.T, base, tr, query string, timeoutACK int, queues ...string) *watcher {
	t.Helper()
	w := &watcher{Events: make(chan streamEvent, 1000)}
	w.write, _ = openStream(t, base, tr, query, timeoutACK, func(e streamEvent) { e.At = time.Now(); w.Events <- e }, queues...)
	return w
}

// nextEvent waits for the watcher's next event.
func (w *watcher) nextEvent(t *testing.T, within time.Duration) streamEvent {
	t.Helper()
	select {
	case e := <-w.Events:
		return e
	case <-time.After(within):
		t.Fatalf("no stream event within %v", within)
		return streamEvent{}
	}
}

// TestReliableStreamWritesOnce (issue 11.4): on every reliable stream an
// unacknowledged message is written once; when its ack is overdue the
// stream ends within 1 s of the deadline and the message goes back for the
// next consumer.
func TestReliableStreamWritesOnce(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			q := "once-" + tr
			w := watch(t, g.URL, tr, "?reliable=1&timeoutACK=1", 1, q)
			tid := provision(t, g.URL, q, "H", "unacked")
			first := w.nextEvent(t, 10*time.Second)
			if first.Kind != "msg" || first.TID != tid {
				t.Fatalf("first event %+v, want the message %s", first, tid)
			}
			// The deadline is 1 s after the write; the end must come no
			// later than 1 s after it, with nothing written again.
			end := w.nextEvent(t, 10*time.Second)
			if end.Kind == "msg" {
				t.Fatalf("message %s written again on the same connection after %v", end.TID, end.At.Sub(first.At))
			}
			if took := end.At.Sub(first.At); took > 2*time.Second {
				t.Fatalf("stream ended %v after the write: more than 1 s after the 1 s ack deadline", took)
			}
			if !strings.Contains(end.Text, "acknowledgement timed out") && tr != "stream" {
				t.Fatalf("end %+v does not say the ack timed out", end)
			}
			// The message is back for the next consumer.
			_, tids := popHTTP(t, g.URL, "/queue/"+q+"/pop?timeout=5")
			if len(tids) != 1 || tids[0] != tid {
				t.Fatalf("next consumer got %v, want %s", tids, tid)
			}
		})
	}
}

// TestMuxAckDeadlinePerSubscription (issue 11.4): on one multiplexed
// WebSocket with two reliable subscriptions where only one acks, the other
// subscription ends with an error frame, its message goes back for the next
// consumer, and the acking one keeps receiving.
func TestMuxAckDeadlinePerSubscription(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	w := watch(t, g.URL, "wsmux", "", 1, "acks", "silent")
	ackMux := func(q, tid string) {
		w.write(map[string]any{"op": "ack", "queue": q, "transactions": []string{tid}})
	}
	a := provision(t, g.URL, "acks", "H", "a")
	b := provision(t, g.URL, "silent", "H", "b")
	got := map[string]streamEvent{}
	for len(got) < 2 {
		e := w.nextEvent(t, 10*time.Second)
		if e.Kind != "msg" {
			t.Fatalf("event %+v before both messages", e)
		}
		got[e.TID] = e
		if e.TID == a {
			ackMux("acks", a)
		}
	}
	waitState(t, g.URL, a, "acks", "Delivered")
	e := w.nextEvent(t, 10*time.Second)
	if e.Kind != "suberror" || e.Queue != "silent" || !strings.Contains(e.Text, "acknowledgement timed out") {
		t.Fatalf("event %+v, want an error frame ending the silent subscription", e)
	}
	if took := e.At.Sub(got[b].At); took > 2*time.Second {
		t.Fatalf("subscription ended %v after the write: more than 1 s after the 1 s deadline", took)
	}
	_, tids := popHTTP(t, g.URL, "/queue/silent/pop?timeout=5")
	if len(tids) != 1 || tids[0] != b {
		t.Fatalf("next consumer of silent got %v, want %s", tids, b)
	}
	// The acking subscription lives on.
	c := provision(t, g.URL, "acks", "H", "c")
	if e := w.nextEvent(t, 10*time.Second); e.Kind != "msg" || e.TID != c {
		t.Fatalf("event %+v, want message %s on the live subscription", e, c)
	}
	ackMux("acks", c)
	waitState(t, g.URL, c, "acks", "Delivered")
	select {
	case e := <-w.Events:
		t.Fatalf("unexpected event %+v", e)
	default:
	}
}

// TestStreamsEndOnRedisOutage (issue 11.6): when Redis cannot be reached,
// every open stream ends and says why (SSE end event, WebSocket close 1011,
// a last error object on the HTTP stream), instead of staying open as if
// the queue were merely empty.
func TestStreamsEndOnRedisOutage(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	ws := map[string]*watcher{}
	for _, tr := range transports {
		ws[tr] = watch(t, g.URL, tr, "", 0, "outage-"+tr)
	}
	r.Stop()
	want := map[string]string{
		"stream": `{"ok":false,"errors":["storage unavailable`,
		"sse":    "storage unavailable",
		"ws":     "StatusInternalError storage unavailable",
		"wsmux":  "StatusInternalError storage unavailable",
	}
	for _, tr := range transports {
		e := ws[tr].nextEvent(t, 20*time.Second)
		if e.Kind != "end" || !strings.Contains(e.Text, want[tr]) {
			t.Fatalf("%s: event %+v, want the end of the stream saying %q", tr, e, want[tr])
		}
	}
	// A stream opened while Redis is still unreachable ends at once, the
	// same way (the outage began before it joined the node's streams); a
	// /ws before its first subscription frame could be answered.
	for _, tr := range transports {
		if tr == "wsmux" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.URL, "http")+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusInternalError || !strings.Contains(ce.Reason, "storage unavailable") {
				t.Fatalf("/ws opened during the outage: read %v, want close 1011 storage unavailable", err)
			}
			continue
		}
		w := watch(t, g.URL, tr, "", 0, "outage-late-"+tr)
		e := w.nextEvent(t, 10*time.Second)
		if e.Kind != "end" || !strings.Contains(e.Text, want[tr]) {
			t.Fatalf("%s opened during the outage: event %+v, want the end of the stream saying %q", tr, e, want[tr])
		}
	}
}

// TestLongPollOutageIs500: in process on a real redis-server that is then
// killed, a pop that was waiting and pops, peeks and GET /queue made during
// the outage answer 500 {"errors": [...]}, never an empty 200 (API.md 1.3).
func TestLongPollOutageIs500(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.OwnRedis())
	n := startTestNode(t, r.URL(), nodeSetup{})
	do := func(method, path string) (int, map[string]any, time.Duration) {
		t.Helper()
		start := time.Now()
		req, _ := http.NewRequest(method, n.plain.URL+path, nil)
		status, _, b := send(t, req)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, status, b, err)
		}
		return status, m, time.Since(start)
	}
	isOutage := func(what string, status int, m map[string]any) {
		t.Helper()
		e, _ := m["errors"].([]any)
		if status != http.StatusInternalServerError || len(m) != 1 || len(e) == 0 {
			t.Fatalf(`%s: %d %v, want 500 {"errors": [...]}`, what, status, m)
		}
	}
	if st, m, _ := do(http.MethodPost, "/queue/q/pop?timeout=0"); st != http.StatusOK || m["ok"] != true {
		t.Fatalf("pop before the outage: %d %v", st, m)
	}

	type answer struct {
		status int
		m      map[string]any
		took   time.Duration
	}
	waiting := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, n.plain.URL+"/queue/q/pop?timeout=60", nil)
		start := time.Now()
		resp, err := n.plain.Client().Do(req)
		if err != nil {
			waiting <- answer{}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		waiting <- answer{resp.StatusCode, m, time.Since(start)}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, m, _ := do(http.MethodGet, "/queue/q")
		if m["blocked"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pop is not waiting after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Kill()
	select {
	case a := <-waiting:
		t.Logf("the waiting pop answered %d %v, %v after it was sent", a.status, a.m, a.took)
		isOutage("the pop waiting when Redis went away", a.status, a.m)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting pop did not answer within 30 s of Redis going away")
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/queue/q/pop?timeout=1"},
		{http.MethodPost, "/queue/q/poprel?timeout=1"},
		{http.MethodGet, "/queue/q/peek"},
		{http.MethodGet, "/queue/q"},
	} {
		st, m, took := do(c.method, c.path)
		t.Logf("%s %s during the outage: %d %v after %v", c.method, c.path, st, m, took)
		isOutage(c.method+" "+c.path, st, m)
	}
}

// TestGracefulShutdown: on SIGTERM an SSE stream ends with an "end" event,
// a WebSocket is closed with 1001 and a waiting long poll answers, and a
// message provisioned before is still in Redis afterwards.
func TestGracefulShutdown(t *testing.T) {
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp := openSSE(t, ctx, g.URL, "sd-sse")
	sseEnd := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		sseEnd <- strings.Join(lines, "\n")
	}()

	conn, _, err := websocket.Dial(ctx, "ws://"+g.Addr+"/queue/sd-ws/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	wsEnd := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				wsEnd <- err
				return
			}
		}
	}()
	popDone := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		resp, err := http.Post(g.URL+"/queue/sd-pop/pop?timeout=60", "application/json", nil)
		if err == nil {
			resp.Body.Close()
		}
		popDone <- time.Since(start)
	}()
	tid := provision(t, g.URL, "sd-kept", "H", "kept")
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, g.URL, `popbox_connections{transport="longpoll"}`) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("pop never started")
		}
		time.Sleep(10 * time.Millisecond)
	}

	g.Stop() // SIGTERM, waits for the process

	select {
	case out := <-sseEnd:
		if !strings.Contains(out, "event: end") {
			t.Fatalf("SSE stream ended without an end event:\n%s", out)
		}
	case <-ctx.Done():
		t.Fatal("SSE stream did not end")
	}
	select {
	case err := <-wsEnd:
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("WebSocket ended with %v, want close 1001", err)
		}
	case <-ctx.Done():
		t.Fatal("WebSocket did not end")
	}
	select {
	case d := <-popDone:
		if d > 20*time.Second {
			t.Fatalf("long poll answered only after %v", d)
		}
	case <-ctx.Done():
		t.Fatal("long poll did not answer")
	}
	// Nothing lost: a new node serves the message provisioned before.
	g2 := testenv.StartGateway(t, r.URL())
	_, tids := popHTTP(t, g2.URL, "/queue/sd-kept/pop?timeout=5")
	if len(tids) != 1 || tids[0] != tid {
		t.Fatalf("after shutdown the queue held %v", tids)
	}
}

// TestWSControlFrames: the node writes its pings and pongs itself (not
// through coder/websocket, see writeControl); on the wire they are plain
// RFC 6455 control frames. A raw client's ping gets its payload back in
// an unmasked pong, the node's pings carry a payload that a masked pong
// answers, and a client that answers them outlives several pong timeouts.
// A coder/websocket client's Ping is answered on both socket kinds.
func TestWSControlFrames(t *testing.T) {
	t.Parallel()
	n, base := startEndsNode(t, gateway.Options{
		HeartbeatInterval: 100 * time.Millisecond, WSPongTimeout: 300 * time.Millisecond})
	c, br, resp := rawRequest(t, base, wsHandshake("/queue/control-raw/ws"), nil)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	mask := [4]byte{9, 8, 7, 6}
	send := func(op byte, p []byte) {
		f := append([]byte{0x80 | op, 0x80 | byte(len(p))}, mask[:]...)
		for i, b := range p {
			f = append(f, b^mask[i%4])
		}
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	send(0x9, []byte("hello"))
	deadline := time.Now().Add(3 * time.Second) // ten heartbeats, each pong timeout three times over
	_ = c.SetReadDeadline(deadline.Add(5 * time.Second))
	var pongs, pings int
	for pongs == 0 || time.Now().Before(deadline) {
		// A server frame: two header bytes, then (a control frame,
		// unmasked) the payload whose length the second one gives.
		h, err := br.Peek(2)
		if err != nil {
			t.Fatalf("after %d pings and %d pongs: %v", pings, pongs, err)
		}
		if h[1]&0x80 != 0 || h[1] > 125 {
			t.Fatalf("server frame header % x: masked or not a control frame", h)
		}
		f, err := br.Peek(2 + int(h[1]))
		if err != nil {
			t.Fatal(err)
		}
		op, p := f[0], append([]byte(nil), f[2:]...)
		_, _ = br.Discard(len(f))
		switch op {
		case 0x8a:
			if string(p) != "hello" {
				t.Fatalf("pong payload %q, want the ping's", p)
			}
			pongs++
		case 0x89:
			if len(p) == 0 {
				t.Fatal("the node's ping has no payload")
			}
			pings++
			send(0xa, p)
		default:
			t.Fatalf("unexpected frame %#x %q", op, p)
		}
	}
	if pings < 3 {
		t.Fatalf("%d pings in 3 s at a 100 ms heartbeat", pings)
	}
	if got := metricValue(t, base, `popbox_connections{transport="ws"}`); got != 1 {
		t.Fatalf("%v live per-queue sockets, want the raw one that answered %d pings", got, pings)
	}
	ends, _ := streamEnds(t, base)
	if len(ends[delivery.TransportWS]) > 0 {
		t.Fatalf("stream ends %v, want none", ends[delivery.TransportWS])
	}
	for _, path := range []string{"/queue/control-lib/ws", "/ws"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.plain.URL, "http")+path, nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		ctx = conn.CloseRead(ctx)
		err = conn.Ping(ctx)
		_ = conn.Close(websocket.StatusNormalClosure, "")
		cancel()
		if err != nil {
			t.Fatalf("%s: ping: %v", path, err)
		}
	}
}
