package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// RepoRoot returns the root of the popbox module (the folder with go.mod).
func RepoRoot() (string, error) { return popboxModuleRoot() }

// GatewayBinary returns the popbox binary built from the current sources
// (with -race unless POPBOX_TEST_NORACE is set), building it once into the
// test binary cache keyed by a hash of the sources, so the test packages
// that start gateways share one build.
//
// POPBOX_TEST_GATEWAY_BIN names a popbox binary to use instead (no build):
// e.g. one built from an older commit, to check that a test fails on it.
func GatewayBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("POPBOX_TEST_GATEWAY_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("POPBOX_TEST_GATEWAY_BIN: %v", err)
		}
		return bin
	}
	buildOnce.Do(func() {
		root, err := popboxModuleRoot()
		if err != nil {
			buildErr = err
			return
		}
		race := os.Getenv("POPBOX_TEST_NORACE") == ""
		key, err := hashSources(root, []string{"tools", "loadtest", "tests", "deploy"}, fmt.Sprintf("race=%v", race))
		if err != nil {
			buildErr = err
			return
		}
		args := []string{"build", "-o"}
		buildPath, _, buildErr = cachedBuild("popbox", key, func(out string) error {
			a := append(args, out)
			if race {
				a = append(a, "-race")
			}
			cmd := goCommand(root, append(a, "./cmd/popbox")...)
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/popbox: %w\n%s", err, b)
			}
			return nil
		})
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Gateway is a popbox serve process started by a test.
type Gateway struct {
	URL    string // http://127.0.0.1:PORT
	Addr   string
	TLSURL string // https://127.0.0.1:PORT when TLS is configured
	env    []string
	args   []string
	proc   running
	log    *SyncBuffer // this run's output; mu guards the pointer (a restart replaces it)
	mu     sync.Mutex
	tlsOn  bool
	logDir string
}

// GatewayOption changes how a test gateway is started.
type GatewayOption func(*Gateway)

// WithEnv adds environment variables (KEY=VALUE).
func WithEnv(kv ...string) GatewayOption { return func(g *Gateway) { g.env = append(g.env, kv...) } }

// WithTLS gives the gateway a TLS port with the given cert and key files.
func WithTLS(cert, key string) GatewayOption {
	return func(g *Gateway) {
		g.tlsOn = true
		g.env = append(g.env, "POPBOX_TLS_CERT="+cert, "POPBOX_TLS_KEY="+key)
	}
}

// StartGateway starts `popbox serve` on free loopback ports against the
// given Redis URL ("" = embedded store) and waits until /healthz answers.
// The process is killed when the test ends.
func StartGateway(t testing.TB, redisURL string, opts ...GatewayOption) *Gateway {
	t.Helper()
	bin := GatewayBinary(t)
	g := &Gateway{logDir: t.TempDir()}
	for _, o := range opts {
		o(g)
	}
	// Port 0: the gateway binds a port the kernel picks and logs it, so
	// two tests can never be handed the same "free" port (a FreePort-then-
	// bind race once let a gateway fail to bind while /healthz was answered
	// by another test's gateway on that port). Restarts reuse the ports.
	g.env = append(g.env, "POPBOX_LISTEN=127.0.0.1:0", "POPBOX_REDIS_URL="+redisURL, "POPBOX_LOG_LEVEL=info",
		"POPBOX_LOG_FORMAT=text", "POPBOX_SHUTDOWN_TIMEOUT=10s")
	if g.tlsOn {
		g.env = append(g.env, "POPBOX_TLS_LISTEN=127.0.0.1:0")
	}
	g.args = []string{"serve"}
	g.start(t, bin)
	t.Cleanup(func() {
		g.Kill()
		if t.Failed() {
			t.Logf("gateway %s log:\n%s", g.Addr, g.Log())
		}
	})
	return g
}

func (g *Gateway) start(t testing.TB, bin string) {
	t.Helper()
	cmd := exec.Command(bin, g.args...)
	cmd.Env = append(os.Environ(), g.env...)
	log := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	g.mu.Lock()
	g.log = log
	g.mu.Unlock()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	g.proc.set(cmd, done)
	deadline := time.Now().Add(30 * time.Second)
	plain, tlsAddr := g.waitServing(t, done, deadline)
	if g.Addr == "" {
		// First start: keep the ports the kernel gave for restarts.
		g.Addr, g.URL = plain, "http://"+plain
		g.env = append(g.env, "POPBOX_LISTEN="+plain)
		if g.tlsOn {
			g.TLSURL = "https://" + tlsAddr
			g.env = append(g.env, "POPBOX_TLS_LISTEN="+tlsAddr)
		}
	} else if plain != g.Addr {
		t.Fatalf("restarted gateway listens on %s, want %s", plain, g.Addr)
	}
	for {
		resp, err := http.Get(g.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("gateway exited during start:\n%s", g.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, g.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitServing waits for this process's "popbox serving" log line and
// returns the plain and TLS addresses it names (those it actually bound).
func (g *Gateway) waitServing(t testing.TB, done <-chan struct{}, deadline time.Time) (plain, tlsAddr string) {
	t.Helper()
	for {
		for _, line := range strings.Split(g.Log(), "\n") {
			if !strings.Contains(line, `msg="popbox serving"`) {
				continue
			}
			plain, tlsAddr = logField(line, "listen"), logField(line, "tls")
			if plain != "" && (!g.tlsOn || tlsAddr != "") {
				return plain, tlsAddr
			}
			t.Fatalf("gateway serving line without its addresses: %s", line)
		}
		select {
		case <-done:
			t.Fatalf("gateway exited during start:\n%s", g.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway did not log \"popbox serving\" in time:\n%s", g.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logField returns the value of key=value in a slog text line ("" when
// absent or quoted empty).
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return strings.Trim(v, `"`)
}

// Log returns what the gateway wrote so far.
func (g *Gateway) Log() string {
	g.mu.Lock()
	log := g.log
	g.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

// Pid is the process id of the gateway.
func (g *Gateway) Pid() int { return g.proc.pid() }

// Kill kills the gateway with SIGKILL (a crash) and waits for it.
func (g *Gateway) Kill() { g.signal(os.Kill) }

// Stop asks the gateway to shut down gracefully (SIGTERM) and waits.
func (g *Gateway) Stop() { g.signal(os.Interrupt) }

func (g *Gateway) signal(sig os.Signal) {
	g.proc.end(sig, 30*time.Second)
}

// Restart starts the gateway again with the same settings and ports.
func (g *Gateway) Restart(t testing.TB) {
	t.Helper()
	g.Stop()
	g.start(t, GatewayBinary(t))
}

// NodeName returns the node id the gateway logged at start ("" if not found).
func (g *Gateway) NodeName() string {
	for _, line := range strings.Split(g.Log(), "\n") {
		if i := strings.Index(line, " node="); i >= 0 {
			rest := line[i+len(" node="):]
			if j := strings.IndexByte(rest, ' '); j >= 0 {
				rest = rest[:j]
			}
			return rest
		}
	}
	return ""
}
