package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

// TestLongPollOutageIs500: in process on a real redis-server that is then
// killed, a pop that was waiting and pops, peeks and GET /queue made during
// the outage answer 500 {"errors": [...]}, never an empty 200 (API.md 1.3).
func TestLongPollOutageIs500(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.OwnRedis())
	n := startInProcNode(t, r.URL(), gateway.Options{})
	do := func(method, path string) (int, map[string]any, time.Duration) {
		t.Helper()
		start := time.Now()
		req, _ := http.NewRequest(method, n.Plain.URL+path, nil)
		resp, err := n.Plain.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
		return resp.StatusCode, m, time.Since(start)
	}
	isOutage := func(what string, status int, m map[string]any) {
		t.Helper()
		e, _ := m["errors"].([]any)
		if status != http.StatusInternalServerError || len(m) != 1 || len(e) == 0 {
			t.Fatalf(`%s: %d %v, want 500 {"errors": [...]}`, what, status, m)
		}
	}
	if st, m, _ := do(http.MethodPost, "/queue/q/pop?timeout=0"); st != http.StatusOK || m["ok"] != true {
		t.Fatalf("pop before the outage: %d %v", st, m)
	}

	type answer struct {
		status int
		m      map[string]any
		took   time.Duration
	}
	waiting := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, n.Plain.URL+"/queue/q/pop?timeout=60", nil)
		start := time.Now()
		resp, err := n.Plain.Client().Do(req)
		if err != nil {
			waiting <- answer{}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		waiting <- answer{resp.StatusCode, m, time.Since(start)}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, m, _ := do(http.MethodGet, "/queue/q")
		if m["blocked"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pop is not waiting after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Kill()
	select {
	case a := <-waiting:
		t.Logf("the waiting pop answered %d %v, %v after it was sent", a.status, a.m, a.took)
		isOutage("the pop waiting when Redis went away", a.status, a.m)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting pop did not answer within 30 s of Redis going away")
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/queue/q/pop?timeout=1"},
		{http.MethodPost, "/queue/q/poprel?timeout=1"},
		{http.MethodGet, "/queue/q/peek"},
		{http.MethodGet, "/queue/q"},
	} {
		st, m, took := do(c.method, c.path)
		t.Logf("%s %s during the outage: %d %v after %v", c.method, c.path, st, m, took)
		isOutage(c.method+" "+c.path, st, m)
	}
}
