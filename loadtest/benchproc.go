package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// The processes a benchmark suite starts and watches: gateways, redis-server,
// the Centrifugo peer and the helpers that wait for them.

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child is a process the suite started.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startChild(name, bin string, args, env []string, logPath string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

type redisChild struct {
	*child
	addr string
}

func startRedis(ctx context.Context, bin, dir, logPath string) (*redisChild, error) {
	c, addr, err := startOnFreePort(ctx, dir, 10*time.Second, func(port int) (*child, error) {
		return startChild("redis-server", bin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir, "--maxclients", "10000"}, nil, logPath)
	}, redisPing)
	if err != nil {
		return nil, fmt.Errorf("redis-server did not start: %w", err)
	}
	return &redisChild{child: c, addr: addr}, nil
}

// startOnFreePort makes dir, then starts a child with start on a free
// loopback port and waits up to timeout until ready holds for its address
// (127.0.0.1:port); it tries three ports before it gives up.
func startOnFreePort(ctx context.Context, dir string, timeout time.Duration, start func(port int) (*child, error), ready func(addr string) bool) (*child, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		c, err := start(port)
		if err != nil {
			return nil, "", err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if lastErr = waitFor(ctx, timeout, c, func() bool { return ready(addr) }); lastErr == nil {
			return c, addr, nil
		}
		c.stop(2 * time.Second)
	}
	return nil, "", lastErr
}

func redisPing(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, _ := conn.Read(buf)
	return strings.HasPrefix(string(buf[:n]), "+PONG")
}

// waitFor polls ok until it holds, the child exits or the timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, c *child, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if poll(ctx, 50*time.Millisecond, c.done, ok) {
		return nil
	}
	select {
	case <-c.done:
		return fmt.Errorf("%s exited: %v", c.name, c.err)
	default:
		return fmt.Errorf("%s not ready after %v", c.name, timeout)
	}
}

// gatewayEnv is the environment gateway i of case c gets beyond the
// suite's own: the case's GatewayEnv, and for the first gateway the
// profiler's address when pprofAddr is set.
func gatewayEnv(c benchCase, i int, pprofAddr string) []string {
	env := append([]string{}, c.GatewayEnv...)
	if i == 0 && pprofAddr != "" {
		env = append(env, "POPBOX_PPROF_LISTEN="+pprofAddr)
	}
	return env
}

// startGateways starts c.Gateways gateway processes against redisAddr and
// returns them with the target URLs.
// With pprofAddr set, the first gateway serves its profiler there.
func startGateways(ctx context.Context, bin string, c benchCase, redisAddr, logDir, pprofAddr string) ([]*child, []string, error) {
	var gws []*child
	var targets []string
	shared := 0
	if c.ReusePort {
		p, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		shared = p
		targets = []string{fmt.Sprintf("http://127.0.0.1:%d", p)}
	}
	for i := 0; i < c.Gateways; i++ {
		port := shared
		if port == 0 {
			p, err := freePort()
			if err != nil {
				return gws, nil, err
			}
			port = p
			targets = append(targets, fmt.Sprintf("http://127.0.0.1:%d", p))
		}
		args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--redis-url", "redis://" + redisAddr + "/0",
			"--node-name", fmt.Sprintf("bench-%s-%d", c.Name, i), "--log-level", "warn", "--shutdown-timeout", "5s"}
		if c.ReusePort {
			args = append(args, "--reuseport")
		}
		args = append(args, c.GatewayArgs...)
		g, err := startChild(fmt.Sprintf("gateway %d", i), bin, args, gatewayEnv(c, i, pprofAddr), filepath.Join(logDir, fmt.Sprintf("%s-gateway-%d.log", c.Name, i)))
		if err != nil {
			return gws, nil, err
		}
		gws = append(gws, g)
		url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
		pid := g.cmd.Process.Pid
		err = waitFor(ctx, 30*time.Second, g, func() bool {
			if c.ReusePort {
				pids, _, err := (sysinfo.Proc{}).FindGateways([]int{port})
				if err != nil {
					return false
				}
				found := false
				for _, p := range pids {
					found = found || p == pid
				}
				if !found {
					return false
				}
			}
			return httpOK(url)
		})
		if err != nil {
			return gws, nil, err
		}
	}
	return gws, targets, nil
}

func httpOK(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func redisVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// centrifugoVersion runs `centrifugo version` ("Centrifugo v6.9.1 (Go
// version: ...)") and returns the version ("v6.9.1").
func centrifugoVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", bin, err)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "v") && strings.Count(f, ".") >= 2 {
			return f, nil
		}
	}
	return "", fmt.Errorf("%s version: unexpected output %.80q", bin, out)
}

// startCentrifugo starts the peer on a free loopback port with
// centrifugoConfig and a random API key, waits until /health answers and
// returns it with its target URL for the load tool.
func startCentrifugo(ctx context.Context, bin, dir, logPath string) (*child, string, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, "", err
	}
	apiKey := hex.EncodeToString(key[:])
	c, addr, err := startOnFreePort(ctx, dir, 30*time.Second, func(port int) (*child, error) {
		b, err := json.MarshalIndent(centrifugoConfig(port, apiKey), "", "  ")
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(dir, "config.json")
		if err := os.WriteFile(cfg, b, 0o600); err != nil {
			return nil, err
		}
		return startChild("centrifugo", bin, []string{"--config", cfg}, nil, logPath)
	}, func(addr string) bool { return httpOK("http://" + addr + "/health") })
	if err != nil {
		return nil, "", fmt.Errorf("centrifugo did not start (see %s): %w", logPath, err)
	}
	u := url.URL{Scheme: transport.CentrifugoScheme, User: url.UserPassword("api", apiKey), Host: addr}
	return c, u.String(), nil
}
