package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// postTrans sends POST url with the body and the Idempotency-Key header
// values (none when keys is empty) and returns the status and the body.
func postTrans(t *testing.T, cl *http.Client, url, body string, keys ...string) (int, string) {
	t.Helper()
	st, b, err := tryPostTrans(cl, url, body, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return st, b
}

// tryPostTrans is postTrans for other goroutines than the test's.
func tryPostTrans(cl *http.Client, url, body string, keys ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// tidOf returns the tid of a {"ok": true, "data": "<tid>"} answer.
func tidOf(t *testing.T, status int, body string) string {
	t.Helper()
	var v struct {
		OK   bool
		Data string
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || !v.OK || v.Data == "" {
		t.Fatalf("answer %d %s, want 200 {ok, data: tid}", status, body)
	}
	return v.Data
}

// provisionTid is postTrans that wants a 200 and returns its tid.
func provisionTid(t *testing.T, cl *http.Client, url, body string, keys ...string) string {
	t.Helper()
	st, b := postTrans(t, cl, url, body, keys...)
	return tidOf(t, st, b)
}

// TestIdempotencyKey: repeats of one Idempotency-Key, sent concurrently to
// two nodes and formatted differently, provision once and all answer the
// first tid; another body is a 409 with the contract's exact error; keys
// are per org and per port; deferred provisioning is covered; bad keys are
// 400s.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	rc := r.Client()
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	a := startTestNode(t, r.URL(), nodeSetup{})
	b := startTestNode(t, r.URL(), nodeSetup{})
	cl := &http.Client{Timeout: 30 * time.Second}
	tlsCl := a.secure.Client() // trusts the httptest certificate (the same for b)
	llen := func(full string) int64 {
		n, err := rc.LLen(ctx, redisq.KeysOfQueue(full).High).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	bodies := []string{
		`{"payload":"hi","priority":"H","queue":[{"id":"idem1"}],"ref":{"a":1,"b":2}}`,
		`{ "queue": [ {"id": "idem1"} ], "priority": "H", "ref": {"b": 2, "a": 1}, "payload": "hi" }`,
	}
	const n = 16
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		node := a
		if i%2 == 1 {
			node = b
		}
		wg.Go(func() {
			st, body, err := tryPostTrans(cl, node.plain.URL+"/trans", bodies[(i/2)%2], "order-42")
			answers[i] = answer{st, body, err}
		})
	}
	wg.Wait()
	tids := make([]string, n)
	for i, a := range answers {
		if a.err != nil {
			t.Fatal(a.err)
		}
		tids[i] = tidOf(t, a.status, a.body)
	}
	for i := range n {
		if tids[i] != tids[0] {
			t.Fatalf("call %d answered %s, call 0 answered %s", i, tids[i], tids[0])
		}
	}
	if got := llen("UNSEC:idem1"); got != 1 {
		t.Fatalf("queue idem1 holds %d entries after %d repeats, want 1", got, n)
	}

	// Same key, another body: 409 with the exact error, nothing provisioned.
	st, body := postTrans(t, cl, b.plain.URL+"/trans", `{"payload":"other","priority":"H","queue":[{"id":"idem1"}]}`, "order-42")
	if st != http.StatusConflict || body != `{"errors":["idempotency key reused with another body"]}`+"\n" {
		t.Errorf("other body: %d %q, want 409 idempotency key reused with another body", st, body)
	}
	if got := llen("UNSEC:idem1"); got != 1 {
		t.Errorf("queue idem1 holds %d entries after the conflict, want 1", got)
	}

	// The key is per org and per port: each of these provisions anew.
	orgTid := provisionTid(t, cl, a.plain.URL+"/org/acme/trans", bodies[0], "order-42")
	orgTid2 := provisionTid(t, cl, b.plain.URL+"/org/acme/trans", bodies[1], "order-42")
	secTid := provisionTid(t, tlsCl, a.secure.URL+"/trans", bodies[0], "order-42")
	secTid2 := provisionTid(t, tlsCl, b.secure.URL+"/trans", bodies[0], "order-42")
	if orgTid == tids[0] || secTid == tids[0] || orgTid == secTid || orgTid2 != orgTid || secTid2 != secTid {
		t.Errorf("plain %s, org %s/%s, secure %s/%s: want one new tid per org and per port", tids[0], orgTid, orgTid2, secTid, secTid2)
	}
	if llen("acme:UNSEC:idem1") != 1 || llen("SEC:idem1") != 1 {
		t.Errorf("org queue %d entries, secure queue %d, want 1 each", llen("acme:UNSEC:idem1"), llen("SEC:idem1"))
	}

	// Deferred provisioning: one deferral; another delay is another body.
	deferred := func() int64 {
		n, err := rc.ZCard(ctx, "pb:{sys}:deferred").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deferred()
	d1 := provisionTid(t, cl, a.plain.URL+"/trans?delay=3600", bodies[0], "later-1")
	d2 := provisionTid(t, cl, b.plain.URL+"/trans?delay=3600", bodies[1], "later-1")
	if d1 != d2 || deferred()-before != 1 {
		t.Errorf("deferred repeats answered %s and %s, %d deferrals, want one", d1, d2, deferred()-before)
	}
	if st, body := postTrans(t, cl, a.plain.URL+"/trans?delay=60", bodies[0], "later-1"); st != http.StatusConflict {
		t.Errorf("same key, other delay: %d %s, want 409", st, body)
	}

	// Bad keys: 400 with a clear error; the 255-byte limit holds exactly.
	provisionTid(t, cl, a.plain.URL+"/trans", bodies[0], strings.Repeat("k", 255))
	for name, keys := range map[string][]string{
		"too long":  {strings.Repeat("k", 256)},
		"space":     {"a b"},
		"tab":       {"a\tb"},
		"non-ASCII": {"clé"},
		"twice":     {"k1", "k2"},
	} {
		st, body := postTrans(t, cl, a.plain.URL+"/trans", bodies[0], keys...)
		if st != http.StatusBadRequest || !strings.Contains(body, "invalid Idempotency-Key header") {
			t.Errorf("%s: %d %s, want 400 invalid Idempotency-Key header", name, st, body)
		}
	}
	// Without a key every call provisions, as before.
	before = llen("UNSEC:idem1")
	provisionTid(t, cl, a.plain.URL+"/trans", bodies[0])
	provisionTid(t, cl, a.plain.URL+"/trans", bodies[0])
	if got := llen("UNSEC:idem1") - before; got != 2 {
		t.Errorf("two calls without a key added %d entries, want 2", got)
	}
}

// TestIdempotencyWindow: after POPBOX_IDEMPOTENCY_WINDOW the key is
// forgotten and the same request provisions again.
func TestIdempotencyWindow(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	a := startTestNode(t, r.URL(), nodeSetup{opts: gateway.Options{IdempotencyWindow: time.Second}})
	cl := &http.Client{Timeout: 30 * time.Second}
	body := `{"payload":"w","priority":"L","queue":[{"id":"win"}]}`
	first := provisionTid(t, cl, a.plain.URL+"/trans", body, "w-1")
	deadline := time.Now().Add(15 * time.Second)
	for {
		tid := provisionTid(t, cl, a.plain.URL+"/trans", body, "w-1")
		if tid != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key still answered the first tid 15s after a 1s window")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
