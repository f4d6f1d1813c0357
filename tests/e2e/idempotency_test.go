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

	// sameTid checks that every answer is a 200 with the tid of the first.
	sameTid := func(what string, answers []response) any {
		first := object(t, answers[0], http.StatusOK)["data"]
		for i, a := range answers {
			if got := object(t, a, http.StatusOK)["data"]; got != first {
				t.Fatalf("%srepeat %d answered %v, repeat 0 %v", what, i, got, first)
			}
		}
		return first
	}

	key := "e2e-" + queues[0]
	first := sameTid("", concurrently("/trans", key))
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
	sameTid("deferred ", concurrently("/trans?delay=1", dkey))
	var seen []int64
	start := time.Now()
	eventually(t, 20*time.Second, "queue entries [2 2 2] after a 1s deferral", func() bool {
		seen = entries()
		return fmt.Sprint(seen) == "[2 2 2]"
	}, func() string { return fmt.Sprint(seen) })
	// The job removes the deferral in its own round trip after the
	// provisioning that made the entries visible: poll for it too.
	var deferrals int64
	var zerr error
	eventually(t, 20*time.Second-time.Since(start), "no deferral left after the deferred provisioning", func() bool {
		deferrals, zerr = rc.ZCard(ctx, "pb:{sys}:deferred").Result()
		return zerr == nil && deferrals == 0
	}, func() string { return fmt.Sprintf("%d (%v)", deferrals, zerr) })

	// After the 2s window: the same request provisions again.
	eventually(t, 20*time.Second, "the key answers a new tid after its 2s window", func() bool {
		a := send(nodes[0], "/trans", key, body)
		return object(t, a, http.StatusOK)["data"] != first
	})
	if got := fmt.Sprint(entries()); got != "[3 3 3]" {
		t.Fatalf("queue entries after the window: %s, want [3 3 3]", got)
	}
}
