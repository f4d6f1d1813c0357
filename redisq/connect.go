package redisq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// ConnectOptions say how to reach Redis. Exactly one of URL, Cluster or
// Sentinels is used (in that order of precedence: Cluster, Sentinels, URL).
type ConnectOptions struct {
	URL              string   // redis://[user:pass@]host:port/db
	Cluster          []string // seed addresses of a Redis Cluster
	Sentinels        []string // Sentinel addresses
	Master           string   // Sentinel master name
	Password         string   // Redis password (Cluster / Sentinel data nodes)
	SentinelPassword string
	PoolSize         int    // bounded command pool per Redis node
	ClientName       string // CLIENT SETNAME for every connection (lets operators count a node's connections)
}

// protocol is the RESP version of every connection: RESP2. The gateway
// expects no RESP3 push (the wake-up subscription works the same on RESP2),
// and on RESP3 go-redis checks every connection for pending pushes around
// each command (ProcessPendingNotifications: 8.8 % of the gateway's CPU in
// the provisioning profile of issue 14). Replies read the same: every
// command and script of this package answers with RESP2 types.
const protocol = 2

// noMaintNotifications turns off go-redis' maintenance notifications (Redis
// Enterprise / Cloud hitless upgrades): they arrive as RESP3 pushes, which
// RESP2 has not (left on, go-redis logs a failed attempt per client).
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// Connect builds a go-redis UniversalClient for the options and pings it.
func Connect(ctx context.Context, o ConnectOptions) (redis.UniversalClient, error) {
	if o.PoolSize <= 0 {
		o.PoolSize = 32
	}
	var c redis.UniversalClient
	switch {
	case len(o.Cluster) > 0:
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                    o.Cluster,
			Protocol:                 protocol,
			MaintNotificationsConfig: noMaintNotifications(),
			Password:                 o.Password,
			PoolSize:                 o.PoolSize,
			MinIdleConns:             1,
			ClientName:               o.ClientName,
		})
	case len(o.Sentinels) > 0:
		if o.Master == "" {
			return nil, errors.New("redis: sentinel mode needs a master name")
		}
		c = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       o.Master,
			Protocol:         protocol,
			SentinelAddrs:    o.Sentinels,
			SentinelPassword: o.SentinelPassword,
			Password:         o.Password,
			PoolSize:         o.PoolSize,
			ClientName:       o.ClientName,
		})
	default:
		opt, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		opt.PoolSize = o.PoolSize
		opt.Protocol = protocol
		opt.MaintNotificationsConfig = noMaintNotifications()
		opt.ClientName = o.ClientName
		if o.Password != "" && opt.Password == "" {
			opt.Password = o.Password
		}
		c = redis.NewClient(opt)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis ping: %w", err)
	}
	return c, nil
}

// NodeInfo describes one Redis server as GET / shows it.
type NodeInfo struct {
	Addr       string `json:"addr"`
	Role       string `json:"role"`
	Reachable  bool   `json:"reachable"`
	Version    string `json:"version,omitempty"`
	UsedMemory int64  `json:"usedMemory,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Topology reads role, version and memory of every Redis server behind the
// client (every shard, primaries and replicas, in Cluster mode).
func (s *Store) Topology(ctx context.Context) []NodeInfo {
	var mu sync.Mutex
	var out []NodeInfo
	probe := func(ctx context.Context, c *redis.Client) error {
		n := NodeInfo{Addr: c.Options().Addr}
		info, err := c.InfoMap(ctx, "server", "memory", "replication").Result()
		if err != nil {
			// Servers that take no INFO sections (the embedded store).
			if perr := c.Ping(ctx).Err(); perr == nil {
				info, err = c.InfoMap(ctx).Result()
				if err != nil {
					n.Reachable, info, err = true, nil, nil
				}
			}
		}
		if err != nil {
			n.Error = err.Error()
		} else {
			n.Reachable = true
			n.Version = info["Server"]["redis_version"]
			n.Role = info["Replication"]["role"]
			fmt.Sscan(info["Memory"]["used_memory"], &n.UsedMemory)
		}
		mu.Lock()
		out = append(out, n)
		mu.Unlock()
		return nil
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		if err := c.ForEachShard(ctx, probe); err != nil {
			out = append(out, NodeInfo{Addr: strings.Join(c.Options().Addrs, ","), Error: err.Error()})
		}
	case *redis.Client:
		_ = probe(ctx, c)
	}
	sortNodes(out)
	return out
}

func sortNodes(n []NodeInfo) {
	sort.Slice(n, func(i, j int) bool { return n[i].Addr < n[j].Addr })
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}
