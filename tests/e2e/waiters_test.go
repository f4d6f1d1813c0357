package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// metric returns the value of the Prometheus series named exactly by
// series (name plus labels as the exposition prints them).
func metric(t testing.TB, n *node, series string) (float64, bool) {
	t.Helper()
	r := n.get(t, "/metrics")
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// TestManyWaiters holds 2,000 long-poll pops on one node and checks that
// the node's Redis connections do not grow with them (the hub design), then
// that every one of them gets its own message. It runs alone (not in
// parallel) so the timings are not skewed by the other tests.
func TestManyWaiters(t *testing.T) {
	const waiters = 2000
	r, n := startRedisNode(t)
	nodeName := n.g.NodeName()
	if nodeName == "" {
		t.Fatalf("no node id in the gateway log:\n%s", n.g.Log())
	}
	prefix := "popbox:" + nodeName
	ctx := context.Background()

	// A client of its own with room for every waiting pop.
	tr := &http.Transport{MaxConnsPerHost: waiters + 100, MaxIdleConns: waiters + 100, MaxIdleConnsPerHost: waiters + 100,
		IdleConnTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	popper := &node{g: n.g, base: n.base, host: n.host, hc: &http.Client{Transport: tr, Timeout: time.Minute}}

	before, err := r.ClientCount(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	queue := func(i int) string { return fmt.Sprintf("many-%04d", i) }
	start := time.Now()
	pops := make([]<-chan popOutcome, waiters)
	for i := range pops {
		pops[i] = popper.asyncPop(ctx, "", queue(i), "timeout=20")
	}
	eventually(t, 15*time.Second, "2000 pops waiting on the node", func() bool { return longpolls(t, n) >= waiters })
	t.Logf("%d pops waiting %v after the first was sent", waiters, time.Since(start))

	count := func() int {
		c, err := r.ClientCount(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// All waiters are registered ("blocked") once the last queue shows it.
	eventually(t, 10*time.Second, "last queue shows blocked", func() bool { return n.blocked(t, queue(waiters-1)) })
	held := count()
	t.Log("REDISCONN 2000 waiters:", held, "(before the pops:", before, ")")
	if held >= 64 {
		t.Errorf("node %s holds %d Redis connections with %d waiting pops, want < 64", nodeName, held, waiters)
	}

	// One message per queue, provisioned by a few concurrent producers,
	// while watching the connection count.
	tids := make([]string, waiters)
	var next atomic.Int64
	var maxConns atomic.Int64
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			c, err := r.ClientCount(ctx, prefix)
			if err == nil && int64(c) > maxConns.Load() {
				maxConns.Store(int64(c))
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	provStart := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= waiters {
					return
				}
				resp, err := n.try(req{method: http.MethodPost, path: "/trans", ctype: jsonCT,
					body: []byte(`{"payload":"for ` + queue(i) + `","priority":"H","queue":[{"id":"` + queue(i) + `"}]}`)})
				if err != nil || resp.Status != 200 {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("provision %s: %v %s", queue(i), err, resp))
					return
				}
				m, err := decodeOne(resp.Body)
				obj, _ := m.(map[string]any)
				tid, _ := obj["data"].(string)
				if err != nil || !uuidV4.MatchString(tid) {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("provision %s: %s", queue(i), resp))
					return
				}
				tids[i] = tid
			}
		}()
	}
	wg.Wait()
	close(stopWatch)
	<-watchDone
	if e := firstErr.Load(); e != nil {
		t.Fatal(e)
	}
	t.Logf("provisioned %d messages in %v; Redis connections peaked at %d meanwhile", waiters, time.Since(provStart), maxConns.Load())
	if maxConns.Load() >= 64 {
		t.Errorf("node held up to %d Redis connections while provisioning to %d waiters, want < 64", maxConns.Load(), waiters)
	}

	bad := 0
	for i, ch := range pops {
		o := waitPop(t, ch, 30*time.Second)
		if len(o.p.Transactions) != 1 || o.p.Transactions[0] != tids[i] || o.p.Data[0] != "for "+queue(i) {
			bad++
			if bad <= 5 {
				t.Errorf("pop on %s answered %s after %v, want its message %s", queue(i), o.r, o.took, tids[i])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d pops did not get their message", bad, waiters)
	}
	t.Logf("all %d pops answered with their message %v after the first pop was sent", waiters, time.Since(start))
}
