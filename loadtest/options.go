package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/popbox/popbox/loadtest/internal/safety"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// Hard limits: no flag combination gets past them.
const (
	// MaxDuration caps --duration (hold or run time) of every scenario.
	MaxDuration = 30 * time.Minute
	// MaxConns caps the subscribers (and connections) of a run.
	MaxConns = 200_000
	// maxWall caps the whole run: duration plus connect, verify and drain.
	maxWall = MaxDuration + 10*time.Minute
	// srcPortsPerAddr is how many client sockets one loopback source address
	// takes before the next one is used (the default ephemeral range holds
	// 28,232 ports).
	srcPortsPerAddr = 25_000
)

// Load is the part of the options that every worker process runs with as
// given: a WorkerSpec carries a copy.
type Load struct {
	MuxQueues int           `json:"mux_queues"`
	Duration  time.Duration `json:"duration_ns"`
	Rounds    int           `json:"rounds"`
	Payload   int           `json:"payload_size"`
	PollSecs  int           `json:"poll_timeout_s"`
	Connect   int           `json:"connect_concurrency"`
	Verify    time.Duration `json:"verify_timeout_ns"`
	Handshake time.Duration `json:"handshake_timeout_ns"`
	Expire    int           `json:"expiration_delay_s"`
}

// Options is the configuration of one scenario run (the parsed flags).
type Options struct {
	Scenario string `json:"scenario"`

	Targets []string       `json:"targets"`
	Conns   int            `json:"conns"`
	Mix     map[string]int `json:"mix"`
	Load
	Procs     int             `json:"procs"`
	Nice      int             `json:"worker_nice,omitempty"`
	Rate      float64         `json:"rate"`
	ProvConns int             `json:"prov_conns"`
	Window    int             `json:"window"`
	Queues    int             `json:"queues,omitempty"`
	Prefill   int64           `json:"prefill,omitempty"`
	Idle      time.Duration   `json:"idle_window_ns"`
	SrcAfter  int             `json:"source_addr_threshold"`
	GwPIDs    []int           `json:"gateway_pids,omitempty"`
	RedisAddr string          `json:"redis,omitempty"`
	Pprof     string          `json:"pprof,omitempty"`
	PprofOut  string          `json:"-"`
	Out       string          `json:"-"`
	Chart     string          `json:"-"`
	Quiet     bool            `json:"-"`
	Progress  time.Duration   `json:"-"`
	targetURL []*url.URL      // checked and normalised
	targetIPs [][]netip.Addr  // resolved addresses per target
	kinds     map[string]bool // transports in the mix
	pprofURL  *url.URL
}

// scenarioDefaults are the per-scenario flag defaults.
type scenarioDefaults struct {
	conns    int
	mix      string
	duration time.Duration
	rate     float64
	summary  string
}

var scenarios = map[string]scenarioDefaults{
	"capacity": {1000, "sse=40,ws=30,wsmux=10,stream=10,longpoll=10", 30 * time.Second, 0,
		"open N idle subscribers, hold them, then provision one message to each and verify every one arrives; gateway RSS/CPU/Redis connections"},
	"throughput": {1000, "sse=100", 20 * time.Second, 0,
		"provision as fast as delivery keeps up (closed loop, bounded in-flight window) to N live subscribers; provisioned/s and delivered/s"},
	"fanout": {1000, "sse=100", 0, 0,
		"one transaction to K queues (--conns K, at most 10000), each with a live subscriber; provision call time and first/p50/p99/last delivery"},
	"latency": {1000, "sse=20,ws=20,wsmux=20,stream=20,longpoll=20", 20 * time.Second, 1000,
		"a fixed message rate spread over N subscribers; provision→receive latency percentiles per transport"},
	"provision": {32, "sse=100", 10 * time.Second, 0,
		"wrk-like: N keep-alive connections send POST /trans (one small message to one queue, a queue per connection) in a closed loop; requests/s and latency percentiles"},
	"pop": {32, "sse=100", 10 * time.Second, 0,
		"wrk-like: N keep-alive connections send POST /queue/{id}/pop?max=1 in a closed loop against queues filled beforehand; requests/s and latency percentiles"},
}

// newFlagSet registers the flags of a scenario on a new FlagSet bound to o.
func newFlagSet(name string, o *Options, out io.Writer) (*flag.FlagSet, *flagTemps) {
	d := scenarios[name]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	t := &flagTemps{}
	o.Scenario = name
	fs.StringVar(&t.targets, "target", "http://127.0.0.1:3001", "gateway URL(s), comma-separated; loopback only (subscribers are spread round-robin); centrifugo://api:KEY@host:port runs against Centrifugo (sse and ws)")
	if isWrk(name) {
		fs.IntVar(&o.Conns, "conns", d.conns, "keep-alive connections, each with one request in flight (at most 4096)")
	} else {
		fs.IntVar(&o.Conns, "conns", d.conns, "subscribers, each on its own queue (one connection each, except wsmux with --mux-queues > 1)")
	}
	if name == "fanout" {
		fs.IntVar(&o.Conns, "queues", d.conns, "alias of --conns: the K queues of the transaction")
	}
	fs.StringVar(&t.mix, "mix", d.mix, "transport mix as weights: sse=,ws=,wsmux=,stream=,longpoll=")
	fs.IntVar(&o.MuxQueues, "mux-queues", 1, "queues subscribed on each multiplexed WebSocket (wsmux) connection")
	fs.IntVar(&o.Procs, "procs", 0, "worker processes (0: as few as the open-file limit allows)")
	fs.IntVar(&o.Nice, "worker-nice", 0, "run worker processes at this nice value (0..19; needs nice(1); worker child processes only, not a single in-process worker): on a box shared with the gateways the load generator yields the CPU to them first")
	if d.duration > 0 {
		what := "run time"
		if name == "capacity" {
			what = "how long the idle subscribers are held"
		}
		fs.DurationVar(&o.Duration, "duration", d.duration, what+" (at most 30m)")
	}
	switch name {
	case "capacity":
		fs.DurationVar(&o.Idle, "idle-window", 10*time.Second, "gateway CPU is measured over the last part of the hold, this long")
		fs.DurationVar(&o.Verify, "verify-timeout", 60*time.Second, "how long to wait for every subscriber's message")
	case "throughput":
		fs.IntVar(&o.Window, "window", 0, "max provisioned-but-undelivered messages (0: 2 per subscriber, at least 64)")
		fs.Float64Var(&o.Rate, "rate", 0, "optional cap on provisioned messages/s (0: as fast as possible)")
		fs.DurationVar(&o.Verify, "drain-timeout", 10*time.Second, "how long to wait for in-flight messages after the run")
	case "latency":
		fs.Float64Var(&o.Rate, "rate", d.rate, "messages/s provisioned (each to one subscriber, round-robin)")
		fs.DurationVar(&o.Verify, "drain-timeout", 10*time.Second, "how long to wait for in-flight messages after the run")
	case "pop":
		fs.IntVar(&o.Queues, "queues", 1000, "queues popped round-robin (filled before the run)")
		fs.Int64Var(&o.Prefill, "prefill", 200_000, "messages put in the queues before the run, in all; the run ends early when all are taken")
	case "fanout":
		fs.IntVar(&o.Rounds, "rounds", 3, "transactions sent one after the other (each to all K queues)")
		fs.DurationVar(&o.Verify, "round-timeout", 30*time.Second, "how long to wait for a round's deliveries")
	}
	fs.IntVar(&o.ProvConns, "prov-conns", 32, "keep-alive connections used for POST /trans (split over the workers)")
	fs.IntVar(&o.Payload, "payload-size", 0, "pad payloads to this many bytes (0: ~40 bytes)")
	fs.IntVar(&o.PollSecs, "poll-timeout", 25, "long-poll timeout in seconds (1..300)")
	fs.IntVar(&o.Connect, "connect-concurrency", 256, "connection attempts in flight per worker")
	fs.DurationVar(&o.Handshake, "handshake-timeout", 30*time.Second, "bound on connect + response headers of one subscriber")
	fs.IntVar(&o.SrcAfter, "source-addrs-after", 28_000, "above this many connections to one destination, bind client sockets to 127.0.0.2, 127.0.0.3, ...")
	fs.IntVar(&o.Expire, "expiration-delay", 600, "expirationDelay (s) of provisioned transactions, so test data leaves Redis")
	fs.StringVar(&t.pids, "gateway-pid", "", "gateway pid(s), comma-separated, for RSS/CPU (default: discover popbox serve processes listening on the target ports)")
	fs.StringVar(&o.RedisAddr, "redis", "", "Redis host:port or redis:// URL: count the gateway's connections (CLIENT LIST), Redis CPU and commands per message (INFO)")
	fs.StringVar(&o.Pprof, "pprof", "", "gateway profiler base URL (net/http/pprof, e.g. the pprofgw build): CPU profile of the run, heap and goroutine profiles after the capacity hold and the fan-out")
	fs.StringVar(&o.PprofOut, "pprof-out", "gateway", "file prefix of the profiles: PREFIX-cpu.pprof, PREFIX-heap.pprof, PREFIX-goroutine.pprof")
	fs.StringVar(&o.Out, "out", "", "write the result as JSON to this file")
	fs.StringVar(&o.Chart, "chart", "", "write an SVG chart (latency percentiles, throughput over time) to this file")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress line even on a terminal")
	o.Progress = time.Second
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: go run ./loadtest %s [flags]\n\n%s.\n\nflags:\n", name, d.summary)
		fs.PrintDefaults()
	}
	return fs, t
}

// flagTemps holds raw flag strings parsed after fs.Parse.
type flagTemps struct {
	targets, mix, pids string
}

// parseOptions parses and validates the flags of a scenario.
func parseOptions(ctx context.Context, name string, args []string, out io.Writer) (*Options, error) {
	if _, ok := scenarios[name]; !ok {
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	o := &Options{}
	fs, t := newFlagSet(name, o, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(t.targets, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Targets = append(o.Targets, s)
		}
	}
	mix, err := parseMix(t.mix)
	if err != nil {
		return nil, err
	}
	o.Mix = mix
	if t.pids != "" {
		for _, s := range strings.Split(t.pids, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("--gateway-pid: %q is not a pid", s)
			}
			o.GwPIDs = append(o.GwPIDs, pid)
		}
	}
	if err := o.validate(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

// parseMix parses "sse=40,ws=30" into weights.
func parseMix(s string) (map[string]int, error) {
	m := map[string]int{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			v = "1"
		}
		kind, err := transport.ParseKind(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("--mix: %w", err)
		}
		w, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || w < 0 {
			return nil, fmt.Errorf("--mix: weight %q of %s is not a non-negative integer", v, kind)
		}
		if w > 0 {
			m[string(kind)] += w
			total += w
		}
	}
	if total == 0 {
		return nil, errors.New("--mix: no transport with a positive weight")
	}
	return m, nil
}

// validate checks limits and targets (after DNS resolution: loopback only).
func (o *Options) validate(ctx context.Context) error {
	if len(o.Targets) == 0 {
		return errors.New("--target: at least one gateway URL is required")
	}
	for i, raw := range o.Targets {
		u, ips, err := checkTarget(ctx, raw)
		if err != nil {
			return err
		}
		o.targetURL = append(o.targetURL, u)
		o.targetIPs = append(o.targetIPs, ips)
		o.Targets[i] = u.Redacted() // results and logs never show an API key
	}
	if o.RedisAddr != "" {
		addr := o.RedisAddr
		if strings.Contains(addr, "://") {
			u, err := url.Parse(addr)
			if err != nil {
				return fmt.Errorf("--redis: %w", err)
			}
			addr = u.Host
			if u.Port() == "" {
				addr += ":6379"
			}
		}
		if _, err := safety.CheckAddr(ctx, nil, addr); err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
	}
	if o.Pprof != "" {
		u, _, err := safety.CheckURL(ctx, nil, o.Pprof)
		if err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
		o.pprofURL = u
	}
	switch {
	case o.Conns < 1:
		return errors.New("--conns must be at least 1")
	case o.Conns > MaxConns:
		return fmt.Errorf("--conns %d is above the hard cap of %d", o.Conns, MaxConns)
	case o.Scenario == "fanout" && o.Conns > 10000:
		return fmt.Errorf("--queues %d: one transaction targets at most 10000 queues (the API limit)", o.Conns)
	case o.Duration < 0 || o.Duration > MaxDuration:
		return fmt.Errorf("--duration %v: must be between 0 and %v", o.Duration, MaxDuration)
	case o.Scenario != "fanout" && o.Duration <= 0:
		return errors.New("--duration must be positive")
	case o.MuxQueues < 1 || o.MuxQueues > 10000:
		return errors.New("--mux-queues must be between 1 and 10000")
	case o.Procs < 0 || o.Procs > 256:
		return errors.New("--procs must be between 0 (auto) and 256")
	case o.Nice < 0 || o.Nice > 19:
		return errors.New("--worker-nice must be between 0 and 19")
	case o.ProvConns < 1 || o.ProvConns > 4096:
		return errors.New("--prov-conns must be between 1 and 4096")
	case o.Payload < 0 || o.Payload > 1<<20:
		return errors.New("--payload-size must be between 0 and 1048576")
	case o.PollSecs < 1 || o.PollSecs > 300:
		return errors.New("--poll-timeout must be between 1 and 300 seconds")
	case o.Connect < 1 || o.Connect > 10000:
		return errors.New("--connect-concurrency must be between 1 and 10000")
	case o.Rate < 0 || o.Rate > 1e6:
		return errors.New("--rate must be between 0 and 1000000")
	case o.Scenario == "latency" && o.Rate <= 0:
		return errors.New("--rate must be positive")
	case o.Window < 0:
		return errors.New("--window must not be negative")
	case o.Verify < 0 || o.Verify > 10*time.Minute:
		return errors.New("timeouts must be between 0 and 10m")
	case o.Idle < 0 || (o.Scenario == "capacity" && o.Idle > o.Duration):
		return errors.New("--idle-window must be between 0 and --duration")
	case o.Handshake <= 0 || o.Handshake > 5*time.Minute:
		return errors.New("--handshake-timeout must be between 0 and 5m")
	case o.Scenario == "fanout" && (o.Rounds < 1 || o.Rounds > 1000):
		return errors.New("--rounds must be between 1 and 1000")
	case o.SrcAfter < 1:
		return errors.New("--source-addrs-after must be positive")
	case o.Expire < 0:
		return errors.New("--expiration-delay must not be negative")
	}
	if err := o.validatePeer(); err != nil {
		return err
	}
	if isWrk(o.Scenario) {
		if err := o.validateWrk(); err != nil {
			return err
		}
	}
	if o.Scenario == "fanout" {
		o.Duration = 0
	}
	o.kinds = map[string]bool{}
	for k := range o.Mix {
		o.kinds[k] = true
	}
	return nil
}

// splitWeights divides n by weights with the largest-remainder method, in
// the fixed transport order.
func splitWeights(n int, weights map[string]int) map[string]int {
	total := 0
	for _, w := range weights {
		total += w
	}
	out := map[string]int{}
	if total == 0 {
		return out
	}
	type rem struct {
		k string
		r int
	}
	var rems []rem
	given := 0
	for _, k := range transport.Kinds {
		w := weights[string(k)]
		if w == 0 {
			continue
		}
		out[string(k)] = n * w / total
		given += out[string(k)]
		rems = append(rems, rem{string(k), n * w % total})
	}
	sort.SliceStable(rems, func(i, j int) bool { return rems[i].r > rems[j].r })
	for i := 0; given < n; i++ {
		out[rems[i%len(rems)].k]++
		given++
	}
	return out
}

// spread divides n into p near-equal parts.
func spread(n, p int) []int {
	out := make([]int, p)
	for i := range out {
		out[i] = n / p
		if i < n%p {
			out[i]++
		}
	}
	return out
}
