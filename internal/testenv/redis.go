// Package testenv starts the throwaway servers that tests need: real
// redis-server processes on free loopback ports, and the popbox gateway
// binary itself. It also holds the helpers the test suites share: one
// polling loop with a deadline (Eventually) and one client harness for a
// gateway process over real HTTP (Node). Nothing here is used by the
// production binary.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server process owned by one test (or an external server
// named by POPBOX_TEST_REDIS_URL).
type Redis struct {
	Addr     string // host:port
	dir      string
	args     []string
	proc     running
	external bool
	db       int
}

// RedisOption changes how a test Redis is started.
type RedisOption func(*redisOpts)

type redisOpts struct {
	extraArgs []string
	forceOwn  bool
}

// WithRedisArgs passes extra command-line arguments to redis-server
// (e.g. "--appendonly", "yes"). It forces a private server.
func WithRedisArgs(args ...string) RedisOption {
	return func(o *redisOpts) { o.extraArgs = append(o.extraArgs, args...); o.forceOwn = true }
}

// OwnRedis forces a private redis-server even when POPBOX_TEST_REDIS_URL is
// set (for tests that stop or restart the server).
func OwnRedis() RedisOption { return func(o *redisOpts) { o.forceOwn = true } }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartRedis starts a private redis-server on a free loopback port and stops
// it when the test ends. When POPBOX_TEST_REDIS_URL is set (and no option
// forces a private server) that server is used instead and its database is
// flushed first: pointing the variable at a server gives the tests leave to
// do so.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	var o redisOpts
	for _, fn := range opts {
		fn(&o)
	}
	if u := os.Getenv("POPBOX_TEST_REDIS_URL"); u != "" && !o.forceOwn {
		ro, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("POPBOX_TEST_REDIS_URL: %v", err)
		}
		r := &Redis{Addr: ro.Addr, external: true, db: ro.DB}
		c := r.Client()
		defer c.Close()
		if err := c.FlushDB(context.Background()).Err(); err != nil {
			t.Fatalf("flush external test redis: %v", err)
		}
		return r
	}
	bin := lookPath(t, "redis-server", "redis-server")
	dir := t.TempDir()
	r := &Redis{dir: dir}
	r.args = append([]string{
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--loglevel", "warning",
	}, o.extraArgs...)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		r.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = r.start(bin); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start redis-server: %v", lastErr)
	}
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) start(bin string) error {
	_, port, _ := net.SplitHostPort(r.Addr)
	args := append([]string{"--port", port}, r.args...)
	if err := r.proc.start(filepath.Join(r.dir, "redis-"+port+".log"), bin, args...); err != nil {
		return err
	}
	if err := waitOwnRedis(r.Addr, r.proc.pid(), 10*time.Second); err != nil {
		r.proc.end(os.Kill, 10*time.Second)
		return err
	}
	return nil
}

// waitOwnRedis waits until the redis-server with process id pid answers
// at addr. Checking the pid (INFO server) matters: when another test's
// server holds the port we were handed, ours fails to bind and exits while
// the other one answers PING, and the test would share its data.
func waitOwnRedis(addr string, pid int, timeout time.Duration) error {
	if err := WaitRedis(addr, timeout); err != nil {
		return err
	}
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("INFO server at %s: %w", addr, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if v != strconv.Itoa(pid) {
				return fmt.Errorf("%s is served by process %s, not by ours (%d): port taken", addr, v, pid)
			}
			return nil
		}
	}
	return fmt.Errorf("INFO server at %s names no process_id", addr)
}

// WaitRedis polls addr with PING until it answers or the timeout passes.
func WaitRedis(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
			err = fmt.Errorf("redis at %s answered %q: %v", addr, line, rerr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis at %s not ready: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the redis:// URL of the server (with its database).
func (r *Redis) URL() string {
	return (&url.URL{Scheme: "redis", Host: r.Addr, Path: "/" + strconv.Itoa(r.db)}).String()
}

// Client returns a new go-redis client for the server; the caller closes it.
func (r *Redis) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, DB: r.db})
}

// Pid is the process id of the server while it runs (0 for an external
// server, or once it was stopped or killed), for a test that signals it
// itself (e.g. SIGSTOP to make a client's read time out).
func (r *Redis) Pid() int { return r.proc.pid() }

// Stop shuts the server down (SIGTERM) and waits for it.
func (r *Redis) Stop() { r.signal(false) }

// Kill kills the server with SIGKILL and waits for it.
func (r *Redis) Kill() { r.signal(true) }

func (r *Redis) signal(kill bool) {
	if r.external {
		return
	}
	sig := os.Interrupt
	if kill {
		sig = os.Kill
	}
	r.proc.end(sig, 10*time.Second)
}

// Restart starts the server again on the same port and directory (so an
// append-only file written before survives).
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	if r.external {
		t.Fatal("cannot restart an external test redis")
	}
	r.Stop()
	bin := lookPath(t, "redis-server", "redis-server")
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = r.start(bin); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restart redis-server: %v", err)
}

// ClientCount returns how many client connections the server reports whose
// name starts with prefix (CLIENT LIST), e.g. the connections of one
// gateway node.
func (r *Redis) ClientCount(ctx context.Context, prefix string) (int, error) {
	c := r.Client()
	defer c.Close()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "name=") && strings.HasPrefix(strings.TrimPrefix(f, "name="), prefix) && prefix != "" {
				n++
			}
		}
	}
	return n, nil
}
