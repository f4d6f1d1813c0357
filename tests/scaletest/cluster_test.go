package scaletest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// TestCluster runs two gateway nodes on a 3-primary, 3-replica Redis
// Cluster: GET / shows the six servers; one provision to 1,000 queues
// lands on every shard and every queue pops its message; every transport
// gets a message provisioned on the other node.
func TestCluster(t *testing.T) {
	t.Parallel()
	c, a, b := clusterPair(t)

	t.Run("Topology", func(t *testing.T) {
		var info struct {
			Redis struct {
				Mode  string            `json:"mode"`
				Nodes []redisq.NodeInfo `json:"nodes"`
			} `json:"redis"`
		}
		// The gateways re-read the cluster's slot map every 2 s.
		deadline := time.Now().Add(10 * time.Second)
		for {
			a.GetJSON(t, "/", &info)
			if len(info.Redis.Nodes) == 6 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if info.Redis.Mode != "cluster" {
			t.Errorf("GET / redis.mode = %q, want cluster", info.Redis.Mode)
		}
		roles := map[string]int{}
		var addrs []string
		for _, n := range info.Redis.Nodes {
			if !n.Reachable {
				t.Errorf("GET / shows %s unreachable: %s", n.Addr, n.Error)
			}
			roles[n.Role]++
			addrs = append(addrs, n.Addr)
		}
		want := strings.Split(c.Seeds(), ",")
		sort.Strings(want)
		if strings.Join(addrs, ",") != strings.Join(want, ",") || roles["master"] != 3 || roles["slave"] != 3 {
			t.Errorf("GET / nodes %v roles %v, want the 6 cluster nodes, 3 masters and 3 replicas", addrs, roles)
		}
	})

	t.Run("Provision1000Queues", func(t *testing.T) {
		ids := queueNames("thousand", 1000)
		start := time.Now()
		tid := a.Provision(t, "to a thousand", "H", ids...)
		took := time.Since(start)
		// Where the queues live: every primary holds a share.
		cc := c.Client()
		defer cc.Close()
		ctx := context.Background()
		perNode := map[string]int{}
		for _, id := range ids {
			n, err := cc.MasterForKey(ctx, redisq.KeysOfQueue("UNSEC:"+id).High)
			if err != nil {
				t.Fatal(err)
			}
			perNode[n.Options().Addr]++
		}
		t.Logf("provision to 1,000 queues took %v; queues per primary: %v", took, perNode)
		if len(perNode) != 3 {
			t.Fatalf("queues spread over %d primaries, want 3", len(perNode))
		}
		for addr, n := range perNode {
			if n < 200 {
				t.Errorf("primary %s holds only %d of the 1,000 queues", addr, n)
			}
		}
		// The pushes are really there, on their own shards.
		for _, id := range ids[:50] {
			if l, err := cc.LLen(ctx, redisq.KeysOfQueue("UNSEC:"+id).High).Result(); err != nil || l != 1 {
				t.Fatalf("queue %s list length %d (%v), want 1", id, l, err)
			}
		}
		states := b.states(t, tid)
		if len(states) != 1000 {
			t.Fatalf("GET /trans/%s/state on B lists %d queues, want 1000", tid, len(states))
		}
		for q, st := range states {
			if st != "Pending" {
				t.Fatalf("queue %s state %s, want Pending", q, st)
			}
		}
		// Pop every queue, half through each node.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []string
		work := make(chan int)
		for w := 0; w < 8; w++ {
			wg.Go(func() {
				for i := range work {
					n := a
					if i%2 == 1 {
						n = b
					}
					p, err := n.TryPop(ctx, "/queue/"+ids[i]+"/pop?timeout=1")
					if err != nil || len(p.Data) != 1 || p.Data[0] != "to a thousand" || p.Transactions[0] != tid {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s: %+v %v", ids[i], p, err))
						mu.Unlock()
					}
				}
			})
		}
		start = time.Now()
		for i := range ids {
			work <- i
		}
		close(work)
		wg.Wait()
		t.Logf("1,000 pops through two nodes took %v", time.Since(start))
		if len(bad) > 0 {
			t.Fatalf("%d queues did not pop their message, e.g. %v", len(bad), bad[:min(5, len(bad))])
		}
		delivered := 0
		for _, s := range a.states(t, tid) {
			if s == "Delivered" {
				delivered++
			}
		}
		if delivered != 1000 {
			t.Errorf("%d of 1000 queues Delivered after the pops", delivered)
		}
	})

	// Idempotency-Key on a Cluster: concurrent repeats on both nodes of a
	// fan-out over every shard provision once; each key's record lives on
	// the primary serving its own slot (the whole record name is its hash
	// tag, so records spread over the shards).
	t.Run("IdempotencyKey", func(t *testing.T) {
		ids := queueNames("idem", 60)
		cc := c.Client()
		defer cc.Close()
		ctx := context.Background()
		body, err := json.Marshal(map[string]any{"payload": "once", "priority": "H", "queue": testenv.Targets(ids...)})
		if err != nil {
			t.Fatal(err)
		}
		primaries := map[string]bool{}
		for k := range 12 {
			key := fmt.Sprintf("cluster-key-%d", k)
			tids := make([]string, 4)
			fails := make([]error, 4)
			var wg sync.WaitGroup
			for i := range tids {
				n := []*node{a, b}[i%2]
				wg.Go(func() {
					tids[i], _, fails[i] = n.TryProvision(ctx, "/trans", body, http.Header{"Idempotency-Key": {key}})
				})
			}
			wg.Wait()
			for i := range tids {
				if fails[i] != nil || tids[i] != tids[0] {
					t.Fatalf("key %s: repeat %d answered %q (%v), repeat 0 %q", key, i, tids[i], fails[i], tids[0])
				}
			}
			rec := redisq.KeyOfIdempotency("UNSEC:", key)
			m, err := cc.MasterForKey(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			// Asked directly (no redirection), the owning primary has it.
			if got, err := m.HGet(ctx, rec, "tid").Result(); err != nil || got != tids[0] {
				t.Fatalf("record %s on its primary %s: tid %q (%v), want %s", rec, m.Options().Addr, got, err, tids[0])
			}
			primaries[m.Options().Addr] = true
		}
		if len(primaries) < 2 {
			t.Errorf("12 idempotency records all on %v: want them spread over the shards", primaries)
		}
		for _, id := range ids {
			if l, err := cc.LLen(ctx, redisq.KeysOfQueue("UNSEC:"+id).High).Result(); err != nil || l != 12 {
				t.Fatalf("queue %s holds %d entries (%v) after 12 keys x 4 repeats, want 12", id, l, err)
			}
		}
	})

	// Every transport, subscriber on one node, provision on the other.
	t.Run("TransportsAcrossNodes", func(t *testing.T) {
		led := newLedger()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		type probe struct {
			s      *subscriber
			sub    *node
			pub    *node
			queues string
		}
		var probes []probe
		for i, k := range allKinds {
			for _, reliable := range []bool{false, true} {
				sub, pub := b, a
				if i%2 == 1 {
					sub, pub = a, b
				}
				q := fmt.Sprintf("tr-%s-%v", k, reliable)
				s := newSubscriber(k, q, []*node{sub}, 0, reliable, led)
				probes = append(probes, probe{s: s, sub: sub, pub: pub})
				wg.Go(func() { s.run(ctx) })
			}
		}
		for _, p := range probes {
			select {
			case <-p.s.connected:
			case <-time.After(20 * time.Second):
				t.Fatalf("%s subscriber did not connect: %v", p.s.kind, p.s.lastErr.Load())
			}
		}
		for round := 0; round < 3; round++ {
			for _, p := range probes {
				payload := fmt.Sprintf("%s-%v-%d", p.s.kind, p.s.reliable, round)
				led.sent(payload, p.s.queue)
				start := time.Now()
				tid := p.pub.Provision(t, payload, "H", p.s.queue)
				led.answered(payload, tid, http.StatusOK)
				testenv.Eventually(t, 10*time.Second, payload+" delivered", func() bool {
					led.mu.Lock()
					defer led.mu.Unlock()
					return led.msgs[payload].deliveries > 0
				})
				if round == 2 {
					t.Logf("%-11s reliable=%-5v provision on %s -> subscriber on %s: %v", p.s.kind, p.s.reliable, p.pub.name, p.sub.name, time.Since(start).Round(time.Millisecond))
				}
			}
		}
		led.waitDelivered(t, 10*time.Second, 2*time.Second)
		r := led.count()
		if r.Lost != 0 || r.Duplicated != 0 {
			t.Errorf("transports across nodes: %+v", r)
		}
	})
}

// clusterPair starts a Redis Cluster (testenv.StartCluster) and gateway
// nodes A and B on it, env added to their environment.
func clusterPair(t *testing.T, env ...string) (c *testenv.Cluster, a, b *node) {
	t.Helper()
	c = testenv.StartCluster(t)
	a, b = startPair(t, "", append([]string{"POPBOX_REDIS_CLUSTER=" + c.Seeds()}, env...)...)
	return c, a, b
}

// TestClusterFailover kills a Cluster primary (SIGKILL) while two gateway
// nodes carry provisions and reliable subscribers on every transport. With
// POPBOX_REDIS_WAIT_REPLICAS=1 a provision is answered 200 only once a
// replica has it, so the promoted replica has every acknowledged message:
// none may be lost. Without it (asynchronous replication) a 200-answered
// message written in the last moment before the kill can be lost; that run
// reports what happened and asserts nothing about loss.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault test under load: skipped with -short")
	}
	for _, wait := range []int{1, 0} {
		t.Run(fmt.Sprintf("WaitReplicas%d", wait), func(t *testing.T) {
			t.Parallel()
			c, a, b := clusterPair(t, fmt.Sprintf("POPBOX_REDIS_WAIT_REPLICAS=%d", wait))
			queues := queueNames(fmt.Sprintf("cf%d", wait), 20)
			checkSpread(t, c, queues)
			setting := fmt.Sprintf("WAIT_REPLICAS=%d, reliable subscribers", wait)
			o := runScenario(t, scenario{
				fault: "kill -9 Cluster primary", setting: setting,
				nodes: []*node{a, b}, queues: queues, reliable: true, timeoutACK: 3,
				producers: 4, every: 20 * time.Millisecond,
				warmup: 3 * time.Second, after: 3 * time.Second, drain: 60 * time.Second,
				inject: func(t *testing.T) string {
					dead, took := c.KillPrimary(t, 0)
					t.Logf("killed primary %s; a replica took over after %v", dead.Addr, took)
					start := time.Now()
					dead.Restart(t)
					c.WaitHealthy(t, 60*time.Second)
					return fmt.Sprintf("promotion %v, old primary back as replica %v later",
						took.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
				},
			})
			checkGatewaysServe(t, a, b)
			checkTopology(t, a, c)
			if wait > 0 {
				if o.row.Lost != 0 {
					t.Errorf("%d messages answered 200 were lost with WAIT_REPLICAS=%d: %v", o.row.Lost, wait, o.led.undelivered())
				}
			} else if o.row.Lost != 0 {
				t.Logf("asynchronous replication (WAIT_REPLICAS=0) lost %d acknowledged messages: %v", o.row.Lost, o.led.undelivered())
			}
			// At-least-once: extra deliveries come from acks or pops that
			// did not reach the promoted replica and from acks refused while
			// the shard was down; each subscriber holds at most an outbox
			// (16) plus what it had not acked yet.
			if bound := len(queues) * 32; o.row.Duplicated > bound {
				t.Errorf("%d duplicate deliveries, more than the bound %d", o.row.Duplicated, bound)
			}
		})
	}
}

// checkSpread makes sure the queues live on every primary.
func checkSpread(t *testing.T, c *testenv.Cluster, queues []string) {
	t.Helper()
	cc := c.Client()
	defer cc.Close()
	per := map[string]int{}
	for _, q := range queues {
		n, err := cc.MasterForKey(context.Background(), redisq.KeysOfQueue("UNSEC:"+q).High)
		if err != nil {
			t.Fatal(err)
		}
		per[n.Options().Addr]++
	}
	if len(per) != 3 {
		t.Fatalf("test queues on %d primaries, want all 3: %v", len(per), per)
	}
}

// checkGatewaysServe checks that each node still provisions and pops after
// the fault, by itself (no restart).
func checkGatewaysServe(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		q := "after-fault-" + n.name
		tid := n.Provision(t, "after "+n.name, "H", q)
		p, err := n.TryPop(context.Background(), "/queue/"+q+"/pop?timeout=5")
		if err != nil || len(p.Transactions) != 1 || p.Transactions[0] != tid {
			t.Errorf("node %s after the fault: pop %+v %v, want %s", n.name, p, err, tid)
		}
	}
}

// checkTopology waits until GET / on n shows every cluster node reachable,
// three primaries and three replicas, as the cluster itself sees them.
func checkTopology(t *testing.T, n *node, c *testenv.Cluster) {
	t.Helper()
	want := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	view, err := c.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range view {
		role := "slave"
		if cn.Primary() {
			role = "master"
		}
		want[cn.Addr] = role
	}
	var got map[string]string
	deadline := time.Now().Add(15 * time.Second)
	for {
		var info struct {
			Redis struct {
				Nodes []redisq.NodeInfo `json:"nodes"`
			} `json:"redis"`
		}
		n.GetJSON(t, "/", &info)
		got = map[string]string{}
		for _, rn := range info.Redis.Nodes {
			if rn.Reachable {
				got[rn.Addr] = rn.Role
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("GET / on %s shows %v after the failover, the cluster says %v", n.name, got, want)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
