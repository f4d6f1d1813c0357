package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// classicPop checks API.md 1.3: pop (order, max, timeouts, ghosts, expiry).
func classicPop(t *testing.T, n *node) {
	t.Run("PopSkipsManyGhosts", func(t *testing.T) {
		t.Parallel()
		// Many deleted or expired entries ahead of a live one must not make
		// a pop come back empty (or wait) while the live one is there.
		for _, tc := range []struct {
			name     string
			livePrio string
			kill     func(tid string)
		}{
			{"deleted", "H", func(tid string) { expectJSON(t, n.delete(t, "/trans/"+tid), 200, map[string]any{"ok": true}) }},
			{"expired", "L", func(tid string) {
				expectJSON(t, n.putJSON(t, "/trans/"+tid, msg{"expirationDate": 1}), 200, map[string]any{"ok": true})
			}},
		} {
			q := qn(t, tc.name)
			for i := 0; i < 30; i++ {
				tc.kill(n.send1(t, "ghost", "H", q))
			}
			live := n.send1(t, "live", tc.livePrio, q)
			expectPop(t, n.peek(t, "", q, "max=1"), []string{"live"}, []string{live})
			start := time.Now()
			expectPop(t, n.pop(t, "", q, "max=1&timeout=30"), []string{"live"}, []string{live})
			// Far below the timeout: the pop did not wait (loaded CI
			// machines make any tighter bound flaky).
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s ghosts: pop took %v with a live message in the queue", tc.name, took)
			}
		}
	})

	t.Run("PayloadRoundTrip", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		payloads := []string{"héllo ✓ 😀", "  spaces  ", "quote \" backslash \\ newline \n tab \t", "<b>&amp;</b>", `{"looks":"like json"}`, "\u0000 nul \x00"}
		var tids []string
		for _, p := range payloads {
			tid := n.send1(t, p, "H", q)
			tids = append(tids, tid)
			if got := object(t, n.get(t, "/trans/"+tid), 200)["payload"]; got != p {
				t.Errorf("GET /trans payload %q, want %q", got, p)
			}
		}
		expectPop(t, n.peek(t, "", q, ""), payloads, tids)
		expectPop(t, n.pop(t, "", q, "timeout=1"), payloads, tids)
	})

	t.Run("PopPriorityAndOrder", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		l1 := n.send1(t, "L1", "L", q)
		h1 := n.send1(t, "H1", "H", q)
		l2 := n.send1(t, "L2", "L", q)
		h2 := n.send1(t, "H2", "H", q)
		h3 := n.send1(t, "H3", "H", q)
		expectPop(t, n.peek(t, "", q, ""), []string{"H1", "H2", "H3", "L1", "L2"}, []string{h1, h2, h3, l1, l2})
		start := time.Now()
		expectPop(t, n.pop(t, "", q, "max=2&timeout=30"), []string{"H1", "H2"}, []string{h1, h2})
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("pop with messages already queued took %v, want an immediate answer", took)
		}
		expectPop(t, n.pop(t, "", q, "max=2&timeout=1"), []string{"H3", "L1"}, []string{h3, l1})
		expectPop(t, n.pop(t, "", q, "max=2&timeout=1"), []string{"L2"}, []string{l2})
		expectPop(t, n.pop(t, "", q, "timeout=1"), nil, nil)
		expectJSON(t, n.get(t, "/trans/"+h1+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{q: "Delivered"}})
	})

	t.Run("PopDefaultMax", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		var payloads, tids []string
		for i := 0; i < 3; i++ {
			p := "m" + strconv.Itoa(i)
			tids, payloads = append(tids, n.send1(t, p, "L", q)), append(payloads, p)
		}
		// Non-numeric, zero and negative max fall back to 1000.
		expectPop(t, n.pop(t, "", q, "max=abc&timeout=1"), payloads, tids)
		for _, m := range []string{"0", "-3", ""} {
			n.send1(t, "again", "L", q)
			if p := n.pop(t, "", q, "max="+m+"&timeout=1"); len(p.Data) != 1 {
				t.Errorf("max=%q: %+v", m, p)
			}
		}
	})

	t.Run("PopEmptyAnswer", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		start := time.Now()
		r := n.send(t, req{method: http.MethodPost, path: "/queue/" + q + "/pop?timeout=1"})
		took := time.Since(start)
		expectJSON(t, r, 200, map[string]any{"ok": true, "data": []string{}, "transactions": []string{}})
		if took < 900*time.Millisecond || took > 3*time.Second {
			t.Errorf("pop?timeout=1 on an empty queue took %v", took)
		}
	})

	t.Run("PopReceivesLateMessage", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		start := time.Now()
		ch := n.asyncPop(context.Background(), "", q, "timeout=3")
		time.Sleep(time.Second) // the scenario: provision 1 s after the pop started
		tid := n.send1(t, "late", "L", q)
		o := waitPop(t, ch, 10*time.Second)
		expectPop(t, o.p, []string{"late"}, []string{tid})
		if took := time.Since(start); took < time.Second || took > 2500*time.Millisecond {
			t.Errorf("pop answered after %v, want soon after the 1 s provision", took)
		}
	})

	t.Run("PopTimesOutBeforeLateMessage", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		start := time.Now()
		ch := n.asyncPop(context.Background(), "", q, "timeout=1")
		o := waitPop(t, ch, 10*time.Second)
		expectPop(t, o.p, nil, nil)
		if o.took < 900*time.Millisecond || o.took > 2500*time.Millisecond {
			t.Errorf("1 s pop answered after %v", o.took)
		}
		time.Sleep(time.Until(start.Add(3 * time.Second))) // the scenario: the message arrives at 3 s
		tid := n.send1(t, "too late", "H", q)
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"too late"}, []string{tid})
	})

	t.Run("PopTimeoutZeroMeansOneSecond", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		start := time.Now()
		expectPop(t, n.pop(t, "", q, "timeout=0"), nil, nil)
		if took := time.Since(start); took < 900*time.Millisecond || took > 2500*time.Millisecond {
			t.Errorf("timeout=0 took %v, want 1 s", took)
		}
	})

	t.Run("PopNonNumericTimeoutIsDefault", func(t *testing.T) {
		t.Parallel()
		vals := []string{"abc", "5s", ""}
		var chans []<-chan popOutcome
		for i, tv := range vals {
			chans = append(chans, n.asyncPop(context.Background(), "", qn(t, strconv.Itoa(i)), "timeout="+tv))
		}
		for i, ch := range chans {
			o := waitPop(t, ch, 20*time.Second)
			expectPop(t, o.p, nil, nil)
			if o.took < 4900*time.Millisecond || o.took > 8*time.Second {
				t.Errorf("timeout=%s took %v, want the 5 s default", vals[i], o.took)
			}
		}
	})

	t.Run("ExpiredNeverReturned", func(t *testing.T) {
		t.Parallel()
		q := qn(t, "")
		past := n.provision(t, "", msg{"payload": "stale", "priority": "H", "queue": target(q), "expirationDate": time.Now().Unix() - 10})
		expectJSON(t, n.get(t, "/trans/"+past), 200, map[string]any{})
		soon := n.provision(t, "", msg{"payload": "fleeting", "priority": "L", "queue": target(q), "expirationDelay": 1})
		eventually(t, 5*time.Second, "transaction with expirationDelay 1 expires", func() bool {
			return len(object(t, n.get(t, "/trans/"+soon), 200)) == 0
		})
		expectPop(t, n.peek(t, "", q, ""), nil, nil)
		fresh := n.send1(t, "fresh", "L", q)
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"fresh"}, []string{fresh})
		expectPop(t, n.pop(t, "", q, "timeout=1"), nil, nil)
	})
}
