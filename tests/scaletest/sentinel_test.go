package scaletest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestSentinelFailover kills the Sentinel-monitored primary (SIGKILL) while
// two gateway nodes carry provisions and reliable subscribers. The
// gateways follow the promotion by themselves (go-redis asks the
// sentinels; the wake-up subscription moves to the new primary and turns
// keyspace notifications on there). With POPBOX_REDIS_WAIT_REPLICAS=1 no
// 200-answered message may be lost.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test under load: skipped with -short")
	}
	s := testenv.StartSentinel(t)
	env := []string{"POPBOX_REDIS_SENTINELS=" + s.Addrs(), "POPBOX_REDIS_MASTER=" + s.Master, "POPBOX_REDIS_WAIT_REPLICAS=1"}
	a, b := startPair(t, "", env...)
	var info struct {
		Redis struct {
			Mode string `json:"mode"`
		} `json:"redis"`
	}
	a.GetJSON(t, "/", &info)
	if info.Redis.Mode != "sentinel" {
		t.Errorf("GET / redis.mode = %q, want sentinel", info.Redis.Mode)
	}
	o := runScenario(t, scenario{
		fault: "kill -9 Sentinel primary", setting: "WAIT_REPLICAS=1, reliable subscribers",
		nodes: []*node{a, b}, queues: queueNames("sf", 20), reliable: true, timeoutACK: 3,
		producers: 4, every: 20 * time.Millisecond,
		warmup: 3 * time.Second, after: 3 * time.Second, drain: 60 * time.Second,
		inject: func(t *testing.T) string {
			dead, took := s.KillPrimary(t)
			t.Logf("killed primary %s; sentinels promoted the replica after %v", dead.Addr, took)
			start := time.Now()
			s.RestartAsReplica(t, dead)
			return fmt.Sprintf("promotion %v, old primary back as replica %v later",
				took.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		},
	})
	if o.row.Lost != 0 {
		t.Errorf("%d messages answered 200 were lost with WAIT_REPLICAS=1: %v", o.row.Lost, o.led.undelivered())
	}
	if bound := 20 * 32; o.row.Duplicated > bound {
		t.Errorf("%d duplicate deliveries, more than the bound %d", o.row.Duplicated, bound)
	}
	checkGatewaysServe(t, a, b)
	// Wake-ups work on the new primary: a waiting pop gets a message
	// provisioned on the other node at once (not after the slow sweep).
	ch := make(chan testenv.Popped, 1)
	go func() {
		p, _ := a.TryPop(context.Background(), "/queue/sentinel-wake/pop?timeout=10")
		ch <- p
	}()
	testenv.Eventually(t, 5*time.Second, "pop on A waiting", func() bool {
		var q struct {
			Blocked bool `json:"blocked"`
		}
		b.GetJSON(t, "/queue/sentinel-wake", &q)
		return q.Blocked
	})
	start := time.Now()
	tid := b.Provision(t, "wake after failover", "H", "sentinel-wake")
	select {
	case p := <-ch:
		if len(p.Transactions) != 1 || p.Transactions[0] != tid {
			t.Fatalf("pop after failover: %+v, want %s", p, tid)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("wake-up after failover took %v: keyspace notifications off on the new primary?", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("pop after failover did not answer")
	}
}

// TestWaitReplicas: with POPBOX_REDIS_WAIT_REPLICAS=1 a provision is
// answered 200 only once a replica acknowledged it; without a replica it
// is answered 500 after the WAIT timeout (the message may still be
// delivered: a non-200 answer means "outcome unknown", not "not stored").
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	primary := testenv.StartRedis(t, testenv.OwnRedis())
	g := startNode(t, "A", primary.URL(), "POPBOX_REDIS_WAIT_REPLICAS=1")
	start := time.Now()
	_, r, err := g.TryProvision(context.Background(), "/trans", testenv.Message("no replica", "H", "wait-q"), nil)
	took := time.Since(start)
	st := r.Status
	if st != http.StatusInternalServerError || err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("provision without a replica: %d %v, want 500 naming the replicas", st, err)
	}
	t.Logf("without a replica: %d after %v (%v)", st, took.Round(time.Millisecond), err)
	_, port, _ := net.SplitHostPort(primary.Addr)
	replica := testenv.StartRedis(t, testenv.WithRedisArgs("--replicaof", "127.0.0.1", port))
	testenv.Eventually(t, 20*time.Second, "replica in sync", func() bool {
		c := replica.Client()
		defer c.Close()
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for i := 0; i < 20; i++ {
		start := time.Now()
		tid := g.Provision(t, fmt.Sprintf("with replica %d", i), "H", "wait-q")
		if i == 19 {
			t.Logf("with a replica: 200 in %v", time.Since(start).Round(time.Millisecond))
		}
		// The replica has it as soon as the answer is 200.
		c := replica.Client()
		n, err := c.Exists(context.Background(), "pb:{t:"+tid+"}:meta", "pb:{t:"+tid+"}:state").Result()
		l, _ := c.LRange(context.Background(), "pb:{q:UNSEC:wait-q}:h", -1, -1).Result()
		c.Close()
		if err != nil || n != 2 || len(l) != 1 || l[0] != tid {
			t.Fatalf("after 200: replica has meta/state %d (%v), tail of the queue %v, want %s", n, err, l, tid)
		}
	}
}
