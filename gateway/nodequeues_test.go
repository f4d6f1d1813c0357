package gateway_test

import (
	"context"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

type nodeQueuesAnswer struct {
	Node   string
	Queues []struct {
		Queue   string
		Org     string
		Secure  bool
		Waiters int
	}
	Truncated bool
}

// TestNodeQueues: GET /node/queues lists the queues with consumers waiting
// on this node (any transport, any org), busiest first, and forgets them
// when they leave; with an administrator configured it needs the
// administrator's credentials.
func TestNodeQueues(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(method, path string) {
		req, _ := http.NewRequestWithContext(ctx, method, g.URL+path, nil)
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body) // until the test cancels
				resp.Body.Close()
			}
		}()
	}
	open(http.MethodGet, "/queue/nq-sse/events")
	open(http.MethodPost, "/queue/nq-poll/pop?timeout=60")
	open(http.MethodPost, "/queue/nq-poll/pop?timeout=60")
	open(http.MethodGet, "/org/acme/queue/nq-org/events")

	type row struct {
		Queue, Org string
		Waiters    int
	}
	want := []row{{"nq-poll", "", 2}, {"nq-sse", "", 1}, {"nq-org", "acme", 1}} // most waiters, then org, then id
	var got []row
	deadline := time.Now().Add(15 * time.Second)
	for {
		var a nodeQueuesAnswer
		getJSON(t, g.URL+"/node/queues", &a)
		got = nil
		for _, q := range a.Queues {
			got = append(got, row{q.Queue, q.Org, q.Waiters})
		}
		if reflect.DeepEqual(got, want) {
			if a.Node == "" || a.Truncated {
				t.Errorf("node %q, truncated %v", a.Node, a.Truncated)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /node/queues lists %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel() // every consumer leaves
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var a nodeQueuesAnswer
		getJSON(t, g.URL+"/node/queues", &a)
		if len(a.Queues) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers gone, still listed: %+v", a.Queues)
		}
	}

	// With an administrator: only the administrator sees it.
	ga := testenv.StartGateway(t, r.URL(), testenv.WithEnv("POPBOX_ADMIN_USER=root", "POPBOX_ADMIN_PASSWORD=node-queues-Pa55"))
	for _, c := range []struct {
		user, pass string
		want       int
	}{{"", "", http.StatusUnauthorized}, {"root", "wrong", http.StatusUnauthorized}, {"root", "node-queues-Pa55", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, ga.URL+"/node/queues", nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET /node/queues as %q/%q = %d, want %d", c.user, c.pass, resp.StatusCode, c.want)
		}
		if c.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without a WWW-Authenticate challenge")
		}
	}
}
