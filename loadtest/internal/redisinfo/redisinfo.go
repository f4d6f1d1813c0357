// Package redisinfo counts a gateway's Redis connections with CLIENT LIST
// and reads Redis' CPU time and command counts with INFO (go-redis'
// InfoMap), each over one short-lived connection made by the caller's
// Dialer.
package redisinfo

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Target is a Redis server to ask.
type Target struct {
	Addr     string // host:port
	Username string
	Password string
}

// ParseTarget accepts host:port or a redis:// URL (with optional
// credentials).
func ParseTarget(s string) (Target, error) {
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return Target{}, fmt.Errorf("redis address %q: %w", s, err)
		}
		return Target{Addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("redis URL: %w", err)
	}
	if u.Scheme != "redis" {
		return Target{}, fmt.Errorf("redis URL %q: only redis:// is supported", s)
	}
	t := Target{Addr: u.Host}
	if u.Port() == "" {
		t.Addr = net.JoinHostPort(u.Hostname(), "6379")
	}
	if u.User != nil {
		t.Username = u.User.Username()
		t.Password, _ = u.User.Password()
	}
	return t, nil
}

// Clients is what CLIENT LIST says.
type Clients struct {
	Total int `json:"total"`
	// Popbox counts the clients whose name starts with "popbox".
	Popbox int `json:"popbox"`
	// ByName counts the popbox clients per name ("popbox:<node>").
	ByName map[string]int `json:"by_name,omitempty"`
}

// MaxPerName is the largest per-name count (the worst gateway node).
func (c Clients) MaxPerName() int {
	m := 0
	for _, n := range c.ByName {
		m = max(m, n)
	}
	return m
}

// Names returns the popbox client names, sorted.
func (c Clients) Names() []string {
	var out []string
	for n := range c.ByName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Dialer makes the connection (lets the caller enforce loopback).
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// ListClients runs CLIENT LIST on t and counts the clients.
func ListClients(ctx context.Context, dial Dialer, t Target) (Clients, error) {
	c, cancel := client(dial, t)
	defer cancel()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return Clients{}, fmt.Errorf("redis CLIENT LIST: %w", err)
	}
	return ParseClientList(list), nil
}

// CmdStat is one line of INFO commandstats.
type CmdStat struct {
	Calls int64 `json:"calls"`
	Usec  int64 `json:"usec"`
}

// Snapshot is the part of INFO the load tool tracks.
type Snapshot struct {
	At       time.Time
	CPU      float64            // used_cpu_sys + used_cpu_user, seconds
	Commands map[string]CmdStat // INFO commandstats (script-internal calls included)
}

// Info takes a Snapshot of t (INFO cpu and INFO commandstats).
func Info(ctx context.Context, dial Dialer, t Target) (*Snapshot, error) {
	c, cancel := client(dial, t)
	defer cancel()
	info, err := c.InfoMap(ctx, "cpu", "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("redis INFO: %w", err)
	}
	s := &Snapshot{At: time.Now(), Commands: ParseCommandStats(info["Commandstats"])}
	for _, k := range []string{"used_cpu_sys", "used_cpu_user"} {
		if f, err := strconv.ParseFloat(info["CPU"][k], 64); err == nil {
			s.CPU += f
		}
	}
	return s, nil
}

// ParseCommandStats parses the "cmdstat_<name>" entries of INFO
// commandstats ("calls=N,usec=M,...").
func ParseCommandStats(section map[string]string) map[string]CmdStat {
	out := map[string]CmdStat{}
	for name, rest := range section {
		name, ok := strings.CutPrefix(name, "cmdstat_")
		if !ok {
			continue
		}
		var st CmdStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "calls":
				st.Calls = n
			case "usec":
				st.Usec = n
			}
		}
		out[name] = st
	}
	return out
}

// client returns a one-connection go-redis client for t that dials with
// dial, speaks RESP2 and sends no CLIENT SETINFO (so the commands it adds
// to the measured server are AUTH, INFO and CLIENT LIST only), and a
// function that closes it. Every call is bounded to 5 s.
func client(dial Dialer, t Target) (*redis.Client, func()) {
	o := &redis.Options{
		Addr: t.Addr, Username: t.Username, Password: t.Password,
		Protocol: 2, DisableIdentity: true, PoolSize: 1, MaxRetries: -1,
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
	}
	if dial != nil {
		o.Dialer = dial
	}
	c := redis.NewClient(o)
	return c, func() { _ = c.Close() }
}

// ParseClientList counts the entries of a CLIENT LIST reply.
func ParseClientList(list string) Clients {
	c := Clients{ByName: map[string]int{}}
	for _, line := range strings.Split(list, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		c.Total++
		for _, f := range strings.Fields(line) {
			if name, ok := strings.CutPrefix(f, "name="); ok {
				if strings.HasPrefix(name, "popbox") {
					c.Popbox++
					c.ByName[name]++
				}
				break
			}
		}
	}
	return c
}
