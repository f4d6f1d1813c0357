package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestForgivingRouting: classic clients build URLs with a trailing slash
// and in any case (Express 3 defaults, API.md section 0). Every classic
// route answers both ways, on the plain and the TLS port and under
// /org/{org}, and ids and org names keep their case.
func TestForgivingRouting(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := testenv.SelfSignedCert(t, t.TempDir())
	r := testenv.StartRedis(t)
	plain := startNode(t, r.URL(), testenv.WithTLS(certFile, keyFile))
	// The secure port, with the box credentials in every request's URL
	// (the client sends them as BasicAuth).
	tu, err := url.Parse(plain.g.TLSURL)
	if err != nil {
		t.Fatal(err)
	}
	tu.User = url.UserPassword("u", "p")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	secure := &node{g: plain.g, base: tu.String(), host: tu.Host, hc: &http.Client{Transport: tr, Timeout: time.Minute}}

	for _, port := range []struct {
		name string
		n    *node
	}{{"plain", plain}, {"tls", secure}} {
		t.Run(port.name, func(t *testing.T) {
			t.Parallel()
			n := port.n
			// Ids with upper-case letters, and one spelled like a fixed word.
			q, word := "Box-"+port.name, "Pop"
			if port.name == "tls" {
				for _, id := range []string{q, word} {
					m := object(t, n.postJSON(t, "/Queue/", map[string]string{"queue": id, "user": "u", "password": "p"}), 200)
					if m["ok"] != true {
						t.Fatalf("create secure box %s: %v", id, m)
					}
				}
			}
			tid := n.provisionAt(t, "/trans/", msg{"payload": "slash", "priority": "H", "queue": target(q)})
			meta := object(t, n.get(t, "/trans/"+tid+"/"), 200)
			if meta["payload"] != "slash" {
				t.Fatalf("GET /trans/{tid}/ = %v", meta)
			}
			expectJSON(t, n.get(t, "/TRANS/"+tid+"/State/"), 200, map[string]any{"ok": true, "data": map[string]string{q: "Pending"}})
			expectJSON(t, n.putJSON(t, "/Trans/"+tid+"/", msg{"payload": "slash2"}), 200, map[string]any{"ok": true})
			if m := n.queueInfo(t, "", q+"/"); m["size"] != float64(1) {
				t.Fatalf("GET /queue/%s/ = %v", q, m)
			}
			// The id keeps its case: the lower-case queue is another one.
			otherQueue(t, n, port.name, "", strings.ToLower(q))
			expectPop(t, n.peek(t, "", q, ""), []string{"slash2"}, []string{tid})
			expectPop(t, parsePop(t, n.send(t, req{method: http.MethodPost, path: "/QUEUE/" + q + "/Pop/?timeout=1"})), []string{"slash2"}, []string{tid})

			// A queue called like a fixed word.
			tid2 := n.provisionAt(t, "/TRANS", msg{"payload": "word", "priority": "L", "queue": target(word)})
			if m := n.queueInfo(t, "", word+"/"); m["size"] != float64(1) {
				t.Fatalf("GET /queue/%s/ = %v", word, m)
			}
			expectPop(t, parsePop(t, n.send(t, req{method: http.MethodPost, path: "/queue/" + word + "/POP/?timeout=1"})), []string{"word"}, []string{tid2})

			g := "Group-" + port.name
			expectJSON(t, n.postJSON(t, "/group/", map[string]any{"name": g, "queues": []string{q}}), 200, map[string]string{"ok": "group stored"})
			expectJSON(t, n.get(t, "/GROUP/"+g+"/"), 200, map[string]any{"name": g, "queues": []string{q}})
			expectJSON(t, n.delete(t, "/group/"+g+"/"), 200, map[string]string{"ok": "Group " + g + " removed"})
			expectJSON(t, n.delete(t, "/trans/"+tid+"/"), 200, map[string]any{"ok": true})

			// Under an org: the fixed words match in any case, the org name
			// keeps its.
			if port.name == "tls" {
				m := object(t, n.postJSON(t, "/ORG/Acme/queue/", map[string]string{"queue": q, "user": "u", "password": "p"}), 200)
				if m["ok"] != true {
					t.Fatalf("create secure box under /org/Acme: %v", m)
				}
			}
			otid := n.provisionAt(t, "/ORG/Acme/Trans/", msg{"payload": "org", "priority": "H", "queue": target(q)})
			otherQueue(t, n, port.name, "/org/acme", q)
			expectPop(t, parsePop(t, n.send(t, req{method: http.MethodPost, path: "/Org/Acme/Queue/" + q + "/PopRel/?timeout=1&timeoutACK=30"})), []string{"org"}, []string{otid})
			acks := n.postJSON(t, "/org/Acme/QUEUE/"+q+"/Ack/", map[string][]string{"transactions": {otid}})
			expectJSON(t, acks, 200, []map[string]any{{"err": nil, "data": otid}})
		})
	}
}

// otherQueue checks that queue q under prefix is empty (plain port) or not
// a secure box (TLS port): a queue other than the one spelled differently.
func otherQueue(t *testing.T, n *node, port, prefix, q string) {
	t.Helper()
	r := n.get(t, prefix+"/Queue/"+q+"/Peek/")
	if port == "plain" {
		expectPop(t, parsePop(t, r), nil, nil)
		return
	}
	if r.Status != http.StatusInternalServerError || string(r.Body) != "ERROR: Secure Queue does not exist" {
		t.Fatalf("peek %s/queue/%s on the TLS port: %s, want 500 ERROR: Secure Queue does not exist", prefix, q, r)
	}
}

// TestQueryValuesLikeParseInt: max, timeout and timeoutACK are read as the
// original read them, like JavaScript parseInt(v, 10) (API.md 1.3).
func TestQueryValuesLikeParseInt(t *testing.T) {
	t.Parallel()
	_, n := startRedisNode(t)
	q := qn(t, "")
	var tids []string
	for _, p := range []string{"a", "b", "c"} {
		tids = append(tids, n.send1(t, p, "H", q))
	}
	expectPop(t, n.peek(t, "", q, "max=2.9"), []string{"a", "b"}, tids[:2])
	expectPop(t, n.peek(t, "", q, "max=1items"), []string{"a"}, tids[:1])
	expectPop(t, n.peek(t, "", q, "max=items1"), []string{"a", "b", "c"}, tids)
	expectPop(t, n.pop(t, "", q, "max=2abc&timeout=1"), []string{"a", "b"}, tids[:2])

	// timeoutACK=1.5 is 1 s (not the 20 s default): the unacked message is
	// back in its queue long before 20 s.
	expectPop(t, parsePop(t, n.send(t, req{method: http.MethodPost, path: "/queue/" + q + "/poprel?timeout=1&timeoutACK=1.5"})), []string{"c"}, tids[2:])
	back := eventually(t, 15*time.Second, "unacked message back after timeoutACK=1.5", func() bool {
		return len(n.peek(t, "", q, "").Data) == 1
	})
	t.Logf("timeoutACK=1.5: message back after %v", back)

	// timeout=1s is 1 s, not the 5 s default (which a value without
	// leading digits still gets).
	empty := qn(t, "empty")
	one := n.asyncPop(context.Background(), "", empty, "timeout=1s")
	def := n.asyncPop(context.Background(), "", empty, "timeout=s1")
	o1, od := waitPop(t, one, 20*time.Second), waitPop(t, def, 20*time.Second)
	expectPop(t, o1.p, nil, nil)
	expectPop(t, od.p, nil, nil)
	t.Logf("timeout=1s answered after %v, timeout=s1 after %v", o1.took, od.took)
	if o1.took >= 4*time.Second || od.took < 4900*time.Millisecond {
		t.Fatalf("timeout=1s took %v (want 1 s), timeout=s1 took %v (want the 5 s default)", o1.took, od.took)
	}
}

// TestBlockedPromptAcrossNodes: `blocked` (API.md 1.3) is true on any node
// within 100 ms of a waiter starting and false within 100 ms of the last
// one ending, also right after Redis lost its data (FLUSHALL). The waiter
// lease is long (a heartbeat every 40 s), so only a registration that
// re-asserts the node's heartbeat itself makes a pop started after the
// FLUSHALL count at once. The state is polled with a deadline well above
// 100 ms (a loaded CI box) and the observed latencies are logged.
func TestBlockedPromptAcrossNodes(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.OwnRedis())
	a := startNode(t, r.URL(), testenv.WithEnv("POPBOX_WAITER_LEASE=120s"))
	b := startNode(t, r.URL(), testenv.WithEnv("POPBOX_WAITER_LEASE=120s"))
	rc := r.Client()
	defer rc.Close()
	const deadline = 2 * time.Second

	// round starts a pop on A, waits until B sees the queue blocked, ends
	// the pop with a message and waits until B sees it unblocked.
	round := func(t *testing.T, q string) (on, off time.Duration) {
		t.Helper()
		if b.blocked(t, q) || a.blocked(t, q) {
			t.Fatal("blocked before any pop")
		}
		ch := a.asyncPop(context.Background(), "", q, "timeout=60")
		start := time.Now()
		eventually(t, deadline, "pop on A shows as blocked on B", func() bool { return b.blocked(t, q) })
		on = time.Since(start)
		tid := b.send1(t, "unblock", "H", q)
		expectPop(t, waitPop(t, ch, 10*time.Second).p, []string{"unblock"}, []string{tid})
		start = time.Now()
		eventually(t, deadline, "B shows the queue not blocked once the pop on A answered", func() bool { return !b.blocked(t, q) })
		off = time.Since(start)
		if a.blocked(t, q) {
			t.Fatal("A still shows the queue blocked")
		}
		return on, off
	}

	for i := range 3 {
		on, off := round(t, qn(t, "before-"+strconv.Itoa(i)))
		t.Logf("LATENCY blocked seen on B after a pop started on A: %v; cleared after it answered: %v", on, off)
	}
	// A pop that times out, and a client that goes away, end the waiter too.
	q := qn(t, "timeout")
	ch := a.asyncPop(context.Background(), "", q, "timeout=1")
	eventually(t, deadline, "pop on A shows as blocked on B", func() bool { return b.blocked(t, q) })
	waitPop(t, ch, 10*time.Second)
	start := time.Now()
	eventually(t, deadline, "not blocked after the pop timed out", func() bool { return !b.blocked(t, q) })
	t.Logf("LATENCY blocked cleared after a pop timed out: %v", time.Since(start))
	ctx, cancel := context.WithCancel(context.Background())
	ch = a.asyncPop(ctx, "", q, "timeout=60")
	eventually(t, deadline, "pop on A shows as blocked on B", func() bool { return b.blocked(t, q) })
	cancel()
	<-ch
	start = time.Now()
	eventually(t, deadline, "not blocked after the client went away", func() bool { return !b.blocked(t, q) })
	t.Logf("LATENCY blocked cleared after the client went away: %v", time.Since(start))

	// Redis loses its data: every heartbeat and registration is gone,
	// including that of a pop waiting on A meanwhile.
	held := qn(t, "held")
	heldCh := a.asyncPop(context.Background(), "", held, "timeout=120")
	eventually(t, deadline, "pop on A shows as blocked on B", func() bool { return b.blocked(t, held) })
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		on, off := round(t, qn(t, "after-flush-"+strconv.Itoa(i)))
		t.Logf("LATENCY after FLUSHALL: blocked seen on B after a pop started on A: %v; cleared: %v", on, off)
		if i == 0 {
			// A's first registration after the loss asserted its other
			// queues again too.
			eventually(t, deadline, "the pop held across FLUSHALL shows as blocked on B", func() bool { return b.blocked(t, held) })
		}
	}

	// Redis restarts without persistence (its data is lost): A asserts its
	// heartbeat and registrations when its connection comes back, without
	// a new pop and without waiting for its next heartbeat.
	r.Restart(t)
	start = time.Now()
	eventually(t, 15*time.Second, "the pop held across a Redis restart shows as blocked on B", func() bool {
		resp, err := b.try(req{method: http.MethodGet, path: "/queue/" + held})
		return err == nil && resp.Status == http.StatusOK && object(t, resp, 200)["blocked"] == true
	})
	t.Logf("LATENCY blocked seen again %v after the Redis restart returned", time.Since(start))
	tid := b.send1(t, "held", "H", held)
	expectPop(t, waitPop(t, heldCh, 10*time.Second).p, []string{"held"}, []string{tid})
	eventually(t, deadline, "not blocked after the held pop answered", func() bool { return !b.blocked(t, held) })
}

// TestRedisOutageIsAnError: while Redis cannot be reached, long-poll pops
// (plain and reliable), peek and GET /queue answer 500 {"errors": [...]},
// never an empty 200 that would look like an empty queue (API.md 1.3); a
// pop already waiting when Redis goes away answers 500 as well. Once Redis
// is back the same requests work again.
func TestRedisOutageIsAnError(t *testing.T) {
	t.Parallel()
	r, n := startRedisNode(t, testenv.OwnRedis())
	q := qn(t, "")
	tid := n.send1(t, "before", "H", q)
	expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"before"}, []string{tid})

	waiting := n.asyncPop(context.Background(), "", q, "timeout=60")
	eventually(t, 5*time.Second, "pop waiting", func() bool { return n.blocked(t, q) })
	r.Kill()
	start := time.Now()
	select {
	case o := <-waiting:
		t.Logf("LATENCY a waiting pop answered %v after Redis was killed: %s", time.Since(start), o.r)
		expectOutage(t, "the pop waiting when Redis went away", o.r, o.err)
	case <-time.After(30 * time.Second):
		t.Fatal("a waiting pop did not answer within 30 s of Redis going away")
	}

	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/queue/" + q + "/pop?timeout=2"},
		{http.MethodPost, "/queue/" + q + "/poprel?timeout=2"},
		{http.MethodPost, "/queue/" + qn(t, "other") + "/pop?timeout=1"},
		{http.MethodGet, "/queue/" + q + "/peek"},
		{http.MethodGet, "/queue/" + q},
	} {
		start := time.Now()
		resp, err := n.try(req{method: c.method, path: c.path})
		t.Logf("%s %s during the outage: %v after %v", c.method, c.path, resp, time.Since(start))
		expectOutage(t, c.method+" "+c.path, resp, err)
	}

	r.Restart(t)
	eventually(t, 20*time.Second, "pops work again after Redis is back", func() bool {
		resp, err := n.try(req{method: http.MethodPost, path: "/queue/" + q + "/pop?timeout=1"})
		return err == nil && resp.Status == http.StatusOK
	})
	tid = n.send1(t, "after", "H", q)
	expectPop(t, n.peek(t, "", q, ""), []string{"after"}, []string{tid})
	expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"after"}, []string{tid})
}

// expectOutage checks a 500 {"errors": ["<non-empty>", ...]} answer.
func expectOutage(t *testing.T, what string, r response, err error) {
	t.Helper()
	if r.Status == 0 && err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	m := object(t, r, http.StatusInternalServerError)
	e, _ := m["errors"].([]any)
	if len(m) != 1 || len(e) == 0 {
		t.Fatalf(`%s: %s, want 500 {"errors": [...]}`, what, r)
	}
	if s, _ := e[0].(string); s == "" {
		t.Fatalf("%s: empty error in %s", what, r)
	}
}
