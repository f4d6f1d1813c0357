package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// classicTransactions checks API.md 1.2: GET, PUT and DELETE /trans/{tid}.
func classicTransactions(t *testing.T, n *node) {
	parallelQ(t, "GetTrans", func(t *testing.T, q string) {
		tid := n.provision(t, "", msg{"payload": "p1", "priority": "H", "queue": target(q),
			"callback": "http://127.0.0.1:9/cb", "expirationDate": 2100000000, "custom": "c"})
		expectJSON(t, n.get(t, "/trans/"+tid), 200, map[string]string{
			"payload": "p1", "priority": "H", "callback": "http://127.0.0.1:9/cb", "expirationDate": "2100000000", "custom": "c"})

		before := time.Now().Unix()
		tid = n.provision(t, "", msg{"payload": "p2", "priority": "L", "queue": target(q), "expirationDelay": 100})
		m := object(t, n.get(t, "/trans/"+tid), 200)
		exp, err := strconv.ParseInt(fmt.Sprint(m["expirationDate"]), 10, 64)
		if err != nil || exp < before+100 || exp > time.Now().Unix()+100 {
			t.Errorf("expirationDate %v with expirationDelay 100 (now %d)", m["expirationDate"], before)
		}
		delete(m, "expirationDate")
		expectJSON(t, response{Status: 200, Header: http.Header{"Content-Type": {jsonCT}}, Body: jsonBody(t, m)}, 200,
			map[string]string{"payload": "p2", "priority": "L", "expirationDelay": "100"})

		// expirationDate wins over expirationDelay.
		tid = n.provision(t, "", msg{"payload": "p4", "priority": "H", "queue": target(q), "expirationDate": 2100000000, "expirationDelay": 5})
		expectJSON(t, n.get(t, "/trans/"+tid), 200, map[string]string{
			"payload": "p4", "priority": "H", "expirationDate": "2100000000", "expirationDelay": "5"})

		// Default expiry: one hour.
		tid = n.send1(t, "p3", "H", q)
		m = object(t, n.get(t, "/trans/"+tid), 200)
		exp, _ = strconv.ParseInt(fmt.Sprint(m["expirationDate"]), 10, 64)
		if exp < before+3600 || exp > time.Now().Unix()+3600 {
			t.Errorf("default expirationDate %v, want now+3600 (now %d)", m["expirationDate"], before)
		}
		for k, v := range m {
			if _, ok := v.(string); !ok {
				t.Errorf("field %s = %v (%T), want a string", k, v, v)
			}
		}

		// Unknown transactions, well-formed or not.
		for _, id := range []string{uuid.NewString(), "nope", "00000000-0000-0000-0000-000000000000"} {
			expectJSON(t, n.get(t, "/trans/"+id), 200, map[string]any{})
			expectJSON(t, n.get(t, "/trans/"+id+"?queues=All"), 200, map[string]any{})
		}
	})

	t.Run("GetTransQueues", func(t *testing.T) {
		t.Parallel()
		a, b := qn(t, "a"), qn(t, "b")
		tid := n.send1(t, "pq", "H", a, b)
		expectPop(t, n.pop(t, "", a, "timeout=1"), []string{"pq"}, []string{tid})
		base := map[string]any{"payload": "pq", "priority": "H"}
		withQueues := func(filter string) map[string]any {
			m := object(t, n.get(t, "/trans/"+tid+"?queues="+filter), 200)
			for k, v := range base {
				if m[k] != v {
					t.Errorf("?queues=%s: %s = %v, want %v", filter, k, m[k], v)
				}
			}
			if _, ok := m["expirationDate"].(string); !ok {
				t.Errorf("?queues=%s: expirationDate %v", filter, m["expirationDate"])
			}
			return m
		}
		href := func(q string) string { return "http://" + n.host + "/queue/" + q }
		entry := func(q, st string) map[string]string { return map[string]string{"state": st, "href": href(q)} }
		for filter, want := range map[string]map[string]any{
			"All":       {a: entry(a, "Delivered"), b: entry(b, "Pending")},
			"Pending":   {b: entry(b, "Pending")},
			"Delivered": {a: entry(a, "Delivered")},
			"Blocked":   {},
			"summary":   {"totalNotifications": 2, "Pending": 1, "Delivered": 1},
		} {
			got := withQueues(filter)["queues"]
			if d := diffJSON(t, want, got); d != "" {
				t.Errorf("?queues=%s: queues mismatch (-want +got):\n%s", filter, d)
			}
		}
		for _, bad := range []string{"foo", "Pendingx", "1"} {
			expectJSON(t, n.get(t, "/trans/"+tid+"?queues="+bad), 400, errs("Wrong State:"+bad))
		}
	})

	t.Run("GetTransState", func(t *testing.T) {
		t.Parallel()
		a, b := qn(t, "a"), qn(t, "b")
		tid := n.send1(t, "ps", "L", a, b)
		expectPop(t, n.pop(t, "", b, "timeout=1"), []string{"ps"}, []string{tid})
		ok := func(data any) map[string]any { return map[string]any{"ok": true, "data": data} }
		expectJSON(t, n.get(t, "/trans/"+tid+"/state"), 200, ok(map[string]string{a: "Pending", b: "Delivered"}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/All"), 200, ok(map[string]string{a: "Pending", b: "Delivered"}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/Pending"), 200, ok(map[string]string{a: "Pending"}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/Delivered"), 200, ok(map[string]string{b: "Delivered"}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/Blocked"), 200, ok(map[string]string{}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/summary"), 200, ok(map[string]int{"totalNotifications": 2, "Pending": 1, "Delivered": 1}))
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/bogus"), 400, errs("Wrong State:bogus"))
		expectJSON(t, n.get(t, "/trans/"+uuid.NewString()+"/state"), 200, ok(map[string]string{}))
	})

	parallelQ(t, "PutTrans", func(t *testing.T, q string) {
		tid := n.send1(t, "old", "H", q)
		put := func(tid string, body any) response { return n.putJSON(t, "/trans/"+tid, body) }

		// Nothing to change: untouched.
		expectJSON(t, put(tid, `{}`), 200, map[string]any{"ok": true, "data": "empty data"})
		expectJSON(t, put(tid, msg{"priority": "L", "queue": target("elsewhere")}), 200, map[string]any{"ok": true, "data": "empty data"})
		if got := object(t, n.get(t, "/trans/"+tid), 200); got["priority"] != "H" || got["payload"] != "old" {
			t.Fatalf("empty update changed the transaction: %v", got)
		}
		// Unknown transaction.
		unknown := uuid.NewString()
		expectJSON(t, put(unknown, msg{"payload": "x"}), 400, errs(unknown+" does not exist"))
		expectJSON(t, put("nosuch", msg{"payload": "x"}), 400, errs("nosuch does not exist"))
		// Content type and validation.
		r := n.send(t, req{method: http.MethodPut, path: "/trans/" + tid, ctype: "text/plain", body: []byte(`{"payload":"x"}`)})
		expectJSON(t, r, 400, badContentType)
		r = n.send(t, req{method: http.MethodPut, path: "/trans/" + tid, body: []byte(`{"payload":"x"}`)})
		expectJSON(t, r, 400, badContentType)
		expectJSON(t, put(tid, msg{"expirationDate": 2147483648}), 400, errs("expirationDate out of range"))
		expectJSON(t, put(tid, msg{"expirationDate": -5}), 400, errs("expirationDate out of range"))
		expectJSON(t, put(tid, msg{"expirationDate": "soon"}), 400, errs("expirationDate is not a number"))
		expectJSON(t, put(tid, msg{"payload": strings.Repeat("z", 1048577)}), 400, errs("payload greater than 1048576"))

		// A payload update is what the consumer gets; priority is ignored.
		expectJSON(t, put(tid, msg{"payload": "new", "priority": "L"}), 200, map[string]any{"ok": true})
		got := object(t, n.get(t, "/trans/"+tid), 200)
		if got["payload"] != "new" || got["priority"] != "H" {
			t.Fatalf("after PUT: %v", got)
		}
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"new"}, []string{tid})
	})

	parallelQ(t, "PutTransExtendsExpiry", func(t *testing.T, q string) {
		tid := n.provision(t, "", msg{"payload": "keep me", "priority": "L", "queue": target(q), "expirationDelay": 2})
		newExp := time.Now().Unix() + 600
		expectJSON(t, n.putJSON(t, "/trans/"+tid, msg{"expirationDate": newExp}), 200, map[string]any{"ok": true})
		if got := object(t, n.get(t, "/trans/"+tid), 200)["expirationDate"]; got != strconv.FormatInt(newExp, 10) {
			t.Errorf("expirationDate after PUT %v, want %d", got, newExp)
		}
		time.Sleep(3 * time.Second) // the scenario: the original expiry passes
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"keep me"}, []string{tid})
	})

	parallelQ(t, "PutTransExpireNow", func(t *testing.T, q string) {
		tid := n.send1(t, "short-lived", "H", q)
		past := time.Now().Unix() - 10
		expectJSON(t, n.putJSON(t, "/trans/"+tid, msg{"expirationDate": past}), 200, map[string]any{"ok": true})
		expectJSON(t, n.get(t, "/trans/"+tid), 200, map[string]any{})
		expectPop(t, n.pop(t, "", q, "timeout=1"), nil, nil)
	})

	parallelQ(t, "DeleteTrans", func(t *testing.T, q string) {
		a := n.send1(t, "ghost", "H", q)
		b := n.send1(t, "alive", "H", q)
		expectJSON(t, n.delete(t, "/trans/"+a), 200, map[string]any{"ok": true})
		expectJSON(t, n.get(t, "/trans/"+a), 200, map[string]any{})
		expectJSON(t, n.get(t, "/trans/"+a+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{}})
		expectPop(t, n.peek(t, "", q, ""), []string{"alive"}, []string{b})
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"alive"}, []string{b})
		expectPop(t, n.pop(t, "", q, "timeout=1"), nil, nil)
		// Deleting what does not exist is fine too.
		expectJSON(t, n.delete(t, "/trans/"+uuid.NewString()), 200, map[string]any{"ok": true})
		expectJSON(t, n.delete(t, "/trans/"+a), 200, map[string]any{"ok": true})
	})

}
