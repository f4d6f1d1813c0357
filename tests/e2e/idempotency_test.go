package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// TestIdempotencyAcrossNodes: concurrent repeats of one Idempotency-Key on
// two gateway processes provision once (counted in Redis) and all answer
// the same tid, also for deferred provisioning; another body is a 409; after
// POPBOX_IDEMPOTENCY_WINDOW the key is forgotten.
func TestIdempotencyAcrossNodes(t *testing.T) {
	r := testenv.StartRedis(t)
	rc := r.Client()
	t.Cleanup(func() { rc.Close() })
	window := testenv.WithEnv("POPBOX_IDEMPOTENCY_WINDOW=2s")
	nodes := []*node{startNode(t, r.URL(), window), startNode(t, r.URL(), window)}
	ctx := context.Background()
	const repeats = 20
	queues := []string{qn(t, "a"), qn(t, "b"), qn(t, "c")}
	body := jsonBody(t, map[string]any{"payload": "once", "priority": "L", "queue": target(queues...)})
	post := func(path, key string, body []byte) req {
		return req{method: http.MethodPost, path: path, ctype: jsonCT, body: body, header: http.Header{"Idempotency-Key": {key}}}
	}
	send := func(n *node, path, key string, body []byte) response { return n.send(t, post(path, key, body)) }
	// concurrently sends repeats of one request, alternating the nodes
	// (no t.Fatal outside the test's goroutine).
	concurrently := func(path, key string) []response {
		out := make([]response, repeats)
		fail := make([]error, repeats)
		var wg sync.WaitGroup
		for i := range repeats {
			wg.Go(func() { out[i], fail[i] = nodes[i%2].try(post(path, key, body)) })
		}
		wg.Wait()
		for _, err := range fail {
			if err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	entries := func() []int64 {
		out := make([]int64, len(queues))
		for i, q := range queues {
			n, err := rc.LLen(ctx, redisq.KeysOfQueue("UNSEC:"+q).Low).Result()
			if err != nil {
				t.Fatal(err)
			}
			out[i] = n
		}
		return out
	}

	key := "e2e-" + queues[0]
	answers := concurrently("/trans", key)
	first := object(t, answers[0], http.StatusOK)["data"]
	for i, a := range answers {
		if got := object(t, a, http.StatusOK)["data"]; got != first {
			t.Fatalf("repeat %d answered %v, repeat 0 %v", i, got, first)
		}
	}
	if got := fmt.Sprint(entries()); got != "[1 1 1]" {
		t.Fatalf("queue entries after %d concurrent repeats on two nodes: %s, want [1 1 1]", repeats, got)
	}

	other := jsonBody(t, map[string]any{"payload": "twice?", "priority": "L", "queue": target(queues...)})
	expectJSON(t, send(nodes[1], "/trans", key, other), http.StatusConflict, errs("idempotency key reused with another body"))
	if got := fmt.Sprint(entries()); got != "[1 1 1]" {
		t.Fatalf("queue entries after the 409: %s, want [1 1 1]", got)
	}

	// Deferred: concurrent repeats leave one deferral, provisioned once.
	dkey := "e2e-deferred-" + queues[0]
	danswers := concurrently("/trans?delay=1", dkey)
	dtid := object(t, danswers[0], http.StatusOK)["data"]
	for i, a := range danswers {
		if got := object(t, a, http.StatusOK)["data"]; got != dtid {
			t.Fatalf("deferred repeat %d answered %v, repeat 0 %v", i, got, dtid)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for fmt.Sprint(entries()) != "[2 2 2]" {
		if time.Now().After(deadline) {
			t.Fatalf("queue entries %v 20s after a 1s deferral, want [2 2 2]", entries())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The job removes the deferral in its own round trip after the
	// provisioning that made the entries visible: poll for it too.
	for {
		n, err := rc.ZCard(ctx, "pb:{sys}:deferred").Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deferrals left after the deferred provisioning: %d (%v), want 0", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// After the 2s window: the same request provisions again.
	deadline = time.Now().Add(20 * time.Second)
	for {
		a := send(nodes[0], "/trans", key, body)
		if got := object(t, a, http.StatusOK)["data"]; got != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key still answered the first tid 20s after a 2s window")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := fmt.Sprint(entries()); got != "[3 3 3]" {
		t.Fatalf("queue entries after the window: %s, want [3 3 3]", got)
	}
}
