package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
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
