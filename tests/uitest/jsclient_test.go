package uitest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/popbox/popbox/internal/testenv"
)

// jsClientPage is the page of TestJSClient: it loads the client's ES module
// from clients/js/src (the package source itself) and exposes it as
// window.PB.
const jsClientPage = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>popbox js client</title>
<script type="module">import * as PB from './js/src/popbox.js'; window.PB = PB; window.loaded = true;</script>
</head><body></body></html>`

// TestJSClient drives the JavaScript client (clients/js) in headless
// Chromium against a real gateway and redis-server, from a page of another
// origin (the gateway allows it with POPBOX_CORS_ORIGINS, as a real web
// app would need): SSE, per-queue WebSocket and two multiplexed
// subscriptions receive what the client provisions (a repeat with an
// Idempotency-Key answers the first id); the gateway restarts
// and every subscription reconnects by itself and receives again, the two
// multiplexed queues still on one socket; reliable deliveries are acked
// in-band (WebSocket) and over HTTP (SSE) and end Delivered; a reliable
// delivery left unacked comes again after its ack timeout.
func TestJSClient(t *testing.T) {
	bin := chromiumPath(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/js/", http.StripPrefix("/js/", http.FileServer(http.Dir(filepath.Join(root, "clients", "js")))))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(jsClientPage))
	})
	site := httptest.NewServer(mux)
	t.Cleanup(site.Close) // after the browser has stopped (openPage)

	r := testenv.StartRedis(t)
	g := testenv.StartNode(t, r.URL(), testenv.WithEnv("POPBOX_CORS_ORIGINS="+site.URL))

	p := openPage(t, bin, "jsclient", 120*time.Second)
	p.run("open the client page", chromedp.Navigate(site.URL+"/"))
	p.waitJS("the module to load", `window.loaded === true`)

	// await runs an async function body in the page and returns its value.
	await := func(what, body string, res any) {
		t.Helper()
		p.run(what, chromedp.Evaluate(`(async () => {`+body+`})()`, res,
			func(e *runtime.EvaluateParams) *runtime.EvaluateParams { return e.WithAwaitPromise(true) }))
	}
	await("set up the client", fmt.Sprintf(`
		const T = window.T = {got: {}, states: {}, errors: {}, subs: {}, sockets: 0};
		// Count the sockets the client opens (the browser's own WebSocket).
		class Counting extends WebSocket { constructor(u) { super(u); T.sockets++; } }
		T.pb = new PB.PopBox(%s, {WebSocket: Counting, backoff: {min: 100, max: 1000}});
		T.sub = (name, queue, opts) => {
			T.got[name] = []; T.states[name] = []; T.errors[name] = [];
			T.subs[name] = T.pb.subscribe(queue, {...opts,
				onMessage: (m) => { T.got[name].push(m); if (opts.ack) m.ack(); },
				onStatus: (s) => T.states[name].push(s),
				onError: (e) => T.errors[name].push(e.name + ': ' + e.message)});
		};
		T.has = (name, tid) => T.got[name].some((m) => m.transaction === tid);
		T.count = (name, tid) => T.got[name].filter((m) => m.transaction === tid).length;
		return true;`, js(g.URL)), nil)

	names := []string{"sse", "ws", "muxA", "muxB"}
	queues := map[string]string{}
	for _, n := range names {
		queues[n] = "js-" + strings.ToLower(n)
	}
	await("subscribe", fmt.Sprintf(`
		T.sub('sse', %s, {transport: 'sse'});
		T.sub('ws', %s, {transport: 'ws'});
		T.sub('muxA', %s, {});
		T.sub('muxB', %s, {transport: 'mux'});
		await Promise.all(Object.values(T.subs).map((s) => s.ready()));
		return true;`, js(queues["sse"]), js(queues["ws"]), js(queues["muxA"]), js(queues["muxB"])), nil)
	if n := sockets(p); n != 2 {
		t.Errorf("the client opened %d WebSockets, want 2 (one per-queue, one multiplexed)", n)
	}
	wantConnections(t, g, map[string]int64{"sse": 1, "ws": 1, "wsmux": 1})

	// provision sends one message to every queue through the client.
	provision := func(payload string) string {
		t.Helper()
		var tid string
		qs, _ := json.Marshal(mapValues(queues, names))
		await("provision "+payload, fmt.Sprintf(`return await T.pb.provision({payload: %s, queues: %s});`, js(payload), qs), &tid)
		if !testenv.IsTransactionID(tid) {
			t.Fatalf("provision answered %q", tid)
		}
		return tid
	}
	received := func(tid string) {
		t.Helper()
		for _, n := range names {
			p.waitJS(n+" to receive "+tid, fmt.Sprintf(`T.has(%s, %s)`, js(n), js(tid)))
		}
	}
	tid1 := provision("before the restart")
	received(tid1)

	// A retried provisioning with an Idempotency-Key (a header the
	// cross-origin preflight must allow) answers the first call's id.
	var same []string
	await("provision twice with one key", `const k = 'js-key-' + Date.now();
		const m = {payload: 'once', queues: ['js-idem']};
		return [await T.pb.provision(m, {idempotencyKey: k}), await T.pb.provision(m, {idempotencyKey: k})];`, &same)
	if len(same) != 2 || !testenv.IsTransactionID(same[0]) || same[0] != same[1] {
		t.Errorf("two provisions with one Idempotency-Key answered %v, want one id twice", same)
	}

	// --- The gateway restarts (SIGTERM, then a new process on the same
	// port): every subscription goes reconnecting, then connected again.
	g.Restart(t)
	for _, n := range names {
		p.waitJS(n+" to reconnect", fmt.Sprintf(`(() => { const st = T.states[%[1]s];
			return T.subs[%[1]s].state === 'connected' && st.includes('reconnecting') && st[st.length - 1] === 'connected'; })()`, js(n)))
	}
	tid2 := provision("after the restart")
	received(tid2)
	if n := sockets(p); n < 4 {
		t.Errorf("%d WebSockets opened in all, want at least 4 (two before and two after the restart)", n)
	}
	wantConnections(t, g, map[string]int64{"sse": 1, "ws": 1, "wsmux": 1})
	var errs map[string][]string
	p.eval(`T.errors`, &errs)
	t.Logf("errors reported while the gateway restarted: %v", errs)
	for _, n := range names {
		if len(errs[n]) == 0 {
			t.Errorf("%s: no ConnectionError reported for the restart", n)
		}
	}
	await("close the plain subscriptions", `T.pb.close(); return true;`, nil)

	// --- Reliable mode: acked in-band (multiplexed WebSocket) and over
	// HTTP (SSE); both end Delivered.
	await("reliable subscriptions", `
		T.sub('relMux', 'js-rel-mux', {reliable: true, timeoutACK: 30, ack: true});
		T.sub('relSSE', 'js-rel-sse', {transport: 'sse', reliable: true, timeoutACK: 30, ack: true});
		await Promise.all([T.subs.relMux.ready(), T.subs.relSSE.ready()]);
		return true;`, nil)
	var relTid string
	await("provision reliable", `return await T.pb.provision({payload: 'ack me', queues: ['js-rel-mux', 'js-rel-sse']});`, &relTid)
	for _, n := range []string{"relMux", "relSSE"} {
		p.waitJS(n+" to receive", fmt.Sprintf(`T.has(%s, %s)`, js(n), js(relTid)))
	}
	waitState(t, g, relTid, map[string]string{"js-rel-mux": "Delivered", "js-rel-sse": "Delivered"})
	// The HTTP ack's answer may reach the page after the state changed.
	p.waitJS("no delivery pending once acked", `T.subs.relMux.pending.length === 0 && T.subs.relSSE.pending.length === 0`)

	// --- Unacked: the delivery goes back to the queue at its ack timeout
	// and comes again (on this connection or the next one, after the
	// gateway ended the stream); acked then, it ends Delivered.
	await("unacked subscription", `
		T.sub('noAck', 'js-no-ack', {transport: 'ws', reliable: true, timeoutACK: 1});
		await T.subs.noAck.ready();
		return true;`, nil)
	var lost string
	await("provision unacked", `return await T.pb.provision({payload: 'never acked', queues: ['js-no-ack']});`, &lost)
	p.run("the unacked message to come again", chromedp.Poll(fmt.Sprintf(`T.count('noAck', %s) >= 2`, js(lost)), nil,
		chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	await("ack it at last", `await T.got.noAck[T.got.noAck.length - 1].ack(); return true;`, nil)
	waitState(t, g, lost, map[string]string{"js-no-ack": "Delivered"})
	await("close", `T.pb.close(); return true;`, nil)

	if errs := p.takeErrors(); len(errs) > 0 {
		// The browser logs the refused connections of the restart; only
		// uncaught exceptions are failures of the client.
		for _, e := range errs {
			if strings.HasPrefix(e, "exception") {
				t.Errorf("page exception: %s", e)
			}
		}
	}
}

func sockets(p *page) int {
	var n int
	p.eval(`T.sockets`, &n)
	return n
}

func mapValues(m map[string]string, keys []string) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// hasAll tells whether got holds every key of want with want's value.
func hasAll[V comparable](got, want map[string]V) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// wantConnections waits until GET / counts the given open connections.
func wantConnections(t *testing.T, g *testenv.Node, want map[string]int64) {
	t.Helper()
	var got map[string]int64
	testenv.Eventually(t, 15*time.Second, fmt.Sprintf("connections %v", want), func() bool {
		var info struct{ Connections map[string]int64 }
		if g.TryGetJSON(context.Background(), "/", &info) != nil {
			return false
		}
		got = info.Connections
		return hasAll(got, want)
	}, func() string { return fmt.Sprint(got) })
}

// waitState waits until the transaction is in the given state on each queue.
func waitState(t *testing.T, g *testenv.Node, tid string, want map[string]string) {
	t.Helper()
	var got map[string]string
	testenv.Eventually(t, 15*time.Second, fmt.Sprintf("%s states %v", tid, want), func() bool {
		var st struct{ Data map[string]string }
		if g.TryGetJSON(context.Background(), "/trans/"+tid+"/state", &st) != nil {
			return false
		}
		got = st.Data
		return hasAll(got, want)
	}, func() string { return fmt.Sprint(got) })
}
