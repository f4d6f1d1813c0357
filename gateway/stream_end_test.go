package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/internal/testenv"
)

// streamEvent is what a test client saw on a stream: a message, the end of
// one subscription of a multiplexed socket (an error frame), or the end of
// the connection with what the server said about it.
type streamEvent struct {
	Kind  string // "msg", "suberror", "end"
	Queue string
	TID   string
	Text  string // error frame text, SSE end data, close code and reason, or the last stream line
	At    time.Time
}

// watcher is a raw stream client that records every event in order.
type watcher struct {
	Events chan streamEvent
	write  func(v any) // WebSocket frames
}

// watch opens a stream of transport tr ("stream", "sse", "ws", "wsmux") on
// the given queues (several only for "wsmux") and returns once it is
// established. query is appended to the per-queue URL; on "wsmux" reliable
// and timeoutACK go into the subscribe frames.
func watch(t *testing.T, base, tr, query string, timeoutACK int, queues ...string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{Events: make(chan streamEvent, 1000)}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	emit := func(e streamEvent) { e.At = time.Now(); w.Events <- e }
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
			t.Fatalf("open %s: %v %v", tr, resp, err)
		}
		go func() {
			defer close(done)
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			last, event := "", ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case tr == "stream" && strings.HasPrefix(line, "{"):
					var m struct {
						OK           bool
						Transactions []string
					}
					if json.Unmarshal([]byte(line), &m) == nil && len(m.Transactions) == 1 {
						emit(streamEvent{Kind: "msg", Queue: q, TID: m.Transactions[0]})
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
					var m struct{ Transaction string }
					if json.Unmarshal([]byte(data), &m) == nil {
						emit(streamEvent{Kind: "msg", Queue: q, TID: m.Transaction})
					}
				}
			}
			emit(streamEvent{Kind: "end", Text: last})
		}()
	case "ws", "wsmux":
		var conn *websocket.Conn
		conn, w.write = dialStreamWS(t, ctx, base, tr, q, query)
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
				var m struct{ Op, Queue, Transaction, Error string }
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
					emit(streamEvent{Kind: "msg", Queue: m.Queue, TID: m.Transaction})
				}
			}
		}()
		if tr == "wsmux" {
			for _, q := range queues {
				w.write(map[string]any{"op": "subscribe", "queue": q, "reliable": timeoutACK > 0, "timeoutACK": timeoutACK})
			}
			for range queues {
				select {
				case <-subscribed:
				case <-time.After(10 * time.Second):
					t.Fatal("subscription not confirmed")
				}
			}
		}
	}
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
}
