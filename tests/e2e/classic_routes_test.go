package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// classicRoutes checks API.md 0 and 1.3: org namespaces, queue ids on every route, HTML pages, deferred deletes, deploy info.
func classicRoutes(t *testing.T, n *node) {
	parallelQ(t, "OrgNamespaces", func(t *testing.T, q string) {
		acme, other := "/org/acme", "/org/other-org"
		tAcme := n.provision(t, acme, msg{"payload": "acme msg", "priority": "H", "queue": target(q)})
		tRoot := n.send1(t, "root msg", "H", q)
		if n.queueInfo(t, acme, q)["size"] != float64(1) || n.queueInfo(t, "", q)["size"] != float64(1) || n.queueInfo(t, other, q)["size"] != float64(0) {
			t.Fatalf("sizes: acme %v root %v other %v", n.queueInfo(t, acme, q)["size"], n.queueInfo(t, "", q)["size"], n.queueInfo(t, other, q)["size"])
		}
		expectPop(t, n.pop(t, other, q, "timeout=0"), nil, nil)
		expectPop(t, n.pop(t, "", q, "timeout=1"), []string{"root msg"}, []string{tRoot})
		expectPop(t, n.pop(t, acme, q, "timeout=1"), []string{"acme msg"}, []string{tAcme})
		// blocked is per namespace as well.
		ch := n.asyncPop(context.Background(), acme, q, "timeout=2")
		eventually(t, 5*time.Second, "org queue blocked", func() bool { return n.queueInfo(t, acme, q)["blocked"] == true })
		if n.queueInfo(t, "", q)["blocked"] != false {
			t.Errorf("a pop on /org/acme/queue/%s shows the root queue as blocked", q)
		}
		waitPop(t, ch, 10*time.Second)
		// A transaction belongs to its org (API.md 0): elsewhere it is unknown.
		if got := object(t, n.get(t, acme+"/trans/"+tAcme), 200)["payload"]; got != "acme msg" {
			t.Errorf("GET /org/acme/trans of an acme transaction: payload %v", got)
		}
		for _, prefix := range []string{"", other} {
			if got := object(t, n.get(t, prefix+"/trans/"+tAcme), 200); len(got) != 0 {
				t.Errorf("GET %s/trans of an acme transaction: %v, want {}", prefix, got)
			}
		}
		st := object(t, n.get(t, acme+"/trans/"+tAcme+"?queues=All"), 200)["queues"].(map[string]any)
		e, _ := st[q].(map[string]any)
		if len(st) != 1 || e["state"] != "Delivered" || !strings.HasPrefix(fmt.Sprint(e["href"]), "http://"+n.host+"/") ||
			!strings.HasSuffix(fmt.Sprint(e["href"]), "/queue/"+q) {
			t.Errorf("org transaction queues: %v", st)
		}
		// Groups are per namespace too.
		g := qn(t, "g")
		expectJSON(t, n.postJSON(t, acme+"/group", map[string]any{"name": g, "queues": []string{q}}), 200, map[string]string{"ok": "group stored"})
		expectJSON(t, n.get(t, acme+"/group/"+g), 200, map[string]any{"name": g, "queues": []string{q}})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": []string{}})
		tg := n.provision(t, acme, msg{"payload": "via org group", "priority": "L", "groups": []string{g}})
		expectPop(t, n.pop(t, acme, q, "timeout=1"), []string{"via org group"}, []string{tg})
		// A bad org name.
		r := n.get(t, "/org/bad!org/queue/"+q)
		if m := object(t, r, 400); len(m["errors"].([]any)) != 1 {
			t.Errorf("bad org: %s", r)
		}
	})

	t.Run("OrgCannotReachOtherNamespaces", func(t *testing.T) {
		t.Parallel()
		// Queue ids may hold ':', so an org named like a namespace marker
		// must not open a door into the root (or secure) namespace:
		// /org/UNSEC/queue/q would be the root queue "UNSEC:q", and
		// /org/SEC/queue/q on the plain port the secure box "UNSEC:q".
		q := qn(t, "")
		tid := n.send1(t, "root only", "H", "UNSEC:"+q)
		for _, org := range []string{"UNSEC", "SEC"} {
			r := n.get(t, "/org/"+org+"/queue/"+q)
			if r.Status == http.StatusOK {
				if size := object(t, r, 200)["size"]; size != float64(0) {
					t.Errorf("/org/%s/queue/%s sees the root queue UNSEC:%s (size %v)", org, q, q, size)
				}
				continue
			}
			if m := object(t, r, 400); len(m["errors"].([]any)) != 1 {
				t.Errorf("/org/%s: %s", org, r)
			}
		}
		pr := n.send(t, req{method: http.MethodPost, path: "/org/UNSEC/queue/" + q + "/pop?timeout=0"})
		if pr.Status == http.StatusOK {
			expectPop(t, parsePop(t, pr), nil, nil)
		}
		expectPop(t, n.pop(t, "", "UNSEC:"+q, "timeout=1"), []string{"root only"}, []string{tid})
	})

	t.Run("InvalidQueueIDOnRoutes", func(t *testing.T) {
		t.Parallel()
		long := strings.Repeat("q", 257)
		for _, rq := range []req{
			{method: http.MethodGet, path: "/queue/bad%20id"},
			{method: http.MethodGet, path: "/queue/" + long},
			{method: http.MethodGet, path: "/queue/a%23b/peek"},
			{method: http.MethodPost, path: "/queue/a%3Fb/pop?timeout=30"},
			{method: http.MethodPost, path: "/queue/a%2Fb/pop?timeout=30"},
			{method: http.MethodGet, path: "/org/acme/queue/bad%20id"},
		} {
			start := time.Now()
			r := n.send(t, rq)
			m := object(t, r, 400)
			e, _ := m["errors"].([]any)
			if len(m) != 1 || len(e) != 1 || !strings.Contains(fmt.Sprint(e[0]), "invalid queue id") {
				t.Errorf("%s %s: %s", rq.method, rq.path, r)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s %s took %v: a bad queue id must be refused at once", rq.method, rq.path, took)
			}
		}
	})

	parallelQ(t, "HTMLPages", func(t *testing.T, q string) {
		tid := n.provision(t, "", msg{"payload": "<hello & welcome>", "priority": "H", "queue": target(q), "custom": "field-value"})
		page := func(path string) string {
			r := n.send(t, req{method: http.MethodGet, path: path, accept: "text/html,application/xhtml+xml,*/*;q=0.8"})
			if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("GET %s as a browser: %d %q", path, r.Status, r.Header.Get("Content-Type"))
			}
			return string(r.Body)
		}
		tp := page("/trans/" + tid)
		for _, want := range []string{tid, "&lt;hello &amp; welcome&gt;", "field-value", q, "Pending"} {
			if !strings.Contains(tp, want) {
				t.Errorf("transaction page lacks %q", want)
			}
		}
		if strings.Contains(tp, "<hello & welcome>") {
			t.Errorf("transaction page does not escape the payload")
		}
		qp := page("/queue/" + q)
		for _, want := range []string{q, tid} {
			if !strings.Contains(qp, want) {
				t.Errorf("queue page lacks %q", want)
			}
		}
		if !strings.Contains(page("/trans/"+uuid.NewString()), "<html") {
			t.Errorf("unknown transaction page is not HTML")
		}
		// The renderer's headers reach the client.
		r := n.send(t, req{method: http.MethodGet, path: "/trans/" + tid, accept: "text/html"})
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("transaction page: X-Content-Type-Options %q, want nosniff", got)
		}
		// JSON clients still get JSON.
		object(t, n.send(t, req{method: http.MethodGet, path: "/queue/" + q, accept: "application/json"}), 200)
	})

	parallelQ(t, "HTMLQueuePageHeaders", func(t *testing.T, q string) {
		n.send1(t, "p", "H", q)
		r := n.send(t, req{method: http.MethodGet, path: "/queue/" + q, accept: "text/html"})
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("queue page: X-Content-Type-Options %q, want nosniff", got)
		}
	})

	t.Run("DeleteDeferred", func(t *testing.T) {
		t.Parallel()
		// Deleting a transaction whose ?delay= has not run out yet cancels it.
		q := qn(t, "")
		tid := n.provisionAt(t, "/trans?delay=1", msg{"payload": "cancelled", "priority": "H", "queue": target(q)})
		expectJSON(t, n.delete(t, "/trans/"+tid), 200, map[string]any{"ok": true})
		start := time.Now()
		expectPop(t, n.pop(t, "", q, "timeout=3"), nil, nil)
		if time.Since(start) < 2500*time.Millisecond {
			t.Errorf("pop answered early")
		}
		expectJSON(t, n.get(t, "/trans/"+tid), 200, map[string]any{})
	})

	t.Run("DeployInfo", func(t *testing.T) {
		t.Parallel()
		m := object(t, n.get(t, "/"), 200)
		if v, _ := m["version"].(string); v == "" {
			t.Errorf("GET /: no version: %v", m)
		}
		if _, ok := m["uptimeSeconds"].(float64); !ok {
			t.Errorf("GET /: no uptimeSeconds: %v", m)
		}
		rd, _ := m["redis"].(map[string]any)
		nodes, _ := rd["nodes"].([]any)
		if len(nodes) != 1 {
			t.Fatalf("GET /: redis nodes %v", rd)
		}
		nd := nodes[0].(map[string]any)
		if nd["reachable"] != true || nd["version"] == "" || nd["version"] == nil {
			t.Errorf("GET /: redis node %v", nd)
		}
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		hr, _ := http.NewRequest(http.MethodGet, n.base+"/", nil)
		hr.Header.Set("Accept", "text/html")
		resp, err := hc.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 3 || !strings.HasPrefix(resp.Header.Get("Location"), "/ui") {
			t.Errorf("GET / as a browser: %d Location %q, want a redirect to the dashboard", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}
