// Package redisinfo counts a gateway's Redis connections with CLIENT LIST,
// spoken over a raw RESP connection (no client library needed).
package redisinfo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
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
	list, err := command(ctx, dial, t, "CLIENT", "LIST")
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
	cpu, err := command(ctx, dial, t, "INFO", "cpu")
	if err != nil {
		return nil, fmt.Errorf("redis INFO cpu: %w", err)
	}
	cmds, err := command(ctx, dial, t, "INFO", "commandstats")
	if err != nil {
		return nil, fmt.Errorf("redis INFO commandstats: %w", err)
	}
	s := &Snapshot{At: time.Now(), Commands: ParseCommandStats(cmds)}
	for _, line := range strings.Split(cpu, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				s.CPU += f
			}
		}
	}
	return s, nil
}

// ParseCommandStats parses "cmdstat_<name>:calls=N,usec=M,..." lines.
func ParseCommandStats(info string) map[string]CmdStat {
	out := map[string]CmdStat{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
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
		out[strings.TrimPrefix(name, "cmdstat_")] = st
	}
	return out
}

// command runs one command on a fresh connection and returns the reply.
func command(ctx context.Context, dial Dialer, t Target, args ...string) (string, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := dial(ctx, "tcp", t.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	br := bufio.NewReader(conn)
	if t.Password != "" {
		auth := []string{"AUTH", t.Password}
		if t.Username != "" {
			auth = []string{"AUTH", t.Username, t.Password}
		}
		if _, err := call(conn, br, auth...); err != nil {
			return "", fmt.Errorf("AUTH: %w", err)
		}
	}
	return call(conn, br, args...)
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

// call sends one command and reads a simple or bulk string reply.
func call(w io.Writer, br *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return "", err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '=': // RESP3 verbatim string: "txt:" prefix
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 4 {
			return "", fmt.Errorf("bad verbatim length %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[4:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
