package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/internal/testenv"
)

// TestMetadataBounded: a transaction's extra metadata fields are bounded in
// number (64) and bytes (POPBOX_MAX_META_BYTES, default 64 KiB); beyond
// either a provision is a 400 naming the bound and stores nothing
// (issue 13 item 8: 200,000 keys and 7.5 MB were accepted).
func TestMetadataBounded(t *testing.T) {
	t.Parallel()
	r, n := startRedisNode(t)
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
	r, n := startRedisNode(t)
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

// floodLimit is POPBOX_MAX_CONNECTIONS of the flood tests.
const floodLimit = 30

// floodSecret is the HS256 secret of the flood test's tokens.
const floodSecret = "ws-flood-test-secret-0123456789abcdef"

// floodToken signs a token for the queues "flood-*" (no org).
func floodToken(t *testing.T) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "queues": []string{"flood-*"},
	}).SignedString([]byte(floodSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// floodEnd is how one flood socket ended.
type floodEnd struct {
	code websocket.StatusCode // -1: not a close frame (the connection dropped)
	at   time.Time
}

// flood is a set of credential-less /ws sockets that subscribe to nothing
// and read until the server closes them.
type flood struct {
	opened, refused int
	ends            chan floodEnd
	wg              sync.WaitGroup
}

// openFlood dials n /ws sockets one after the other (each on its own
// connection) and keeps reading each until it ends.
func openFlood(ctx context.Context, t *testing.T, wsURL string, hc *http.Client, n int) *flood {
	t.Helper()
	f := &flood{ends: make(chan floodEnd, n)}
	for range n {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
		cancel()
		if err != nil {
			f.refused++
			continue
		}
		f.opened++
		f.wg.Go(func() {
			defer c.CloseNow()
			_, _, err := c.Read(ctx)
			code := websocket.CloseStatus(err)
			if ctx.Err() != nil {
				return // the test ended it
			}
			f.ends <- floodEnd{code: code, at: time.Now()}
		})
	}
	return f
}

// idleSockets opens n connections that send one GET / each (keep-alive)
// and then stay idle; it returns a channel that gets one value per socket
// the server closes.
func idleSockets(t *testing.T, addr, host string, tlsConf *tls.Config, n int) (closed <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, n)
	for range n {
		var conn net.Conn
		var err error
		if tlsConf != nil {
			conn, err = tls.Dial("tcp", addr, tlsConf)
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		go func() {
			// Blocks until the server closes the idle connection (or the
			// test's cleanup does).
			_, _ = br.ReadByte()
			ch <- struct{}{}
		}()
	}
	return ch
}

// TestWSFloodKeepsNodeServing: with POPBOX_MAX_CONNECTIONS=30, credential-
// less /ws sockets that subscribe to nothing (and idle keep-alive
// connections) no longer make every other request answer 503 (issue 13
// item 4): they are shed (idle connections closed, silent /ws closed with
// 1013) to serve new requests, /healthz always answers, and with
// POPBOX_REQUIRE_AUTH a /ws without a token and without a subscription is
// closed with 1008 after POPBOX_WS_AUTH_TIMEOUT. On the TLS port too.
func TestWSFloodKeepsNodeServing(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := testenv.SelfSignedCert(t, t.TempDir())
	r := testenv.StartRedis(t)
	const floodN, idleN, legitN = 40, 10, 20
	for _, tc := range []struct {
		name string
		tls  bool
		auth bool // POPBOX_REQUIRE_AUTH with a 2 s /ws auth timeout
	}{{"open", false, false}, {"require-auth", false, true}, {"tls", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := []string{fmt.Sprintf("POPBOX_MAX_CONNECTIONS=%d", floodLimit)}
			if tc.auth {
				env = append(env, "POPBOX_REQUIRE_AUTH=true", "POPBOX_JWT_SECRET="+floodSecret, "POPBOX_WS_AUTH_TIMEOUT=2s")
			}
			n := startNode(t, r.URL(), testenv.WithTLS(certFile, keyFile), testenv.WithEnv(env...))
			base := n.base
			var tlsConf *tls.Config
			if tc.tls {
				base = n.g.TLSURL
				tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			addr := strings.TrimPrefix(strings.TrimPrefix(base, "https://"), "http://")
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			wsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
			// Legitimate clients: a fresh connection per request (the worst
			// case: each needs a place of its own).
			legit := &http.Client{Timeout: 20 * time.Second,
				Transport: &http.Transport{TLSClientConfig: tlsConf, DisableKeepAlives: true}}
			t.Cleanup(legit.CloseIdleConnections)
			token := floodToken(t)
			do := func(method, path, authz string) (int, error) {
				req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
				if authz != "" {
					req.Header.Set("Authorization", authz)
				}
				resp, err := legit.Do(req)
				if err != nil {
					return 0, err
				}
				resp.Body.Close()
				return resp.StatusCode, nil
			}

			idleClosed := idleSockets(t, addr, addr, tlsConf, idleN)
			wsURL := strings.Replace(base, "http", "ws", 1) + "/ws"
			start := time.Now()
			fl := openFlood(ctx, t, wsURL, wsClient, floodN)
			t.Logf("flood: %d /ws sockets opened, %d refused at the handshake", fl.opened, fl.refused)

			// Legitimate traffic during the flood.
			refused := 0
			var statuses []string
			for i := range legitN {
				path, authz := "/", ""
				if tc.auth && i%2 == 1 {
					// A credentialed consumer: its token opens the queue.
					path, authz = "/queue/flood-q/peek", "Bearer "+token
				}
				status, err := do(http.MethodGet, path, authz)
				if err != nil || status != http.StatusOK {
					refused++
					statuses = append(statuses, fmt.Sprintf("%s: %d %v", path, status, err))
				}
			}
			healthz, err := do(http.MethodGet, "/healthz", "")
			t.Logf("during the flood: %d of %d legitimate requests refused %v; /healthz %d %v", refused, legitN, statuses, healthz, err)
			if healthz != http.StatusOK {
				t.Errorf("/healthz during the flood: %d %v, want 200", healthz, err)
			}
			if refused > 0 {
				t.Errorf("%d of %d legitimate requests refused during the flood (want 0)", refused, legitN)
			}

			// The flood is closed: shed with 1013 to make room, or (auth on)
			// all of it with 1008 after the auth timeout.
			codes := map[websocket.StatusCode]int{}
			var last time.Time
			want := fl.opened
			if !tc.auth {
				// Without auth, only the sockets shed to make room are closed:
				// each /ws beyond the limit sheds one (the idle sockets went
				// first), and the first legitimate request one more (the next
				// ones take the place the previous one left).
				want = min(max(fl.opened-floodLimit+1, 1), fl.opened)
			}
			deadline := time.After(30 * time.Second)
		collect:
			for range want {
				select {
				case e := <-fl.ends:
					codes[e.code]++
					last = e.at
				case <-deadline:
					break collect
				}
			}
			idle := 0
		idleLoop:
			for range idleN {
				select {
				case <-idleClosed:
					idle++
				case <-time.After(5 * time.Second):
					break idleLoop
				}
			}
			t.Logf("flood sockets closed: %v (1008: %d, 1013: %d) in %v; idle keep-alive sockets closed: %d of %d",
				codes, codes[websocket.StatusPolicyViolation], codes[websocket.StatusTryAgainLater], last.Sub(start).Round(time.Millisecond), idle, idleN)
			if tc.auth {
				if codes[websocket.StatusPolicyViolation] < fl.opened-codes[websocket.StatusTryAgainLater] || fl.opened == 0 {
					t.Errorf("auth on: %d flood sockets opened, closes %v: want every one closed with 1008 (or shed with 1013)", fl.opened, codes)
				}
				if d := last.Sub(start); d > 20*time.Second {
					t.Errorf("the flood took %v to close (auth timeout 2 s)", d)
				}
			} else if codes[websocket.StatusTryAgainLater] == 0 {
				t.Errorf("no flood socket was shed with 1013: closes %v", codes)
			}
			// With auth on, the auth timeout (2 s) may close the first flood
			// sockets before the last ones open (a loaded machine opens 40
			// slowly): the node may then never reach its limit, and nothing
			// needs to make room. The open and TLS runs check the idle ones.
			if idle != idleN && !tc.auth {
				t.Errorf("%d of %d idle keep-alive sockets were closed to make room, want all", idle, idleN)
			}

			if tc.auth {
				// A bad token is refused before the upgrade; a good one
				// outlives the auth timeout without subscribing.
				_, resp, err := websocket.Dial(ctx, wsURL+"?access_token=garbage", &websocket.DialOptions{HTTPClient: wsClient})
				if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
					st := 0
					if resp != nil {
						st = resp.StatusCode
					}
					t.Errorf("/ws with a bad token: %v (status %d), want 401 before the upgrade", err, st)
				}
				c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: wsClient,
					HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
				if err != nil {
					t.Fatalf("/ws with a good token: %v", err)
				}
				defer c.CloseNow()
				rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
				_, _, err = c.Read(rctx)
				rcancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("/ws authenticated at the handshake ended within 4 s (auth timeout 2 s): %v", err)
				}
			}
			cancel()
			fl.wg.Wait()
		})
	}
}
