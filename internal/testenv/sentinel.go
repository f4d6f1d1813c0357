package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name the test sentinels monitor.
const SentinelMaster = "mymaster"

// Sentinel is a Sentinel-monitored Redis: a primary, a replica and three
// sentinels, all on loopback. Data nodes keep their port and directory
// across Kill / Restart.
type Sentinel struct {
	Master    string   // master name (SentinelMaster)
	Data      []*Redis // the data nodes: [0] starts as primary, [1] as its replica
	Sentinels []*SentinelProc
}

// SentinelProc is one redis-server --sentinel process.
type SentinelProc struct {
	Addr string
	dir  string
	proc running
}

// SentinelOption changes how a test Sentinel setup is started.
type SentinelOption func(*sentinelOpts)

type sentinelOpts struct {
	args      []string
	downAfter time.Duration
}

// WithSentinelDataArgs passes extra redis-server arguments to both data
// nodes (e.g. "--appendonly", "yes").
func WithSentinelDataArgs(args ...string) SentinelOption {
	return func(o *sentinelOpts) { o.args = append(o.args, args...) }
}

// WithDownAfter sets the sentinels' down-after-milliseconds (default 1 s).
func WithDownAfter(d time.Duration) SentinelOption {
	return func(o *sentinelOpts) { o.downAfter = d }
}

// StartSentinel starts a primary, one replica of it and three sentinels
// (quorum 2), and waits until the replica is in sync and every sentinel
// knows the primary, the replica and the other sentinels.
func StartSentinel(t testing.TB, opts ...SentinelOption) *Sentinel {
	t.Helper()
	o := sentinelOpts{downAfter: time.Second}
	for _, fn := range opts {
		fn(&o)
	}
	bin := lookPath(t, "redis-server", "redis-server")
	s := &Sentinel{Master: SentinelMaster}
	primary := StartRedis(t, WithRedisArgs(o.args...), OwnRedis())
	_, pport, _ := net.SplitHostPort(primary.Addr)
	replica := StartRedis(t, WithRedisArgs(append([]string{"--replicaof", "127.0.0.1", pport}, o.args...)...))
	s.Data = []*Redis{primary, replica}
	for i := 0; i < 3; i++ {
		sp, err := startSentinelProc(t, bin, pport, o.downAfter)
		if err != nil {
			t.Fatalf("start sentinel: %v", err)
		}
		s.Sentinels = append(s.Sentinels, sp)
		t.Cleanup(sp.Kill)
	}
	EventuallyOK(t, 30*time.Second, "sentinels ready", func(ctx context.Context) error {
		if err := replicaUp(ctx, replica); err != nil {
			return err
		}
		for _, sp := range s.Sentinels {
			c := sp.Client()
			reps, err := c.Replicas(ctx, s.Master).Result()
			if err == nil && len(reps) < 1 {
				err = fmt.Errorf("sentinel %s knows no replica yet", sp.Addr)
			}
			var others []map[string]string
			if err == nil {
				others, err = c.Sentinels(ctx, s.Master).Result()
			}
			c.Close()
			if err != nil {
				return err
			}
			if len(others) < len(s.Sentinels)-1 {
				return fmt.Errorf("sentinel %s knows %d other sentinels", sp.Addr, len(others))
			}
		}
		return nil
	})
	return s
}

func startSentinelProc(t testing.TB, bin, primaryPort string, downAfter time.Duration) (*SentinelProc, error) {
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %s 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, port, dir, filepath.Join(dir, "sentinel.log"), SentinelMaster, primaryPort,
			SentinelMaster, downAfter.Milliseconds(), SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		sp := &SentinelProc{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
		if lastErr = sp.proc.start("", bin, conf, "--sentinel"); lastErr != nil {
			continue
		}
		if lastErr = waitOwnRedis(sp.Addr, sp.proc.pid(), 10*time.Second); lastErr == nil {
			return sp, nil
		}
		sp.Kill()
	}
	return nil, lastErr
}

// Client returns a go-redis Sentinel client for the process; the caller
// closes it.
func (p *SentinelProc) Client() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: p.Addr})
}

// Kill kills the sentinel and waits for it.
func (p *SentinelProc) Kill() {
	p.proc.end(os.Kill, 10*time.Second)
}

// Addrs returns the sentinel addresses, comma-separated (the value of
// POPBOX_REDIS_SENTINELS).
func (s *Sentinel) Addrs() string {
	a := make([]string, len(s.Sentinels))
	for i, sp := range s.Sentinels {
		a[i] = sp.Addr
	}
	return strings.Join(a, ",")
}

// PrimaryAddr asks the sentinels for the current primary's address.
func (s *Sentinel) PrimaryAddr(ctx context.Context) (string, error) {
	var lastErr error = errors.New("no sentinel answered")
	for _, sp := range s.Sentinels {
		c := sp.Client()
		a, err := c.GetMasterAddrByName(ctx, s.Master).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		if err != nil {
			lastErr = err
		}
	}
	return "", lastErr
}

// Primary returns the data node the sentinels name as primary.
func (s *Sentinel) Primary(t testing.TB) *Redis {
	t.Helper()
	addr := within(t, 5*time.Second, "sentinel primary", s.PrimaryAddr)
	for _, r := range s.Data {
		if r.Addr == addr {
			return r
		}
	}
	t.Fatalf("sentinels name %s, not a data node of the test", addr)
	return nil
}

// KillPrimary kills the current primary with SIGKILL and waits until every
// sentinel names the other data node and that node answers as a primary.
// It returns the killed node and how long the promotion took.
func (s *Sentinel) KillPrimary(t testing.TB) (*Redis, time.Duration) {
	t.Helper()
	dead := s.Primary(t)
	start := time.Now()
	dead.Kill()
	s.WaitPrimaryNot(t, dead.Addr, 60*time.Second)
	return dead, time.Since(start)
}

// WaitPrimaryNot waits until every sentinel names a primary other than old
// and that node reports role:master.
func (s *Sentinel) WaitPrimaryNot(t testing.TB, old string, timeout time.Duration) {
	t.Helper()
	EventuallyOK(t, timeout, "promotion of a replica", func(ctx context.Context) error {
		var addr string
		for _, sp := range s.Sentinels {
			c := sp.Client()
			a, err := c.GetMasterAddrByName(ctx, s.Master).Result()
			c.Close()
			if err != nil {
				return err
			}
			got := net.JoinHostPort(a[0], a[1])
			if got == old {
				return fmt.Errorf("sentinel %s still names %s", sp.Addr, old)
			}
			addr = got
		}
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		info, err := c.InfoMap(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if info["Replication"]["role"] != "master" {
			return fmt.Errorf("%s is not a master yet", addr)
		}
		return nil
	})
}

// RestartAsReplica starts a killed data node again as a replica of the
// current primary (what an operator's configuration would do; left alone,
// the sentinels would convert it too, but only after their next INFO
// round, up to 10 s later), and waits until it is in sync.
func (s *Sentinel) RestartAsReplica(t testing.TB, r *Redis) {
	t.Helper()
	primary := s.Primary(t)
	host, port, _ := net.SplitHostPort(primary.Addr)
	var args []string
	for i := 0; i < len(r.args); i++ {
		if r.args[i] == "--replicaof" && i+2 < len(r.args) {
			i += 2
			continue
		}
		args = append(args, r.args[i])
	}
	r.args = append(args, "--replicaof", host, port)
	r.Restart(t)
	s.WaitReplicaSynced(t, r, 60*time.Second)
}

// WaitReplicaSynced waits until node (a restarted former primary, say) is a
// replica of the current primary with its link up.
func (s *Sentinel) WaitReplicaSynced(t testing.TB, node *Redis, timeout time.Duration) {
	t.Helper()
	EventuallyOK(t, timeout, "replica "+node.Addr+" in sync", func(ctx context.Context) error {
		return replicaUp(ctx, node)
	})
}

func replicaUp(ctx context.Context, r *Redis) error {
	c := r.Client()
	defer c.Close()
	info, err := c.InfoMap(ctx, "replication").Result()
	if err != nil {
		return err
	}
	f := info["Replication"]
	if f["role"] != "slave" || f["master_link_status"] != "up" {
		return fmt.Errorf("%s: role %s, master link %s", r.Addr, f["role"], f["master_link_status"])
	}
	return nil
}
