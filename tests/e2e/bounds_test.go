package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/internal/testenv"
)

// TestMetadataBounded: a transaction's extra metadata fields are bounded in
// number (64) and bytes (POPBOX_MAX_META_BYTES, default 64 KiB); beyond
// either a provision is a 400 naming the bound and stores nothing
// (issue 13 item 8: 200,000 keys and 7.5 MB were accepted).
func TestMetadataBounded(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startNode(t, r.URL())
	small := startNode(t, r.URL(), testenv.WithEnv("POPBOX_MAX_META_BYTES=1KiB"))

	body := func(q string, keys, valueLen int) msg {
		m := msg{"payload": "p", "priority": "H", "queue": target(q)}
		for i := range keys {
			m[fmt.Sprintf("k%05d", i)] = strings.Repeat("v", valueLen)
		}
		return m
	}
	q := qn(t, "")
	expectJSON(t, n.postJSON(t, "/trans", body(q, 200000, 1)), http.StatusBadRequest,
		errs("too many metadata fields: maximum 64", "metadata greater than 65536 bytes"))
	expectJSON(t, n.postJSON(t, "/trans", body(q, 60, 125000)), http.StatusBadRequest,
		errs("metadata greater than 65536 bytes"))
	expectJSON(t, small.postJSON(t, "/trans", body(q, 2, 600)), http.StatusBadRequest,
		errs("metadata greater than 1024 bytes"))
	if p := n.peek(t, "", q, ""); len(p.Data) != 0 {
		t.Fatalf("refused provisions left messages: %+v", p)
	}

	// At the bounds it is accepted and kept.
	tid := n.provision(t, "", body(q, 64, 1000))
	got := object(t, n.get(t, "/trans/"+tid), http.StatusOK)
	if got["k00063"] != strings.Repeat("v", 1000) {
		t.Fatalf("metadata field k00063 not kept: %.200v", got)
	}
	small.provision(t, "", body(q, 2, 500))
}

// TestAnswersBounded: pop and peek answers are bounded in messages
// (POPBOX_PEEK_MAX) and bytes (POPBOX_MAX_ANSWER_BYTES), hold whole
// messages only (what does not fit stays in the queue, Pending), and are
// encoded without HTML escaping (issue 13 item 5: ten 1 MiB payloads of
// "<" made 63 MB answers; here ten 256 KiB ones, to stay quick under the
// race detector).
func TestAnswersBounded(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startNode(t, r.URL())
	small := startNode(t, r.URL(), testenv.WithEnv("POPBOX_MAX_ANSWER_BYTES=600KiB", "POPBOX_PEEK_MAX=3"))
	q := qn(t, "")
	lt := strings.Repeat("<", 256<<10)
	var tids []string
	for range 10 {
		tids = append(tids, n.send1(t, lt, "H", q))
	}

	resp := n.get(t, "/queue/"+q+"/peek")
	if len(resp.Body) > 3<<20 {
		t.Fatalf("peek of ten 256 KiB payloads answered %d bytes (HTML-escaped?)", len(resp.Body))
	}
	if p := parsePop(t, resp); len(p.Data) != 10 || p.Data[9] != lt {
		t.Fatalf("peek answered %d messages, want all 10 intact", len(p.Data))
	}

	// 600 KiB of answer: two whole messages (a third would cross the bound).
	resp = small.get(t, "/queue/"+q+"/peek?max=10")
	if len(resp.Body) > 600<<10 {
		t.Fatalf("peek answer of %d bytes over the 600 KiB bound", len(resp.Body))
	}
	if p := parsePop(t, resp); len(p.Data) != 2 || p.Data[1] != lt || p.Transactions[1] != tids[1] {
		t.Fatalf("bounded peek answered %d messages, want 2 intact", len(p.Data))
	}
	resp = small.send(t, req{method: http.MethodPost, path: "/queue/" + q + "/pop?max=10&timeout=1"})
	if len(resp.Body) > 600<<10 {
		t.Fatalf("pop answer of %d bytes over the 600 KiB bound", len(resp.Body))
	}
	p := parsePop(t, resp)
	if len(p.Data) == 0 || len(p.Data) > 2 || p.Data[0] != lt || p.Transactions[0] != tids[0] {
		t.Fatalf("bounded pop answered %d messages (first %.10q), want 1 or 2 intact from the head", len(p.Data), p.Transactions)
	}
	// The rest stayed in the queue, in order, Pending.
	for i, tid := range tids {
		want := "Pending"
		if i < len(p.Data) {
			want = "Delivered"
		}
		expectJSON(t, n.get(t, "/trans/"+tid+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{q: want}})
	}
	rest := n.peek(t, "", q, "")
	if d := cmp.Diff(tids[len(p.Data):], rest.Transactions); d != "" {
		t.Fatalf("queue after the bounded pop (-want +got):\n%s", d)
	}

	// POPBOX_PEEK_MAX caps max for peek and pop.
	q2 := qn(t, "count")
	for i := range 5 {
		n.send1(t, fmt.Sprint(i), "H", q2)
	}
	if p := small.peek(t, "", q2, "max=1000000"); len(p.Data) != 3 {
		t.Fatalf("peek with max above POPBOX_PEEK_MAX=3 answered %d messages", len(p.Data))
	}
	if p := small.pop(t, "", q2, "max=1000000&timeout=1"); len(p.Data) != 3 {
		t.Fatalf("pop with max above POPBOX_PEEK_MAX=3 answered %d messages", len(p.Data))
	}
}

// trickle sends a POST /trans whose body arrives one byte every interval
// and returns the status line of the answer (or the read error) and how
// long it took.
func trickle(t *testing.T, addr, path string, interval time.Duration) (string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"payload":"slow","priority":"H","queue":[{"id":"slow"}]}`
	start := time.Now()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, addr, len(body)+1000)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
			if _, err := conn.Write([]byte{body[i%len(body)]}); err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer close(done)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "read: " + err.Error(), time.Since(start)
	}
	return strings.TrimSpace(line), time.Since(start)
}

// TestSlowBodyCut: a client that sends its headers and then trickles the
// body is answered 408 once POPBOX_READ_TIMEOUT passes (issue 13 item 7:
// the body could take forever); streams and long polls that outlive the
// read timeout are not cut by it.
func TestSlowBodyCut(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startNode(t, r.URL(), testenv.WithEnv("POPBOX_READ_TIMEOUT=1s"))

	line, took := trickle(t, n.host, "/trans", 100*time.Millisecond)
	if line != "HTTP/1.1 408 Request Timeout" {
		t.Fatalf("trickled body: answer %q after %v, want 408", line, took)
	}
	if took > 10*time.Second {
		t.Fatalf("trickled body cut only after %v", took)
	}
	t.Logf("trickled body answered %q after %v", line, took)

	// A long poll and an SSE stream each live past the read timeout and
	// still deliver.
	q := qn(t, "poll")
	poll := n.asyncPop(context.Background(), "", q, "timeout=30")
	qs := qn(t, "sse")
	resp, err := n.hc.Get(n.base + "/queue/" + qs + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	eventually(t, 10*time.Second, "long poll and SSE registered", func() bool { return n.blocked(t, q) && n.blocked(t, qs) })
	// Outlive the read timeout by waiting for a trickled body to be cut
	// (an event, not a sleep).
	if line, _ := trickle(t, n.host, "/trans", 100*time.Millisecond); line != "HTTP/1.1 408 Request Timeout" {
		t.Fatalf("second trickled body: %q", line)
	}
	if line, _ := trickle(t, n.host, "/trans", 100*time.Millisecond); line != "HTTP/1.1 408 Request Timeout" {
		t.Fatalf("third trickled body: %q", line)
	}
	n.send1(t, "late", "H", q)
	n.send1(t, "late-sse", "H", qs)
	if o := waitPop(t, poll, 20*time.Second); len(o.p.Data) != 1 || o.p.Data[0] != "late" {
		t.Fatalf("long poll past the read timeout answered %+v", o.p)
	}
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "data: ") {
			if !strings.Contains(lines.Text(), `"late-sse"`) {
				t.Fatalf("SSE event %q", lines.Text())
			}
			return
		}
	}
	t.Fatalf("SSE stream ended past the read timeout: %v", lines.Err())
}
