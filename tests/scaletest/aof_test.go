package scaletest

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/internal/testenv"
)

// TestRedisRestartAOF kills Redis (SIGKILL) with the append-only file on
// and starts it again on the same port and directory, under a running
// gateway: queued messages, their order, transaction states (Pending,
// Blocked in flight, Delivered) and in-flight records survive; the gateway
// reconnects by itself and wake-ups work again (keyspace notifications
// are turned on again on the restarted server).
//
// A process crash loses nothing acknowledged with either fsync policy:
// Redis write(2)s the AOF before it answers, so the data is in the kernel
// (with everysec, unless a very slow disk makes Redis postpone the write).
// appendfsync everysec can lose up to about a second of writes if the
// machine itself goes down (power, kernel), which a test cannot inject.
func TestRedisRestartAOF(t *testing.T) {
	t.Parallel()
	for _, fsync := range []string{"always", "everysec"} {
		t.Run(fsync, func(t *testing.T) {
			t.Parallel()
			r := testenv.StartRedis(t, testenv.WithRedisArgs("--appendonly", "yes", "--appendfsync", fsync))
			g := startNode(t, "A", r.URL())
			ctx := context.Background()
			led := newLedger()
			queues := queueNames("aof", 10)
			var tids []string
			for i := 0; i < 100; i++ {
				q := queues[i%len(queues)]
				prio := "H"
				if i%3 == 0 {
					prio = "L"
				}
				payload := fmt.Sprintf("aof-%03d", i)
				led.sent(payload, q)
				tid := g.Provision(t, payload, prio, q)
				led.answered(payload, tid, http.StatusOK)
				tids = append(tids, tid)
			}
			// Delivered: 2 plain pops from the first five queues; in flight
			// (Blocked): 1 reliable pop from the last five, never acked.
			var inflight []struct{ queue, tid string }
			for i, q := range queues {
				route := "/pop?max=2&timeout=1"
				if i >= 5 {
					route = "/poprel?max=1&timeout=1&timeoutACK=600"
				}
				p, err := g.TryPop(ctx, "/queue/"+q+route)
				if err != nil || len(p.Data) == 0 {
					t.Fatalf("pop %s: %+v %v", q, p, err)
				}
				for j := range p.Data {
					led.delivered(p.Data[j], "A")
					if i >= 5 {
						inflight = append(inflight, struct{ queue, tid string }{q, p.Transactions[j]})
					}
				}
			}
			before := snapshot(t, g, tids, queues)
			// A subscriber waits across the restart.
			subCtx, stopSub := context.WithCancel(ctx)
			defer stopSub()
			sub := newSubscriber(kindSSE, "aof-live", []*node{g}, 0, false, led)
			done := make(chan struct{})
			go func() { sub.run(subCtx); close(done) }()
			defer func() { stopSub(); <-done }()
			<-sub.connected

			start := time.Now()
			r.Kill()
			r.Restart(t)
			testenv.Eventually(t, 30*time.Second, "gateway ready again", func() bool {
				r, err := g.DoJSON(ctx, http.MethodGet, "/readyz", nil)
				return err == nil && r.Status == http.StatusOK
			})
			recovery := time.Since(start)

			after := snapshot(t, g, tids, queues)
			if d := cmp.Diff(before, after); d != "" {
				t.Fatalf("state changed across the Redis restart (-before +after):\n%s", d)
			}
			// The in-flight records survived: the acks succeed.
			for _, f := range inflight {
				r, err := g.DoJSON(ctx, http.MethodPost, "/queue/"+f.queue+"/ack", map[string]any{"transactions": []string{f.tid}})
				if err != nil || r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != fmt.Sprintf(`[{"err":null,"data":%q}]`, f.tid) {
					t.Errorf("ack of in-flight %s on %s after restart: %s %v", f.tid, f.queue, r, err)
				}
			}
			// Wake-ups: the waiting subscriber gets a new message at once.
			led.sent("live", "aof-live")
			pstart := time.Now()
			tid := g.Provision(t, "live", "H", "aof-live")
			led.answered("live", tid, http.StatusOK)
			testenv.Eventually(t, 10*time.Second, "the subscriber waiting across the restart gets a new message", func() bool {
				led.mu.Lock()
				defer led.mu.Unlock()
				return led.msgs["live"].deliveries > 0
			})
			if took := time.Since(pstart); took > 2*time.Second {
				t.Errorf("wake-up after the Redis restart took %v (keyspace notifications not on again?)", took)
			}
			// Everything still queued pops, in order.
			for _, q := range queues {
				p, err := g.TryPop(ctx, "/queue/"+q+"/pop?timeout=1")
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(before.Queues[q], p.Transactions); d != "" {
					t.Errorf("queue %s after restart (-peeked before +popped):\n%s", q, d)
				}
				for _, d := range p.Data {
					led.delivered(d, "A")
				}
			}
			// The in-flight ones, acked, are delivered; count them once.
			led.waitDelivered(t, 5*time.Second, 500*time.Millisecond)
			row := led.count()
			row.Fault, row.Setting = "kill -9 Redis + restart", "appendonly yes, appendfsync "+fsync
			row.Recovery = "gateway ready " + recovery.Round(10*time.Millisecond).String() + " after the kill"
			report(t, row)
			if row.Lost != 0 || row.Duplicated != 0 {
				t.Errorf("lost %d, duplicated %d across the restart: %v", row.Lost, row.Duplicated, led.undelivered())
			}
		})
	}
}

// state is what a client can see of the stored messages.
type state struct {
	States map[string]map[string]string // tid -> queue -> state
	Queues map[string][]string          // queue -> queued tids, head first
}

func snapshot(t *testing.T, g *node, tids, queues []string) state {
	t.Helper()
	s := state{States: map[string]map[string]string{}, Queues: map[string][]string{}}
	for _, tid := range tids {
		s.States[tid] = g.states(t, tid)
	}
	for _, q := range queues {
		var p testenv.Popped
		g.GetJSON(t, "/queue/"+q+"/peek?max=1000", &p)
		s.Queues[q] = p.Transactions
	}
	counts := map[string]int{}
	for _, m := range s.States {
		for _, st := range m {
			counts[st]++
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) != 3 {
		t.Fatalf("states %v, want Pending, Blocked and Delivered", counts)
	}
	return s
}
