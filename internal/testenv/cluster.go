package testenv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of redis-server processes on loopback ports,
// built with `redis-cli --cluster create`. Nodes keep their port and
// directory (and so their nodes.conf) across Kill / Restart, so a killed
// node that is restarted rejoins the cluster.
type Cluster struct {
	Nodes       []*Redis // in creation order; roles change with failovers
	NodeTimeout time.Duration
	t           testing.TB
}

// ClusterOption changes how a test cluster is built.
type ClusterOption func(*clusterOpts)

type clusterOpts struct {
	primaries, replicas int
	nodeTimeout         time.Duration
	args                []string
}

// WithClusterArgs passes extra redis-server arguments to every node (e.g.
// "--appendonly", "yes").
func WithClusterArgs(args ...string) ClusterOption {
	return func(o *clusterOpts) { o.args = append(o.args, args...) }
}

// WithClusterShape sets the number of primaries and of replicas per
// primary (default 3 and 1).
func WithClusterShape(primaries, replicasPerPrimary int) ClusterOption {
	return func(o *clusterOpts) { o.primaries, o.replicas = primaries, replicasPerPrimary }
}

// WithNodeTimeout sets cluster-node-timeout (default 2 s): how long a
// primary must be unreachable before its replica takes over.
func WithNodeTimeout(d time.Duration) ClusterOption {
	return func(o *clusterOpts) { o.nodeTimeout = d }
}

// StartCluster starts a Redis Cluster (3 primaries with one replica each
// unless WithClusterShape says otherwise) and waits until every node
// reports cluster_state:ok and every replica is in sync. The processes are
// stopped when the test ends.
func StartCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	o := clusterOpts{primaries: 3, replicas: 1, nodeTimeout: 2 * time.Second}
	for _, fn := range opts {
		fn(&o)
	}
	bin := lookPath(t, "redis-server", "redis-server")
	cli := lookPath(t, "redis-cli", "redis-tools")
	c := &Cluster{NodeTimeout: o.nodeTimeout, t: t}
	n := o.primaries * (1 + o.replicas)
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, startClusterNode(t, bin, o))
	}
	t.Cleanup(func() {
		for _, r := range c.Nodes {
			r.Kill()
		}
	})
	args := []string{"--cluster", "create"}
	for _, r := range c.Nodes {
		args = append(args, r.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(o.replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "[OK] All 16384 slots covered") {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(t, 60*time.Second)
	return c
}

// startClusterNode starts one cluster-enabled redis-server. The cluster bus
// port is chosen freely too (the default, port+10000, can be past 65535
// for ephemeral ports).
func startClusterNode(t testing.TB, bin string, o clusterOpts) *Redis {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, bus := FreePort(t), FreePort(t)
		if bus == port {
			continue
		}
		r := &Redis{dir: dir, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
		r.args = append([]string{
			"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--protected-mode", "no", "--loglevel", "warning",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.FormatInt(o.nodeTimeout.Milliseconds(), 10),
			// A replica takes over however long it was cut off.
			"--cluster-replica-validity-factor", "0",
		}, o.args...)
		if lastErr = r.start(bin); lastErr == nil {
			return r
		}
	}
	t.Fatalf("start cluster node: %v", lastErr)
	return nil
}

// Seeds returns the addresses of every node, comma-separated (the value of
// POPBOX_REDIS_CLUSTER).
func (c *Cluster) Seeds() string {
	addrs := make([]string, len(c.Nodes))
	for i, r := range c.Nodes {
		addrs[i] = r.Addr
	}
	return strings.Join(addrs, ",")
}

// Client returns a go-redis cluster client; the caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(c.Seeds(), ",")})
}

// Node returns the node with address addr (nil if none).
func (c *Cluster) Node(addr string) *Redis {
	for _, r := range c.Nodes {
		if r.Addr == addr {
			return r
		}
	}
	return nil
}

// alive tells whether the node's process runs.
func (r *Redis) alive() bool { return r.proc.alive() }

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID, Addr string
	Flags    []string
	MasterID string
	Slots    int // number of slots served
	// ConfigEpoch is the node's configuration epoch as the viewing node
	// knows it (the version of its claim on its slots).
	ConfigEpoch uint64
}

// Primary tells whether the node is a primary.
func (n ClusterNode) Primary() bool { return slices.Contains(n.Flags, "master") }

// Failed tells whether the cluster considers the node failed.
func (n ClusterNode) Failed() bool {
	return slices.Contains(n.Flags, "fail") || slices.Contains(n.Flags, "fail?")
}

// View returns CLUSTER NODES as seen by the first live node that answers.
func (c *Cluster) View(ctx context.Context) ([]ClusterNode, error) {
	var lastErr error = errors.New("no live node")
	for _, r := range c.Nodes {
		if !r.alive() {
			continue
		}
		cl := r.Client()
		s, err := cl.ClusterNodes(ctx).Result()
		cl.Close()
		if err != nil {
			lastErr = err
			continue
		}
		return parseClusterNodes(s), nil
	}
	return nil, lastErr
}

func parseClusterNodes(s string) []ClusterNode {
	var out []ClusterNode
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := ClusterNode{ID: f[0], Addr: addr, Flags: strings.Split(strings.ReplaceAll(f[2], "myself,", ""), ","), MasterID: f[3]}
		n.ConfigEpoch, _ = strconv.ParseUint(f[6], 10, 64)
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if ok {
				b, _ = strconv.Atoi(hi)
			}
			n.Slots += b - a + 1
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// EpochsAgreed returns nil once every live node knows the same current
// epoch and the same config epoch for every node, and no two primaries
// share a config epoch; otherwise an error that says where they differ.
//
// A manual slot move (CLUSTER SETSLOT ... NODE) is only safe from there:
// the destination takes a new epoch only if its own is not already the
// greatest it knows of, so a destination that has not yet heard of a newer
// epoch can keep one below the source's; the source's claim on the slot,
// still in flight on the cluster bus, then wins, and source and
// destination are left redirecting the slot to each other for good.
// redis-cli --cluster checks the same agreement before it reshards.
func (c *Cluster) EpochsAgreed(ctx context.Context) error {
	var ref map[string]uint64
	var refAddr, refCurrent string
	for _, r := range c.Nodes {
		if !r.alive() {
			continue
		}
		cl := r.Client()
		info, err := cl.ClusterInfo(ctx).Result()
		var nodes string
		if err == nil {
			nodes, err = cl.ClusterNodes(ctx).Result()
		}
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Addr, err)
		}
		current := ""
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_current_epoch:"); ok {
				current = v
			}
		}
		epochs := map[string]uint64{}
		primaries := map[uint64]string{}
		for _, n := range parseClusterNodes(nodes) {
			epochs[n.ID] = n.ConfigEpoch
			if n.Primary() && !n.Failed() {
				if other, dup := primaries[n.ConfigEpoch]; dup {
					return fmt.Errorf("%s: primaries %s and %s share config epoch %d", r.Addr, other, n.Addr, n.ConfigEpoch)
				}
				primaries[n.ConfigEpoch] = n.Addr
			}
		}
		if ref == nil {
			ref, refAddr, refCurrent = epochs, r.Addr, current
			continue
		}
		if current != refCurrent {
			return fmt.Errorf("current epoch %s on %s, %s on %s", refCurrent, refAddr, current, r.Addr)
		}
		if !maps.Equal(epochs, ref) {
			return fmt.Errorf("config epochs %v on %s, %v on %s", ref, refAddr, epochs, r.Addr)
		}
	}
	return nil
}

// Primaries returns the live primaries that serve slots, sorted by address.
func (c *Cluster) Primaries(t testing.TB) []*Redis {
	t.Helper()
	view := within(t, 5*time.Second, "cluster nodes", c.View)
	var out []*Redis
	for _, n := range view {
		if n.Primary() && !n.Failed() && n.Slots > 0 {
			if r := c.Node(n.Addr); r != nil && r.alive() {
				out = append(out, r)
			}
		}
	}
	return out
}

// KillPrimary kills the i-th primary of Primaries with SIGKILL, waits until
// a replica has taken over its slots and the cluster is ok again, and
// returns the killed node (restart it with Restart; it rejoins as a
// replica). It returns how long the cluster took to recover.
func (c *Cluster) KillPrimary(t testing.TB, i int) (*Redis, time.Duration) {
	t.Helper()
	ps := c.Primaries(t)
	if i < 0 || i >= len(ps) {
		t.Fatalf("KillPrimary(%d): %d primaries", i, len(ps))
	}
	dead := ps[i]
	start := time.Now()
	dead.Kill()
	c.WaitFailover(t, dead.Addr, 30*time.Second+10*c.NodeTimeout)
	return dead, time.Since(start)
}

// WaitFailover waits until no live node considers dead the primary of any
// slot and every live node reports cluster_state:ok.
func (c *Cluster) WaitFailover(t testing.TB, dead string, timeout time.Duration) {
	t.Helper()
	EventuallyOK(t, timeout, "failover away from "+dead, func(ctx context.Context) error {
		return c.checkLive(ctx, func(r *Redis, cl *redis.Client) error {
			slots, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			covered := 0
			for _, s := range slots {
				if len(s.Nodes) == 0 || s.Nodes[0].Addr == dead {
					return fmt.Errorf("%s: slots %d-%d still served by %s", r.Addr, s.Start, s.End, dead)
				}
				covered += s.End - s.Start + 1
			}
			if covered != 16384 {
				return fmt.Errorf("%s: %d slots covered", r.Addr, covered)
			}
			return nil
		})
	})
}

// WaitHealthy waits until every live node reports cluster_state:ok, knows
// every node, and every replica's link to its primary is up.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	EventuallyOK(t, timeout, "cluster healthy", func(ctx context.Context) error {
		live := 0
		for _, r := range c.Nodes {
			if r.alive() {
				live++
			}
		}
		return c.checkLive(ctx, func(r *Redis, cl *redis.Client) error {
			nodes, err := cl.ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			healthy := 0
			for _, n := range parseClusterNodes(nodes) {
				if !n.Failed() && !slices.Contains(n.Flags, "handshake") && !slices.Contains(n.Flags, "noaddr") {
					healthy++
				}
			}
			if healthy < live {
				return fmt.Errorf("%s sees %d healthy nodes of %d live", r.Addr, healthy, live)
			}
			// Every live node is in this node's slot map (as the
			// primary or a replica of a slot range), so that clients
			// loading it see the whole cluster.
			slots, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			listed := map[string]bool{}
			for _, sr := range slots {
				for _, n := range sr.Nodes {
					listed[n.Addr] = true
				}
			}
			if len(listed) < live {
				return fmt.Errorf("%s lists %d nodes in CLUSTER SLOTS, %d live", r.Addr, len(listed), live)
			}
			info, err := cl.InfoMap(ctx, "replication").Result()
			if err != nil {
				return err
			}
			f := info["Replication"]
			if f["role"] == "slave" && f["master_link_status"] != "up" {
				return fmt.Errorf("replica %s: master link %s", r.Addr, f["master_link_status"])
			}
			return nil
		})
	})
}

// checkLive runs check on every live node, in order, once that node
// reports cluster_state:ok (clusterOK), with a client of it; it returns
// the first error.
func (c *Cluster) checkLive(ctx context.Context, check func(r *Redis, cl *redis.Client) error) error {
	for _, r := range c.Nodes {
		if !r.alive() {
			continue
		}
		if err := clusterOK(ctx, r); err != nil {
			return err
		}
		cl := r.Client()
		err := check(r, cl)
		cl.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func clusterOK(ctx context.Context, r *Redis) error {
	cl := r.Client()
	defer cl.Close()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: %w", r.Addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("%s: cluster_state not ok", r.Addr)
	}
	return nil
}
