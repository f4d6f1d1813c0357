package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// boundsNode is an in-process gateway on a real redis-server, served over a
// loopback HTTP listener.
type boundsNode struct {
	url   string
	addr  string
	store *redisq.Store
}

func startBoundsNode(t *testing.T, b gateway.Bounds) *boundsNode {
	t.Helper()
	n := startTestNode(t, testenv.StartRedis(t).URL(), nodeSetup{opts: gateway.Options{Node: "bounds", Bounds: b}})
	return &boundsNode{url: n.plain.URL, addr: n.plain.Listener.Addr().String(), store: n.store}
}

func (n *boundsNode) provision(t *testing.T, q, payload string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"payload": payload, "priority": "H", "queue": []map[string]string{{"id": q}}})
	resp, err := http.Post(n.url+"/trans", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Data string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("provision: %d %v", resp.StatusCode, err)
	}
	return out.Data
}

// TestReadTimeoutCutsSlowBody: the body must arrive within the read
// timeout (408), while a long poll outliving it is answered normally.
func TestReadTimeoutCutsSlowBody(t *testing.T) {
	n := startBoundsNode(t, gateway.Bounds{ReadTimeout: 300 * time.Millisecond})
	poll := make(chan string, 1)
	go func() {
		resp, err := http.Post(n.url+"/queue/slow/pop?timeout=20", "", nil)
		if err != nil {
			poll <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- string(b)
	}()

	conn, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /trans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	br := bufio.NewReader(conn)
	// Nothing more is sent: the answer comes when the deadline passes.
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 408 ") {
		t.Fatalf("stalled body answered %q", line)
	}
	rest, _ := io.ReadAll(br) // the connection is closed after it
	if !strings.Contains(string(rest), `request body not received within 300ms`) {
		t.Fatalf("408 body: %q", rest)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("cut after %v, before the read timeout", took)
	}
	// The long poll started before the slow body outlived it.
	tid := n.provision(t, "slow", "late")
	got := <-poll
	if !strings.Contains(got, tid) {
		t.Fatalf("long poll past the read timeout answered %q", got)
	}
}
