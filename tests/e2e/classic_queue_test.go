package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// classicQueues checks API.md 1.3: peek, GET /queue, blocked, concurrent and disconnected pops.
func classicQueues(t *testing.T, n *node) {
	t.Run("Peek", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		l := n.send1(t, "low", "L", q)
		h := n.send1(t, "high", "H", q)
		expectPop(t, n.peek(t, "", q, ""), []string{"high", "low"}, []string{h, l})
		expectPop(t, n.peek(t, "", q, "max=1"), []string{"high"}, []string{h})
		expectPop(t, n.peek(t, "", q, "max=x"), []string{"high", "low"}, []string{h, l})
		info := n.queueInfo(t, "", q)
		if _, ok := info["lastPop"]; ok {
			t.Errorf("peek set lastPop: %v", info)
		}
		if info["size"] != float64(2) {
			t.Errorf("size after peek %v, want 2", info["size"])
		}
		expectJSON(t, n.get(t, "/trans/"+h+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{q: "Pending"}})
		expectPop(t, n.peek(t, "", qn(t, "empty"), ""), nil, nil)
	})

	t.Run("GetQueue", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		ref := func(tid string) map[string]string {
			return map[string]string{"id": tid, "href": "http://" + n.host + "/trans/" + tid + "?queues=All"}
		}
		expectJSON(t, n.get(t, "/queue/"+q), 200, map[string]any{
			"ok": true, "host": n.host, "blocked": false, "size": 0, "high": []any{}, "low": []any{}})
		h1 := n.send1(t, "a", "H", q)
		l1 := n.send1(t, "b", "L", q)
		h2 := n.send1(t, "c", "H", q)
		expectJSON(t, n.get(t, "/queue/"+q), 200, map[string]any{
			"ok": true, "host": n.host, "blocked": false, "size": 3,
			"high": []any{ref(h1), ref(h2)}, "low": []any{ref(l1)}})
		before := time.Now().Unix()
		expectPop(t, n.pop(t, "", q, "max=1&timeout=1"), []string{"a"}, []string{h1})
		// The pop's "blocked" registration is withdrawn asynchronously.
		eventually(t, 5*time.Second, "not blocked after the pop", func() bool { return !n.blocked(t, q) })
		m := object(t, n.get(t, "/queue/"+q), 200)
		lp, ok := m["lastPop"].(string)
		ts, err := strconv.ParseInt(lp, 10, 64)
		if !ok || err != nil || ts < before-1 || ts > time.Now().Unix()+1 {
			t.Fatalf("lastPop %#v after a pop, want unix seconds as a string", m["lastPop"])
		}
		delete(m, "lastPop")
		if d := diffJSON(t, map[string]any{"ok": true, "host": n.host, "blocked": false, "size": 2,
			"high": []any{ref(h2)}, "low": []any{ref(l1)}}, m); d != "" {
			t.Fatalf("GET /queue after pop (-want +got):\n%s", d)
		}
		// host and hrefs follow the Host header the client sent.
		vh := "popbox.example:8080"
		m = object(t, n.send(t, req{method: http.MethodGet, path: "/queue/" + q, host: vh}), 200)
		if d := diffJSON(t, []any{map[string]string{"id": l1, "href": "http://" + vh + "/trans/" + l1 + "?queues=All"}}, m["low"]); m["host"] != vh || d != "" {
			t.Errorf("with Host %s: host %v, low %v", vh, m["host"], m["low"])
		}
		st := object(t, n.send(t, req{method: http.MethodGet, path: "/trans/" + l1 + "?queues=All", host: vh}), 200)["queues"]
		if d := diffJSON(t, map[string]any{q: map[string]string{"state": "Pending", "href": "http://" + vh + "/queue/" + q}}, st); d != "" {
			t.Errorf("GET /trans?queues=All with Host %s:\n%s", vh, d)
		}

		// An empty pop counts as a pop too.
		q2 := qn(t, "emptypop")
		expectPop(t, n.pop(t, "", q2, "timeout=0"), nil, nil)
		if _, ok := n.queueInfo(t, "", q2)["lastPop"].(string); !ok {
			t.Errorf("lastPop missing after an empty pop")
		}
	})

	t.Run("Blocked", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		if n.blocked(t, q) {
			t.Fatal("blocked before any pop")
		}
		ch := n.asyncPop(context.Background(), "", q, "timeout=10")
		eventually(t, 5*time.Second, "blocked while a pop waits", func() bool { return n.blocked(t, q) })
		tid := n.send1(t, "unblock", "H", q)
		expectPop(t, waitPop(t, ch, 10*time.Second).p, []string{"unblock"}, []string{tid})
		eventually(t, 5*time.Second, "not blocked after the pop answered", func() bool { return !n.blocked(t, q) })
		// And after a pop that timed out.
		ch = n.asyncPop(context.Background(), "", q, "timeout=1")
		eventually(t, 5*time.Second, "blocked while a pop waits", func() bool { return n.blocked(t, q) })
		waitPop(t, ch, 10*time.Second)
		eventually(t, 5*time.Second, "not blocked after the pop timed out", func() bool { return !n.blocked(t, q) })
	})

	t.Run("DisconnectedPopLosesNothing", func(t *testing.T) {
		t.Parallel()
		// The client goes away while its pop waits; a message provisioned
		// afterwards goes to the next consumer.
		//
		// "noticed": provision once the gateway has seen the disconnect
		// (the queue is no longer blocked). Strict.
		//
		// "at once": provision as soon as the cancelled request returned.
		// The gateway normally sees the closed connection well within a
		// millisecond, but under load (this suite runs many -race processes
		// on 2 cores) it may still be blind to it when the message comes
		// in; it then writes the answer into the socket the client closed,
		// which a long poll without ack cannot tell from a delivery (that
		// is what poprel is for). That case (state Delivered, queue empty)
		// is logged, not failed; any other outcome fails.
		modes := []string{"noticed", "noticed", "at once", "at once", "at once"}
		for round, mode := range modes {
			q := qn(t, strconv.Itoa(round))
			ctx, cancel := context.WithCancel(context.Background())
			ch := n.asyncPop(ctx, "", q, "timeout=20")
			eventually(t, 5*time.Second, "blocked while a pop waits", func() bool { return n.blocked(t, q) })
			cancel()
			if o := <-ch; o.err == nil {
				t.Fatalf("cancelled pop answered: %s", o.r)
			}
			if mode == "noticed" {
				eventually(t, 5*time.Second, "not blocked after the client left", func() bool { return !n.blocked(t, q) })
			}
			tid := n.send1(t, "for whoever comes next", "H", q)
			p := n.pop(t, "", q, "timeout=5")
			if len(p.Data) == 0 && mode == "at once" {
				st := object(t, n.get(t, "/trans/"+tid+"/state"), 200)["data"].(map[string]any)
				if st[q] == "Delivered" && n.queueInfo(t, "", q)["size"] == float64(0) {
					t.Logf("LIMITATION round %d: the gateway answered the pop after its client had closed the connection (not yet noticed); the message went to the closed socket", round)
					continue
				}
			}
			expectPop(t, p, []string{"for whoever comes next"}, []string{tid})
			expectJSON(t, n.get(t, "/trans/"+tid+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{q: "Delivered"}})
		}
	})

	t.Run("ConcurrentPopsSameQueue", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		const k = 5
		var chans []<-chan popOutcome
		for i := 0; i < k; i++ {
			chans = append(chans, n.asyncPop(context.Background(), "", q, "max=1&timeout=3"))
		}
		eventually(t, 5*time.Second, "pops waiting", func() bool { return n.blocked(t, q) })
		want := map[string]bool{}
		for i := 0; i < k; i++ {
			want[n.send1(t, "m"+strconv.Itoa(i), "H", q)] = true
		}
		got := map[string]int{}
		for _, ch := range chans {
			o := waitPop(t, ch, 10*time.Second)
			for _, tid := range o.p.Transactions {
				got[tid]++
			}
		}
		for tid := range want {
			if got[tid] > 1 {
				t.Errorf("%s delivered %d times", tid, got[tid])
			}
		}
		total := len(got)
		rest := n.pop(t, "", q, "timeout=0")
		for _, tid := range rest.Transactions {
			got[tid]++
		}
		if len(got) != k || total+len(rest.Transactions) != k {
			t.Errorf("%d messages, %d waiters: waiters got %d, %d left over; %v", k, k, total, len(rest.Transactions), got)
		}
	})

	t.Run("ProvisionDuplicateQueues", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		tid := n.provision(t, "", msg{"payload": "once", "priority": "H", "queue": target(q, q, q)})
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/summary"), 200, map[string]any{"ok": true, "data": map[string]int{"totalNotifications": 1, "Pending": 1}})
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"once"}, []string{tid})
		expectPop(t, n.pop(t, "", q, "timeout=0"), nil, nil)
	})
}
