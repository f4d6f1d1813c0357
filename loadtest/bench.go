package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popbox/popbox/loadtest/internal/sysinfo"
)

// benchCase is one scenario run of the benchmark suite.
type benchCase struct {
	Name      string   // result file stem
	Scenario  string   // capacity, throughput, fanout, latency
	Args      []string // scenario flags, without target/pid/redis/out/chart
	Gateways  int      // gateway processes to start
	ReusePort bool     // gateways share one port (SO_REUSEPORT)
}

// suites returns the reduced suite (make bench: under 10 minutes on a
// 2-core box) or the full one (make bench-full).
func suites(full, reuseport bool, scale float64) []benchCase {
	mixAll := "sse=40,ws=30,wsmux=10,stream=10,longpoll=10"
	mixEven := "sse=20,ws=20,wsmux=20,stream=20,longpoll=20"
	capHold, capIdle, tpDur, latDur, rounds := "40s", "20s", "20s", "30s", "5"
	if full {
		capHold, capIdle, tpDur, latDur, rounds = "120s", "60s", "60s", "120s", "10"
	}
	cases := []benchCase{
		{Name: "capacity", Scenario: "capacity", Gateways: 1, Args: []string{
			"--conns", "19500", "--mix", mixAll, "--duration", capHold, "--idle-window", capIdle, "--procs", "2"}},
		{Name: "throughput", Scenario: "throughput", Gateways: 1, Args: []string{
			"--conns", "1000", "--mix", "sse=100", "--duration", tpDur, "--prov-conns", "64"}},
		{Name: "fanout", Scenario: "fanout", Gateways: 1, Args: []string{
			"--queues", "10000", "--mix", "sse=50,ws=50", "--rounds", rounds}},
		{Name: "latency", Scenario: "latency", Gateways: 1, Args: []string{
			"--conns", "10000", "--mix", mixEven, "--rate", "1000", "--duration", latDur}},
	}
	if full {
		cases = append(cases, benchCase{Name: "capacity-100k", Scenario: "capacity", Gateways: 6, ReusePort: reuseport,
			Args: []string{"--conns", "100000", "--mix", mixAll, "--duration", "120s", "--idle-window", "60s", "--procs", "6"}})
	}
	if scale != 1 {
		for i := range cases {
			cases[i].Args = scaleArgs(cases[i].Args, scale)
		}
	}
	return cases
}

// scaleArgs multiplies the counts (--conns, --queues) and durations
// (--duration, --idle-window) of a case by f, for quick trial runs.
func scaleArgs(args []string, f float64) []string {
	out := append([]string{}, args...)
	for i := 0; i+1 < len(out); i++ {
		switch out[i] {
		case "--conns", "--queues":
			n, _ := strconv.Atoi(out[i+1])
			out[i+1] = strconv.Itoa(max(10, int(float64(n)*f)))
		case "--duration", "--idle-window":
			d, _ := time.ParseDuration(out[i+1])
			min := 2 * time.Second
			if out[i] == "--idle-window" {
				min = time.Second
			}
			out[i+1] = max(min, time.Duration(float64(d)*f).Round(time.Second)).String()
		}
	}
	return out
}

// SuiteMeta describes one run of the suite (suite-<mode>.json).
type SuiteMeta struct {
	Mode         string          `json:"mode"` // "reduced" or "full"
	Date         time.Time       `json:"date"`
	WallSecs     float64         `json:"wall_s"`
	Machine      sysinfo.Machine `json:"machine"`
	GatewayRev   string          `json:"gateway_revision"`
	RedisVersion string          `json:"redis_version"`
	Invocation   string          `json:"invocation"`
	Cases        []CaseMeta      `json:"cases"`
	RedisBench   []RedisBenchRow `json:"redis_benchmark,omitempty"`
	RedisBenchCm []string        `json:"redis_benchmark_commands,omitempty"`
	// RedisBenchLoad is the 1-minute load average when redis-benchmark started.
	RedisBenchLoad float64 `json:"redis_benchmark_loadavg,omitempty"`
}

// CaseMeta is one scenario of the suite.
type CaseMeta struct {
	Name      string `json:"name"`
	Scenario  string `json:"scenario"`
	File      string `json:"file"`
	Command   string `json:"command"`
	Gateways  int    `json:"gateways"`
	ReusePort bool   `json:"reuseport"`
	Error     string `json:"error,omitempty"`
}

// RedisBenchRow is one redis-benchmark test.
type RedisBenchRow struct {
	Test string  `json:"test"`
	RPS  float64 `json:"rps"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
}

type benchOpts struct {
	full, renderOnly, redisBench, reuseport, quiet, profile bool
	gatewayBin, redisServer, results, writeDoc, only        string
	scale                                                   float64
}

func runBenchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var bo benchOpts
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&bo.full, "full", false, "the full suite (long runs, 100,000 connections over 6 gateway processes)")
	fs.StringVar(&bo.gatewayBin, "gateway-bin", "", "use this popbox binary instead of building ./cmd/popbox")
	fs.StringVar(&bo.redisServer, "redis-server", "redis-server", "redis-server executable")
	fs.StringVar(&bo.results, "results", "artifacts/bench", "directory for the JSON results, charts and logs")
	fs.StringVar(&bo.writeDoc, "write-doc", "", "regenerate the tables of this Markdown file (e.g. docs/BENCHMARKS.md) from the results")
	fs.StringVar(&bo.only, "only", "", "run only these cases, comma-separated (capacity, throughput, fanout, latency, capacity-100k)")
	fs.BoolVar(&bo.renderOnly, "render-only", false, "run nothing: only rewrite --write-doc from the JSON files in --results")
	fs.BoolVar(&bo.redisBench, "redis-benchmark", true, "also measure Redis itself with redis-benchmark")
	fs.BoolVar(&bo.reuseport, "reuseport", true, "full suite: the 6 gateways share one port (SO_REUSEPORT; client sockets then use several loopback source addresses)")
	fs.BoolVar(&bo.quiet, "quiet", false, "no progress line")
	fs.BoolVar(&bo.profile, "profile", false, "build the gateway with the profiler (./loadtest/pprofgw) and save CPU/heap profiles of each case next to its results")
	fs.Float64Var(&bo.scale, "scale", 1, "multiply connection counts and durations by this factor (a quick trial: 0.05)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: go run ./loadtest bench [flags]\n\nRuns the benchmark suite against gateways and a redis-server it starts itself on free\nloopback ports, writes JSON results to --results and, with --write-doc, the tables of\ndocs/BENCHMARKS.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := os.MkdirAll(bo.results, 0o755); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if !bo.renderOnly {
		if err := runSuite(ctx, &bo, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 2
		}
	}
	if bo.writeDoc != "" {
		if err := writeBenchDoc(bo.writeDoc, bo.results); err != nil {
			fmt.Fprintf(stderr, "bench: writing %s: %v\n", bo.writeDoc, err)
			return 2
		}
		fmt.Fprintf(stdout, "wrote %s\n", bo.writeDoc)
	}
	return 0
}

func runSuite(ctx context.Context, bo *benchOpts, stdout, stderr io.Writer) error {
	started := time.Now()
	if _, err := sysinfo.RaiseNoFile(); err != nil {
		return err
	}
	redisBin, err := exec.LookPath(bo.redisServer)
	if err != nil {
		return fmt.Errorf("redis-server not found (%v): install it (apt-get install redis-server)", err)
	}
	tmp, err := os.MkdirTemp("", "popbox-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, rev := findModuleRoot(), ""
	bin := bo.gatewayBin
	if bin == "" {
		if root == "" {
			return errors.New("cannot find the popbox module root (go.mod); run from the repository or give --gateway-bin")
		}
		bin = filepath.Join(tmp, "popbox")
		pkg := "./cmd/popbox"
		if bo.profile {
			bin, pkg = filepath.Join(tmp, "popbox-pprof"), "./loadtest/pprofgw"
		}
		fmt.Fprintf(stdout, "building the gateway: go build -o %s %s\n", bin, pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the gateway: %w", err)
		}
	}
	if root != "" {
		if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			rev = strings.TrimSpace(string(out))
		}
	}
	mode := "reduced"
	if bo.full {
		mode = "full"
	}
	meta := &SuiteMeta{Mode: mode, Date: started.UTC(), Machine: sysinfo.Proc{}.DescribeMachine(),
		GatewayRev: rev, RedisVersion: redisVersion(redisBin), Invocation: strings.TrimSpace("go run ./loadtest bench " + strings.Join(os.Args[2:], " "))}
	only := map[string]bool{}
	for _, s := range strings.Split(bo.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			only[s] = true
		}
	}
	if bo.scale <= 0 || bo.scale > 1 {
		return errors.New("--scale must be in (0, 1]")
	}
	for _, c := range suites(bo.full, bo.reuseport, bo.scale) {
		if len(only) > 0 && !only[c.Name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		cm := runBenchCase(ctx, bo, c, bin, redisBin, tmp, stdout, stderr)
		meta.Cases = append(meta.Cases, cm)
	}
	if bo.redisBench && ctx.Err() == nil && (len(only) == 0 || only["redis-benchmark"]) {
		meta.RedisBenchLoad, _ = sysinfo.Proc{}.LoadAvg()
		rows, cmds, err := runRedisBenchmark(ctx, redisBin, tmp, bo.full)
		if err != nil {
			fmt.Fprintf(stderr, "redis-benchmark: %v\n", err)
		}
		meta.RedisBench, meta.RedisBenchCm = rows, cmds
		for _, r := range rows {
			fmt.Fprintf(stdout, "redis-benchmark %-40s %10.0f req/s  p50 %.3f ms  p99 %.3f ms\n", r.Test, r.RPS, r.P50, r.P99)
		}
	}
	meta.WallSecs = time.Since(started).Seconds()
	b, _ := json.MarshalIndent(meta, "", "  ")
	path := filepath.Join(bo.results, "suite-"+mode+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "suite %s done in %.0fs; results in %s\n", mode, meta.WallSecs, bo.results)
	return ctx.Err()
}

// runBenchCase starts a fresh Redis and gateway(s), runs one scenario and
// stops them again.
func runBenchCase(ctx context.Context, bo *benchOpts, c benchCase, bin, redisBin, tmp string, stdout, stderr io.Writer) CaseMeta {
	cm := CaseMeta{Name: c.Name, Scenario: c.Scenario, File: c.Name + ".json", Gateways: c.Gateways, ReusePort: c.ReusePort}
	fail := func(err error) CaseMeta {
		cm.Error = err.Error()
		fmt.Fprintf(stderr, "bench %s: %v\n", c.Name, err)
		return cm
	}
	fmt.Fprintf(stdout, "\n--- %s: %d gateway(s)%s, go run ./loadtest %s %s\n", c.Name, c.Gateways,
		map[bool]string{true: " sharing one port", false: ""}[c.ReusePort], c.Scenario, strings.Join(c.Args, " "))
	rd, err := startRedis(ctx, redisBin, filepath.Join(tmp, c.Name+"-redis"), filepath.Join(bo.results, c.Name+"-redis.log"))
	if err != nil {
		return fail(err)
	}
	defer rd.stop(10 * time.Second)
	pprofAddr := ""
	if bo.profile {
		p, err := freePort()
		if err != nil {
			return fail(err)
		}
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", p)
	}
	gws, targets, err := startGateways(ctx, bin, c, rd.addr, bo.results, pprofAddr)
	defer func() {
		for _, g := range gws {
			g.stop(20 * time.Second)
		}
	}()
	if err != nil {
		return fail(err)
	}
	var pids []string
	for _, g := range gws {
		pids = append(pids, strconv.Itoa(g.cmd.Process.Pid))
	}
	args := append([]string{}, c.Args...)
	args = append(args, "--target", strings.Join(targets, ","), "--gateway-pid", strings.Join(pids, ","),
		"--redis", rd.addr, "--out", filepath.Join(bo.results, c.Name+".json"), "--chart", filepath.Join(bo.results, c.Name+".svg"))
	if bo.quiet {
		args = append(args, "--quiet")
	}
	if pprofAddr != "" {
		args = append(args, "--pprof", "http://"+pprofAddr, "--pprof-out", filepath.Join(bo.results, c.Name))
	}
	cm.Command = "go run ./loadtest " + c.Scenario + " " + strings.Join(c.Args, " ") +
		" --target " + placeholderTargets(c) + " --gateway-pid PID --redis 127.0.0.1:REDIS_PORT"
	o, err := parseOptions(ctx, c.Scenario, args, stderr)
	if err != nil {
		return fail(err)
	}
	r, err := runScenario(ctx, o, stderr)
	if r == nil {
		return fail(err)
	}
	for i, g := range gws {
		if g.exited() {
			r.Problems = append(r.Problems, fmt.Sprintf("gateway %d exited during the run (see %s-gateway-%d.log)", i, c.Name, i))
		}
	}
	report(o, r, stdout, stderr)
	return cm
}

func placeholderTargets(c benchCase) string {
	if c.Gateways <= 1 || c.ReusePort {
		return "http://127.0.0.1:PORT"
	}
	var t []string
	for i := 1; i <= c.Gateways; i++ {
		t = append(t, fmt.Sprintf("http://127.0.0.1:PORT%d", i))
	}
	return strings.Join(t, ",")
}

// findModuleRoot walks up from the working directory to the go.mod of the
// popbox module ("" when not found).
func findModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/popbox/popbox\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c, err := startChild("redis-server", bin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir, "--maxclients", "10000"}, nil, logPath)
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = waitFor(ctx, 10*time.Second, c, func() bool { return redisPing(addr) }); lastErr == nil {
			return &redisChild{child: c, addr: addr}, nil
		}
		c.stop(2 * time.Second)
	}
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
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
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !ok() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v", c.name, timeout)
		case <-c.done:
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		case <-t.C:
		}
	}
	return nil
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
		var env []string
		if i == 0 && pprofAddr != "" {
			env = []string{"POPBOX_PPROF_LISTEN=" + pprofAddr}
		}
		g, err := startChild(fmt.Sprintf("gateway %d", i), bin, args, env, filepath.Join(logDir, fmt.Sprintf("%s-gateway-%d.log", c.Name, i)))
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

// runRedisBenchmark measures Redis itself on a fresh server: plain
// commands, pipelined pushes, and a small Lua script like the gateway's.
func runRedisBenchmark(ctx context.Context, redisBin, tmp string, full bool) ([]RedisBenchRow, []string, error) {
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, nil, fmt.Errorf("redis-benchmark not found: %w", err)
	}
	rd, err := startRedis(ctx, redisBin, filepath.Join(tmp, "rb-redis"), filepath.Join(tmp, "rb-redis.log"))
	if err != nil {
		return nil, nil, err
	}
	defer rd.stop(10 * time.Second)
	_, port, _ := net.SplitHostPort(rd.addr)
	n, np := "200000", "1000000"
	if full {
		n, np = "1000000", "5000000"
	}
	script := "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LPOP', KEYS[1])"
	runs := []struct {
		suffix string
		args   []string
	}{
		{"", []string{"-c", "50", "-n", n, "-t", "set,get,lpush,lpop"}},
		{" (pipeline 16)", []string{"-c", "50", "-n", np, "-P", "16", "-t", "lpush,lpop"}},
		{"", []string{"-c", "50", "-n", n, "EVAL", script, "1", "q:bench", "x"}},
	}
	var rows []RedisBenchRow
	var cmds []string
	for _, r := range runs {
		args := append([]string{"-h", "127.0.0.1", "-p", port, "--csv"}, r.args...)
		shown := append([]string{"redis-benchmark", "-h", "127.0.0.1", "-p", "REDIS_PORT", "--csv"}, r.args...)
		for i, a := range shown {
			if strings.ContainsAny(a, " ()'") {
				shown[i] = `"` + a + `"`
			}
		}
		cmds = append(cmds, strings.Join(shown, " "))
		out, err := exec.CommandContext(ctx, rb, args...).Output()
		if err != nil {
			return rows, cmds, fmt.Errorf("%s: %w", strings.Join(shown, " "), err)
		}
		rs, err := parseRedisBenchCSV(out)
		if err != nil {
			return rows, cmds, err
		}
		for i := range rs {
			if strings.HasPrefix(rs[i].Test, "EVAL") {
				rs[i].Test = "EVAL (RPUSH + LPOP script)"
			}
			rs[i].Test += r.suffix
		}
		rows = append(rows, rs...)
	}
	return rows, cmds, nil
}

func parseRedisBenchCSV(b []byte) ([]RedisBenchRow, error) {
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark output: %w", err)
	}
	if len(recs) == 0 {
		return nil, errors.New("redis-benchmark printed nothing")
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	get := func(rec []string, name string) float64 {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return 0
		}
		v, _ := strconv.ParseFloat(rec[i], 64)
		return v
	}
	ti, ok := col["test"]
	if !ok {
		return nil, fmt.Errorf("redis-benchmark output has no test column: %q", recs[0])
	}
	var rows []RedisBenchRow
	for _, rec := range recs[1:] {
		if ti >= len(rec) {
			continue
		}
		rows = append(rows, RedisBenchRow{Test: rec[ti], RPS: get(rec, "rps"), P50: get(rec, "p50_latency_ms"), P99: get(rec, "p99_latency_ms")})
	}
	return rows, nil
}
