package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// benchCase is one scenario run of the benchmark suite.
type benchCase struct {
	Name      string   // result file stem
	Scenario  string   // capacity, throughput, fanout, latency
	Args      []string // scenario flags, without target/pid/redis/out/chart
	Gateways  int      // gateway processes to start
	ReusePort bool     // gateways share one port (SO_REUSEPORT)
	// GatewayArgs are popbox serve flags of this case beyond the suite's.
	GatewayArgs []string
	// GatewayEnv are environment variables (NAME=value) of this case's
	// gateway processes beyond the suite's.
	GatewayEnv []string
	// Peer names the server run instead of PopBox ("centrifugo"; "": PopBox).
	Peer string
}

// peerCentrifugo is the Peer of the cases run against Centrifugo.
const peerCentrifugo = "centrifugo"

// suites returns the reduced suite (make bench: under 10 minutes on a
// 2-core box) or the full one (make bench-full).
func suites(full, reuseport bool, scale float64) []benchCase {
	mixAll := "sse=40,ws=30,wsmux=10,stream=10,longpoll=10"
	mixEven := "sse=20,ws=20,wsmux=20,stream=20,longpoll=20"
	capHold, capIdle, tpDur, latDur, rounds, wrkDur := "40s", "20s", "20s", "30s", "5", "15s"
	vsHold, vsIdle := "30s", "15s"
	if full {
		capHold, capIdle, tpDur, latDur, rounds, wrkDur = "120s", "60s", "60s", "120s", "10", "60s"
		vsHold, vsIdle = "60s", "30s"
	}
	// Issue 14's comparison with Centrifugo: the same workload against
	// PopBox and against the peer, one right after the other.
	vsThroughput := []string{"--conns", "1000", "--mix", "sse=100", "--duration", tpDur, "--prov-conns", "32"}
	vsIdleArgs := []string{"--conns", "10000", "--mix", "sse=50,ws=50", "--duration", vsHold, "--idle-window", vsIdle}
	cases := []benchCase{
		// The REST request path alone, like `wrk -t2 -c32` (issue 14's
		// first two rows).
		{Name: "provision", Scenario: "provision", Gateways: 1, Args: []string{
			"--conns", "32", "--duration", wrkDur}},
		{Name: "pop", Scenario: "pop", Gateways: 1, Args: []string{
			"--conns", "32", "--duration", wrkDur, "--queues", "1000", "--prefill", map[bool]string{false: "300000", true: "1500000"}[full]}},
		{Name: "capacity", Scenario: "capacity", Gateways: 1, Args: []string{
			"--conns", "19500", "--mix", mixAll, "--duration", capHold, "--idle-window", capIdle, "--procs", "2"}},
		{Name: "throughput", Scenario: "throughput", Gateways: 1, Args: []string{
			"--conns", "1000", "--mix", "sse=100", "--duration", tpDur, "--prov-conns", "64"}},
		{Name: "vs-throughput-popbox", Scenario: "throughput", Gateways: 1, Args: vsThroughput},
		{Name: "vs-throughput-centrifugo", Scenario: "throughput", Peer: peerCentrifugo, Args: vsThroughput},
		{Name: "fanout", Scenario: "fanout", Gateways: 1, Args: []string{
			"--queues", "10000", "--mix", "sse=50,ws=50", "--rounds", rounds}},
		{Name: "latency", Scenario: "latency", Gateways: 1, Args: []string{
			"--conns", "10000", "--mix", mixEven, "--rate", "1000", "--duration", latDur}},
		{Name: "vs-idle-popbox", Scenario: "capacity", Gateways: 1, Args: vsIdleArgs},
		{Name: "vs-idle-centrifugo", Scenario: "capacity", Peer: peerCentrifugo, Args: vsIdleArgs},
	}
	if full {
		cases = append(cases, benchCase{Name: "capacity-100k", Scenario: "capacity", Gateways: 6, ReusePort: reuseport,
			Args: []string{"--conns", "100000", "--mix", mixAll, "--duration", "120s", "--idle-window", "60s", "--procs", "6", "--worker-nice", "10", "--connect-concurrency", "64"},
			// 100,000 clients, 6 gateways and Redis on 2 cores: during the
			// ramp a client (load-tool worker) can take more than the
			// default 10 s from its TCP connect to its request line (128
			// to 142 of 100,000 per run closed before a request; at 30 s,
			// 1). Remote clients are not starved by the server they talk to.
			// 64 connects in flight per worker (384 in all, against the
			// default 256 each): the ramp is slower (159 s against 100-153 s)
			// and no client waits out a timeout (run of 2026-12-06: 100,000
			// of 100,000, 0 failed; at 256, 0 to 42 failed per run).
			// GOMAXPROCS=1: six Go schedulers of two Ps each on two cores
			// wake and spin against each other (idle profile of one:
			// findRunnable 24 % of its CPU, futex 10 % flat; at one P 19 %
			// and 1 %); one P each: the idle CPU of the six 0.44-0.61 cores in
			// seven runs against 0.55-0.67 in six at two (0.36 since the
			// heartbeats fall due in shared slots; 0.24 since a stream
			// holds no goroutine while idle, two runs of 2026-12-07,
			// each ramped in 60 s).
			GatewayArgs: []string{"--read-header-timeout", "30s"}, GatewayEnv: []string{"GOMAXPROCS=1"}})
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
		case "--conns", "--queues", "--prefill":
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
	// Peer is the server compared with (nil: results from before the
	// comparison was part of the suite).
	Peer         *PeerMeta       `json:"peer,omitempty"`
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
	Peer      string `json:"peer,omitempty"` // "centrifugo": run against the peer, not PopBox
	Error     string `json:"error,omitempty"`
	// NotRun says why a case was left out on purpose (a peer case without
	// the peer's binary); it is not a failure.
	NotRun string `json:"not_run,omitempty"`
}

type benchOpts struct {
	full, renderOnly, redisBench, reuseport, quiet, profile bool
	gatewayBin, redisServer, results, writeDoc, only        string
	centrifugo                                              string
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
	fs.StringVar(&bo.only, "only", "", "run only these cases, comma-separated (provision, pop, capacity, throughput, fanout, latency, capacity-100k, redis-benchmark, "+
		"vs-throughput-popbox, vs-throughput-centrifugo, vs-idle-popbox, vs-idle-centrifugo; vs-throughput, vs-idle and vs name both halves of a comparison)")
	fs.StringVar(&bo.centrifugo, "centrifugo", "", "Centrifugo binary to compare with (v6; make bench builds bin/centrifugo): the vs-* cases run it on a loopback port; without it they are reported as not run")
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
	meta.Peer = preparePeer(ctx, bo.centrifugo)
	if meta.Peer.NotRun != "" {
		fmt.Fprintf(stdout, "peer: %s not run: %s\n", meta.Peer.Name, meta.Peer.NotRun)
	}
	for _, c := range suites(bo.full, bo.reuseport, bo.scale) {
		if !selected(only, c.Name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		cm := runBenchCase(ctx, bo, c, bin, redisBin, tmp, meta.Peer, stdout, stderr)
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
func runBenchCase(ctx context.Context, bo *benchOpts, c benchCase, bin, redisBin, tmp string, peer *PeerMeta, stdout, stderr io.Writer) CaseMeta {
	cm := CaseMeta{Name: c.Name, Scenario: c.Scenario, File: c.Name + ".json", Gateways: c.Gateways, ReusePort: c.ReusePort, Peer: c.Peer}
	fail := func(err error) CaseMeta {
		cm.Error = err.Error()
		fmt.Fprintf(stderr, "bench %s: %v\n", c.Name, err)
		return cm
	}
	if c.Peer != "" {
		if peer == nil || peer.NotRun != "" {
			cm.NotRun = "peer not run"
			if peer != nil {
				cm.NotRun += ": " + peer.NotRun
			}
			fmt.Fprintf(stdout, "\n--- %s: %s\n", c.Name, cm.NotRun)
			return cm
		}
		fmt.Fprintf(stdout, "\n--- %s: %s %s, go run ./loadtest %s %s\n", c.Name, peer.Name, peer.Version, c.Scenario, strings.Join(c.Args, " "))
	} else {
		fmt.Fprintf(stdout, "\n--- %s: %d gateway(s)%s, go run ./loadtest %s %s\n", c.Name, c.Gateways,
			map[bool]string{true: " sharing one port", false: ""}[c.ReusePort], c.Scenario, strings.Join(c.Args, " "))
	}
	var servers []*child // gateways or the peer
	defer func() {
		for _, g := range servers {
			g.stop(20 * time.Second)
		}
	}()
	var targets []string
	redisAddr, pprofAddr := "", ""
	if c.Peer != "" {
		srv, target, err := startCentrifugo(ctx, bo.centrifugo, filepath.Join(tmp, c.Name+"-centrifugo"), filepath.Join(bo.results, c.Name+"-centrifugo.log"))
		if err != nil {
			return fail(err)
		}
		servers, targets = []*child{srv}, []string{target}
	} else {
		rd, err := startRedis(ctx, redisBin, filepath.Join(tmp, c.Name+"-redis"), filepath.Join(bo.results, c.Name+"-redis.log"))
		if err != nil {
			return fail(err)
		}
		defer rd.stop(10 * time.Second)
		redisAddr = rd.addr
		if bo.profile {
			p, err := freePort()
			if err != nil {
				return fail(err)
			}
			pprofAddr = fmt.Sprintf("127.0.0.1:%d", p)
		}
		servers, targets, err = startGateways(ctx, bin, c, rd.addr, bo.results, pprofAddr)
		if err != nil {
			return fail(err)
		}
	}
	var pids []string
	for _, g := range servers {
		pids = append(pids, strconv.Itoa(g.cmd.Process.Pid))
	}
	args := append([]string{}, c.Args...)
	args = append(args, "--target", strings.Join(targets, ","), "--gateway-pid", strings.Join(pids, ","),
		"--out", filepath.Join(bo.results, c.Name+".json"), "--chart", filepath.Join(bo.results, c.Name+".svg"))
	if redisAddr != "" {
		args = append(args, "--redis", redisAddr)
	}
	if bo.quiet {
		args = append(args, "--quiet")
	}
	if pprofAddr != "" {
		args = append(args, "--pprof", "http://"+pprofAddr, "--pprof-out", filepath.Join(bo.results, c.Name))
	}
	cm.Command = "go run ./loadtest " + c.Scenario + " " + strings.Join(c.Args, " ") + " --target " + placeholderTargets(c)
	if c.Peer != "" {
		cm.Command += " --gateway-pid CENTRIFUGO_PID"
	} else {
		cm.Command += " --gateway-pid PID --redis 127.0.0.1:REDIS_PORT"
		if len(c.GatewayArgs) > 0 || len(c.GatewayEnv) > 0 {
			cm.Command += " # gateways: " + strings.TrimSpace(strings.Join(c.GatewayEnv, " ")+" popbox serve "+strings.Join(c.GatewayArgs, " "))
		}
	}
	o, err := parseOptions(ctx, c.Scenario, args, stderr)
	if err != nil {
		return fail(err)
	}
	r, err := runScenario(ctx, o, stderr)
	if r == nil {
		return fail(err)
	}
	for _, g := range servers {
		if g.exited() {
			r.Problems = append(r.Problems, fmt.Sprintf("%s exited during the run (see the %s logs)", g.name, c.Name))
		}
	}
	report(o, r, stdout, stderr)
	return cm
}

func placeholderTargets(c benchCase) string {
	if c.Peer != "" {
		return transport.CentrifugoScheme + "://api:API_KEY@127.0.0.1:PORT"
	}
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
