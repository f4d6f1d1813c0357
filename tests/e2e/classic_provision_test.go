package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// classicProvision checks API.md 1.1: POST /trans (provisioning answers, errors, limits, targets).
func classicProvision(t *testing.T, n *node) {
	parallelQ(t, "ProvisionAnswer", func(t *testing.T, q string) {
		r := n.postJSON(t, "/trans", msg{"payload": "p", "priority": "H", "queue": target(q)})
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, jsonCT) {
			t.Errorf("Content-Type %q", ct)
		}
		m := object(t, r, http.StatusOK)
		if len(m) != 2 || m["ok"] != true || !uuidV4.MatchString(fmt.Sprint(m["data"])) {
			t.Fatalf(`answer %s, want exactly {"ok":true,"data":"<uuid v4>"}`, r)
		}
		tid := m["data"].(string)
		expectJSON(t, n.get(t, "/trans/"+tid+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{q: "Pending"}})
	})

	parallelQ(t, "ProvisionContentType", func(t *testing.T, q string) {
		good := jsonBody(t, msg{"payload": "p", "priority": "L", "queue": target(q)})
		for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"} {
			r := n.send(t, req{method: http.MethodPost, path: "/trans", ctype: ct, body: good})
			if m := object(t, r, 200); m["ok"] != true {
				t.Errorf("Content-Type %q: %s", ct, r)
			}
		}
		// A bad content type is the only error reported, whatever the body.
		for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonx"} {
			for _, body := range [][]byte{good, []byte(`{`), []byte(`{}`)} {
				r := n.send(t, req{method: http.MethodPost, path: "/trans", ctype: ct, body: body})
				expectJSON(t, r, 400, badContentType)
			}
		}
	})

	t.Run("ProvisionErrors", func(t *testing.T) {
		t.Parallel()
		q := target(qn(t, ""))
		tooMany := make([]map[string]string, 10001)
		for i := range tooMany {
			tooMany[i] = map[string]string{"id": "m" + strconv.Itoa(i)}
		}
		cases := []struct {
			name string
			body any
			want []string
		}{
			{"empty object", `{}`, []string{"undefined priority", "undefined queue", "undefined payload"}},
			{"no priority", msg{"payload": "p", "queue": q}, []string{"undefined priority"}},
			{"null priority", msg{"payload": "p", "queue": q, "priority": nil}, []string{"undefined priority"}},
			{"bad priority", msg{"payload": "p", "queue": q, "priority": "X"}, []string{"invalid priority"}},
			{"lower-case priority", msg{"payload": "p", "queue": q, "priority": "h"}, []string{"invalid priority"}},
			{"numeric priority", msg{"payload": "p", "queue": q, "priority": 1}, []string{"invalid priority"}},
			{"no queue", msg{"payload": "p", "priority": "H"}, []string{"undefined queue"}},
			{"empty queue", msg{"payload": "p", "priority": "H", "queue": []any{}}, []string{"undefined queue"}},
			{"queue string", msg{"payload": "p", "priority": "H", "queue": "q1"}, []string{"invalid queue type"}},
			{"queue object", msg{"payload": "p", "priority": "H", "queue": map[string]string{"id": "q1"}}, []string{"invalid queue type"}},
			{"queue element string", msg{"payload": "p", "priority": "H", "queue": []any{"q1"}}, []string{"invalid queue element"}},
			{"queue element no id", msg{"payload": "p", "priority": "H", "queue": []any{map[string]string{"name": "q1"}}}, []string{"invalid queue element"}},
			{"queue element numeric id", msg{"payload": "p", "priority": "H", "queue": []any{map[string]int{"id": 1}}}, []string{"invalid queue element"}},
			{"too many queues", msg{"payload": "p", "priority": "H", "queue": tooMany}, []string{"too many queues: maximum 10000"}},
			{"no payload", msg{"priority": "H", "queue": q}, []string{"undefined payload"}},
			{"null payload", msg{"priority": "H", "queue": q, "payload": nil}, []string{"undefined payload"}},
			{"payload 1 MiB + 5", msg{"priority": "H", "queue": q, "payload": strings.Repeat("a", 1048576+5)}, []string{"payload greater than 1048576"}},
			{"payload 1 MiB + 2 in bytes, not runes", msg{"priority": "H", "queue": q, "payload": strings.Repeat("é", 524289)}, []string{"payload greater than 1048576"}},
			{"expirationDate string", msg{"payload": "p", "priority": "H", "queue": q, "expirationDate": "1700000000"}, []string{"expirationDate is not a number"}},
			{"expirationDate fraction", msg{"payload": "p", "priority": "H", "queue": q, "expirationDate": 1.5}, []string{"expirationDate is not a number"}},
			{"expirationDate negative", msg{"payload": "p", "priority": "H", "queue": q, "expirationDate": -1}, []string{"expirationDate out of range"}},
			{"expirationDate too big", msg{"payload": "p", "priority": "H", "queue": q, "expirationDate": 2147483648}, []string{"expirationDate out of range"}},
			{"everything wrong", msg{"priority": "Z", "queue": "x", "expirationDate": 2147483648},
				[]string{"invalid priority", "invalid queue type", "undefined payload", "expirationDate out of range"}},
			{"several at once", msg{"queue": []any{1}, "payload": strings.Repeat("b", 1048577), "expirationDate": "x"},
				[]string{"undefined priority", "invalid queue element", "payload greater than 1048576", "expirationDate is not a number"}},
		}
		for _, c := range cases {
			r := n.postJSON(t, "/trans", c.body)
			t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) { expectJSON(t, r, 400, errs(c.want...)) })
		}
	})

	t.Run("ProvisionMalformedJSON", func(t *testing.T) {
		t.Parallel()
		for _, body := range []string{``, `{`, `{"payload": "p",}`, `{"payload" "p"}`, `not json`, `{"a":1} {"b":2}`} {
			r := n.postJSON(t, "/trans", body)
			m := object(t, r, 400)
			e, _ := m["errors"].([]any)
			if len(m) != 1 || len(e) != 1 {
				t.Fatalf("body %q: answer %s, want one error", body, r)
			}
			if s, _ := e[0].(string); !strings.Contains(strings.ToLower(s), "json") || len(s) < len("invalid JSON: x") {
				t.Errorf("body %q: error %q does not name the parse problem", body, s)
			}
		}
		// Valid JSON that is not an object.
		for _, body := range []string{`[]`, `"x"`, `42`, `null`} {
			r := n.postJSON(t, "/trans", body)
			if m := object(t, r, 400); len(m["errors"].([]any)) != 1 {
				t.Errorf("body %q: %s", body, r)
			}
		}
	})

	parallelQ(t, "ProvisionPayloadLimits", func(t *testing.T, q string) {
		big := strings.Repeat("x", 1048576)
		tid := n.send1(t, big, "H", q)
		p := n.pop(t, "", q, "timeout=1")
		if len(p.Data) != 1 || p.Data[0] != big || p.Transactions[0] != tid {
			t.Fatalf("1 MiB payload did not come back intact (got %d messages)", len(p.Data))
		}
		// Body over the 8 MiB request limit: 413.
		huge := jsonBody(t, msg{"payload": strings.Repeat("y", 9<<20), "priority": "H", "queue": target(q)})
		r := n.postJSON(t, "/trans", huge)
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("9 MiB body: %s, want 413", r)
		}
		expectPop(t, n.peek(t, "", q, ""), nil, nil)
	})

	parallelQ(t, "ProvisionNonStringPayload", func(t *testing.T, q string) {
		cases := []struct {
			raw  string
			want string
		}{
			{`{"b": [1, 2, {"c": null}], "a": "x"}`, `{"b":[1,2,{"c":null}],"a":"x"}`},
			{`[ 1, "two" , 3.50 ]`, `[1,"two",3.50]`},
			{`42`, `42`},
			{`true`, `true`},
		}
		var tids, want []string
		for _, c := range cases {
			body := `{"priority": "H", "queue": [{"id": "` + q + `"}], "payload": ` + c.raw + `}`
			tid := n.provision(t, "", body)
			tids, want = append(tids, tid), append(want, c.want)
			if got := object(t, n.get(t, "/trans/"+tid), 200)["payload"]; got != c.want {
				t.Errorf("GET /trans payload %q, want %q", got, c.want)
			}
		}
		expectPop(t, n.pop(t, "", q, "timeout=1"), want, tids)
	})

	parallelQ(t, "ProvisionExtraFieldsAsStrings", func(t *testing.T, q string) {
		body := `{"payload": "p", "priority": "L", "queue": [{"id": "` + q + `"}], "expirationDate": 2000000000,
			"foo": 1, "bar": {"a": [1, 2]}, "flag": true, "s": "str", "gone": null, "f": 1.25}`
		tid := n.provision(t, "", body)
		expectJSON(t, n.get(t, "/trans/"+tid), 200, map[string]string{
			"payload": "p", "priority": "L", "expirationDate": "2000000000",
			"foo": "1", "bar": `{"a":[1,2]}`, "flag": "true", "s": "str", "f": "1.25",
		})
	})

	parallelQ(t, "ProvisionManyExtraFields", func(t *testing.T, q string) {
		body := msg{"payload": "wide metadata", "priority": "H", "queue": target(q), "expirationDate": 2100000000}
		want := map[string]string{"payload": "wide metadata", "priority": "H", "expirationDate": "2100000000"}
		// 64 extra fields is the bound (issue 13 item 8; TestMetadataBounded
		// crosses it).
		for i := 0; i < 64; i++ {
			k := "field" + strconv.Itoa(i)
			body[k], want[k] = i, strconv.Itoa(i)
		}
		tid := n.provision(t, "", body)
		expectJSON(t, n.get(t, "/trans/"+tid), 200, want)
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"wide metadata"}, []string{tid})
	})

	t.Run("ProvisionGroupTargets", func(t *testing.T) {
		t.Parallel()
		g, a, b, c := qn(t, "g"), qn(t, "a"), qn(t, "b"), qn(t, "c")
		expectJSON(t, n.postJSON(t, "/group", map[string]any{"name": g, "queues": []string{a, b}}), 200, map[string]string{"ok": "group stored"})
		tid := n.provision(t, "", msg{"payload": "to-group", "priority": "H", "groups": []string{g}, "queue": target(b, c)})
		href := func(q string) string { return "http://" + n.host + "/queue/" + q }
		expectJSON(t, n.get(t, "/trans/"+tid+"/state"), 200, map[string]any{"ok": true, "data": map[string]string{a: "Pending", b: "Pending", c: "Pending"}})
		for _, q := range []string{a, b, c} {
			expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"to-group"}, []string{tid})
		}
		m := object(t, n.get(t, "/trans/"+tid+"?queues=All"), 200)
		expectJSON(t, response{Status: 200, Header: http.Header{"Content-Type": {jsonCT}}, Body: jsonBody(t, m["queues"])}, 200, map[string]any{
			a: map[string]string{"state": "Delivered", "href": href(a)},
			b: map[string]string{"state": "Delivered", "href": href(b)},
			c: map[string]string{"state": "Delivered", "href": href(c)},
		})
		// Only groups, all unknown or empty: no target at all.
		r := n.postJSON(t, "/trans", msg{"payload": "x", "priority": "H", "groups": []string{qn(t, "nosuchgroup")}})
		expectJSON(t, r, 400, errs("undefined queue"))
		r = n.postJSON(t, "/trans", msg{"payload": "x", "priority": "H", "groups": []string{}})
		expectJSON(t, r, 400, errs("undefined queue"))
	})

	t.Run("ProvisionInvalidQueueID", func(t *testing.T) {
		t.Parallel()
		for _, id := range []string{"", "a b", "a/b", "a?b", "a#b", strings.Repeat("q", 257), "tab\there", "ünï"} {
			r := n.postJSON(t, "/trans", msg{"payload": "p", "priority": "H", "queue": target(id)})
			m := object(t, r, 400)
			e, _ := m["errors"].([]any)
			if len(m) != 1 || len(e) != 1 || !strings.Contains(fmt.Sprint(e[0]), "invalid queue id") {
				t.Errorf("queue id %q: %s, want one 'invalid queue id' error", id, r)
			}
		}
		// The longest valid id works.
		long := strings.Repeat("L", 256)
		n.send1(t, "p", "H", long)
		if got := n.pop(t, "", long, "timeout=1"); len(got.Data) != 1 {
			t.Fatalf("256-byte queue id: %+v", got)
		}
	})

	t.Run("SpecialCharacterQueueIDs", func(t *testing.T) {
		t.Parallel()
		base := qn(t, "")
		for _, suffix := range []string{":colon", "%percent", "&amp=eq", "+plus", ";semi", "@at", "~tilde", "!bang'quote\"dq", "(paren)*star", "$dollar,comma", "[br]{ace}|pipe^caret`tick\\bs<lt>"} {
			id := base + suffix
			path := "/queue/" + url.PathEscape(id)
			tid := n.send1(t, "special "+suffix, "L", id)
			info := object(t, n.get(t, path), 200)
			if info["size"] != float64(1) {
				t.Errorf("id %q: GET %s: %v", id, path, info)
				continue
			}
			st := object(t, n.get(t, "/trans/"+tid+"?queues=All"), 200)["queues"]
			want := map[string]any{id: map[string]string{"state": "Pending", "href": "http://" + n.host + path}}
			if d := diffJSON(t, want, st); d != "" {
				t.Errorf("id %q: queues (-want +got):\n%s", id, d)
			}
			// The href works as a link.
			href := want[id].(map[string]string)["href"]
			if got := object(t, n.get(t, strings.TrimPrefix(href, "http://"+n.host)), 200)["size"]; got != float64(1) {
				t.Errorf("id %q: href %s leads to a queue of size %v", id, href, got)
			}
			expectPop(t, parsePop(t, n.send(t, req{method: http.MethodPost, path: path + "/pop?timeout=1"})), []string{"special " + suffix}, []string{tid})
		}
	})

	t.Run("Provision10000Queues", func(t *testing.T) {
		t.Parallel()
		ids := make([]string, 10000)
		for i := range ids {
			ids[i] = qn(t, strconv.Itoa(i))
		}
		tid := n.provision(t, "", msg{"payload": "wide", "priority": "L", "queue": target(ids...)})
		expectJSON(t, n.get(t, "/trans/"+tid+"/state/summary"), 200, map[string]any{"ok": true, "data": map[string]int{"totalNotifications": 10000, "Pending": 10000}})
		expectPop(t, n.pop(t, "", ids[9999], "timeout=1"), []string{"wide"}, []string{tid})
	})

}

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
