package gateway_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/internal/testenv"
)

// TestGracefulShutdown: on SIGTERM an SSE stream ends with an "end" event,
// a WebSocket is closed with 1001 and a waiting long poll answers, and a
// message provisioned before is still in Redis afterwards.
func TestGracefulShutdown(t *testing.T) {
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/queue/sd-sse/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
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
