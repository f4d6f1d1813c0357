package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/config"
	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/fakegw"
	"github.com/popbox/popbox/loadtest/internal/hist"
)

func TestParseRedisBenchCSV(t *testing.T) {
	out := `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"LPUSH","98522.17","0.356","0.064","0.351","0.511","0.655","2.903"
"EVAL redis.call('RPUSH', KEYS[1], ARGV[1]) return 1","55741.00","0.5","0.1","0.559","0.9","1.479","3"
`
	rows, err := parseRedisBenchCSV([]byte(out))
	if err != nil || len(rows) != 2 {
		t.Fatal(rows, err)
	}
	if rows[0] != (RedisBenchRow{Test: "LPUSH", RPS: 98522.17, P50: 0.351, P99: 0.655}) || rows[1].RPS != 55741 {
		t.Fatalf("%+v", rows)
	}
	if _, err := parseRedisBenchCSV([]byte(`"x","y"` + "\n")); err == nil {
		t.Fatal("no test column must fail")
	}
}

func TestSuitesAndScale(t *testing.T) {
	reduced := suites(false, true, 1)
	full := suites(true, true, 1)
	last := full[len(full)-1]
	if len(reduced) != 10 || len(full) != 11 || last.Name != "capacity-100k" || last.Gateways != 6 || !last.ReusePort ||
		reduced[0].Name != "provision" || reduced[1].Name != "pop" {
		t.Fatalf("reduced %d cases, full %+v", len(reduced), last)
	}
	// the gateway flags of a case are ones popbox serve takes
	if !slices.Equal(last.GatewayArgs, []string{"--read-header-timeout", "30s"}) {
		t.Fatalf("capacity-100k gateway args %q", last.GatewayArgs)
	}
	// six gateways on two cores: one P each (see the case's comment)
	if got := gatewayEnv(last, 0, "127.0.0.1:6060"); !slices.Equal(got, []string{"GOMAXPROCS=1", "POPBOX_PPROF_LISTEN=127.0.0.1:6060"}) {
		t.Fatalf("capacity-100k gateway 0 env %q", got)
	}
	if got := gatewayEnv(last, 1, "127.0.0.1:6060"); !slices.Equal(got, []string{"GOMAXPROCS=1"}) {
		t.Fatalf("capacity-100k gateway 1 env %q", got)
	}
	if got := gatewayEnv(reduced[0], 0, ""); len(got) != 0 {
		t.Fatalf("provision gateway env %q", got)
	}
	for _, c := range full {
		cfg, err := config.Load(c.GatewayArgs, func(string) string { return "" })
		if err != nil || (len(c.GatewayArgs) > 0 && cfg.ReadHeaderTimeout != 30*time.Second) {
			t.Fatalf("%s: gateway args %q: %v, read-header timeout %v", c.Name, c.GatewayArgs, err, cfg.ReadHeaderTimeout)
		}
	}
	// each comparison runs the same arguments against PopBox, then the peer
	byName := map[string]benchCase{}
	for _, c := range reduced {
		byName[c.Name] = c
	}
	for _, pair := range [][2]string{{"vs-throughput-popbox", "vs-throughput-centrifugo"}, {"vs-idle-popbox", "vs-idle-centrifugo"}} {
		ours, theirs := byName[pair[0]], byName[pair[1]]
		if ours.Peer != "" || theirs.Peer != peerCentrifugo || ours.Scenario != theirs.Scenario ||
			strings.Join(ours.Args, " ") != strings.Join(theirs.Args, " ") {
			t.Errorf("comparison %v: %+v vs %+v", pair, ours, theirs)
		}
	}
	if got := strings.Join(byName["vs-idle-popbox"].Args, " "); !strings.Contains(got, "--conns 10000 --mix sse=50,ws=50") {
		t.Errorf("vs-idle: %s", got)
	}
	if got := strings.Join(byName["vs-throughput-popbox"].Args, " "); !strings.Contains(got, "--conns 1000 --mix sse=100") || !strings.Contains(got, "--prov-conns 32") {
		t.Errorf("vs-throughput: %s", got)
	}
	only := map[string]bool{"vs-idle": true, "pop": true}
	for name, want := range map[string]bool{"vs-idle-popbox": true, "vs-idle-centrifugo": true, "pop": true, "vs-throughput-popbox": false, "capacity-100k": false, "capacity": false} {
		if selected(only, name) != want {
			t.Errorf("--only vs-idle,pop selects %s: %v", name, !want)
		}
	}
	if !selected(map[string]bool{"vs": true}, "vs-throughput-centrifugo") || !selected(nil, "latency") {
		t.Error("--only vs must select every comparison case, no --only every case")
	}
	got := strings.Join(scaleArgs([]string{"--conns", "19500", "--duration", "40s", "--idle-window", "20s", "--rounds", "5"}, 0.05), " ")
	if got != "--conns 975 --duration 2s --idle-window 1s --rounds 5" {
		t.Fatal(got)
	}
	// every case's flags parse, against the kind of target it runs on
	for _, c := range append(reduced, full...) {
		target := "http://127.0.0.1:1"
		if c.Peer != "" {
			target = "centrifugo://api:secret@127.0.0.1:1"
		}
		if _, err := parseOptions(testCtx(t), c.Scenario, append(c.Args, "--target", target), os.Stderr); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
}

// TestBenchDoc runs tiny scenarios against the fake gateway, stores them as
// a suite and renders docs/BENCHMARKS.md from them.
func TestBenchDoc(t *testing.T) {
	gw := fakegw.New(t)
	dir := t.TempDir()
	meta := SuiteMeta{Mode: "reduced", Date: time.Now().UTC(), Machine: sysinfo.Proc{}.DescribeMachine(), GatewayRev: "abc123",
		RedisVersion: "7.0.15", Invocation: "go run ./loadtest bench --write-doc docs/BENCHMARKS.md",
		RedisBench: []RedisBenchRow{{Test: "LPUSH", RPS: 98000, P50: 0.3, P99: 0.6}}, RedisBenchCm: []string{"redis-benchmark -t lpush"}}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"capacity", []string{"capacity", "--conns", "12", "--mix", allKinds, "--duration", "100ms", "--idle-window", "50ms"}},
		{"throughput", []string{"throughput", "--conns", "4", "--mix", "sse=1", "--duration", "300ms", "--prov-conns", "2"}},
		{"fanout", []string{"fanout", "--queues", "8", "--mix", "sse=1,ws=1", "--rounds", "2"}},
		{"latency", []string{"latency", "--conns", "5", "--mix", allKinds, "--rate", "100", "--duration", "300ms", "--poll-timeout", "1"}},
		{"provision", []string{"provision", "--conns", "2", "--duration", "200ms"}},
		{"pop", []string{"pop", "--conns", "2", "--duration", "5s", "--queues", "3", "--prefill", "30"}},
		{"vs-throughput-popbox", []string{"throughput", "--conns", "4", "--mix", "sse=1", "--duration", "300ms", "--prov-conns", "2"}},
	} {
		r := run(t, c.args[0], append(c.args[1:], "--target", gw.URL)...)
		if err := r.writeJSON(filepath.Join(dir, c.name+".json")); err != nil {
			t.Fatal(err)
		}
		meta.Cases = append(meta.Cases, CaseMeta{Name: c.name, Scenario: c.args[0], File: c.name + ".json", Gateways: 1,
			Command: "go run ./loadtest " + strings.Join(c.args, " ")})
	}
	meta.Cases = append(meta.Cases, CaseMeta{Name: "broken", Scenario: "capacity", Error: "gateway 0 exited: boom"})
	// no peer binary: the peer cases are recorded as not run
	meta.Peer = preparePeer(testCtx(t), "")
	for _, c := range suites(false, true, 1) {
		if c.Peer != "" {
			meta.Cases = append(meta.Cases, CaseMeta{Name: c.Name, Scenario: c.Scenario, Peer: c.Peer, NotRun: "peer not run: " + meta.Peer.NotRun})
		}
	}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, "suite-reduced.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "docs", "BENCHMARKS.md")
	if err := writeBenchDoc(doc, dir); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(doc)
	for _, want := range []string{"# Benchmarks", docBegin, docEnd, "## Against the targets (issue 14)", "Reduced suite (`make bench`)",
		"### Capacity: 12 idle subscribers", "### Throughput: 4 subscribers", "### Fan-out: one transaction to 8 queues",
		"### Latency: 100 msg/s over 5 subscribers", "| longpoll |",
		"### REST request path (wrk-like", "| provision | 2 |", "| pop | 2 |", "redis-benchmark -t lpush", "| LPUSH | 98,000 |",
		"| provisions/s, 2 keep-alive connections, one queue each (wrk-like `provision`) | ≥ 10× the original |",
		"original not runnable here (not on npm; no network beyond registries): absolute figure only |",
		"| pops/s, the same way, queues pre-filled (`pop`) |", "| gateway CPU per provision (`provision` run) | ≤ 40 µs |",
		"| Redis CPU per provision; Redis commands per delivered message | ≤ 15 µs; ≤ 6 commands |",
		"| delivered msg/s end-to-end, 4 SSE subscribers (`throughput`, 2 publishers) | ≥ 20,000/s, p99 ≤ 15 ms |",
		"| ahead of Centrifugo on delivered/s and p99 | ours ", "; Centrifugo: peer not run: no --centrifugo binary given", "| peer not run |",
		"| 10,000 idle subscribers, SSE/WS 50/50, beside Centrifugo v6.9.1: RSS per connection, idle CPU | stay ahead of Centrifugo | ours: not measured | not measured |",
		"| RSS per idle connection, 12 mixed (`capacity`) | ≤ 16 KiB (stretch ≤ 10) |",
		"| the gateways' counters at the end (popbox_stream_ends_total by reason, rejected, shed, closed before a request) | ",
		"| idle subscribers on one machine, 6 processes (`capacity-100k`) | 100,000 of 100,000, 0 dropped, every message delivered, in every run | not measured (make bench-full) | not measured |",
		"| RSS per connection / idle CPU at 100,000 | ≤ 16 KiB; ≤ 0.3 cores | not measured (make bench-full) | not measured |",
		"### Issue 8's other targets", "| Redis connections per gateway process, whatever its subscriber count | ≤ 64 |",
		"| fan-out of one transaction to 8 live subscribers |", "| provision→receive latency at 100 msg/s to 5 subscribers |",
		"### Beside Centrifugo: the same workloads", "**Centrifugo: peer not run**", "| Centrifugo | peer not run: no --centrifugo binary",
		"# vs-idle-centrifugo: peer not run", "**broken: failed to run**: gateway 0 exited: boom", "abc123"} {
		if !strings.Contains(string(first), want) {
			t.Errorf("the document lacks %q", want)
		}
	}
	// every row of issue 14's table once, no quoted Centrifugo figures
	for _, row := range []string{"| provisions/s", "| pops/s", "| gateway CPU per provision", "| Redis CPU per provision",
		"| delivered msg/s end-to-end", "| the same workload beside", "| 10,000 idle subscribers", "| RSS per idle connection",
		"| idle subscribers on one machine", "| RSS per connection / idle CPU at 100,000", "| concurrent idle subscribers on one gateway process"} {
		if n := strings.Count(string(first), row); n != 1 {
			t.Errorf("row %q appears %d times", row, n)
		}
	}
	for _, quoted := range []string{"Centrifugo here", "11,756", "19,900", "53–59"} {
		if strings.Contains(string(first), quoted) {
			t.Errorf("the document quotes %q instead of measuring it", quoted)
		}
	}
	if t.Failed() || os.Getenv("BENCHDOC_DUMP") != "" {
		t.Log(string(first))
	}
	// hand-written text around the block survives a regeneration
	edited := strings.Replace(string(first), "# Benchmarks\n", "# Benchmarks\n\nHAND-WRITTEN INTRO\n", 1) + "\nHAND-WRITTEN NOTES\n"
	if err := os.WriteFile(doc, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeBenchDoc(doc, dir); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(doc)
	if !strings.Contains(string(second), "HAND-WRITTEN INTRO") || !strings.Contains(string(second), "HAND-WRITTEN NOTES") ||
		strings.Count(string(second), docBegin) != 1 {
		t.Fatalf("regeneration lost the surrounding text:\n%s", second)
	}
	if err := writeBenchDoc(doc, t.TempDir()); err == nil {
		t.Fatal("an empty results directory must fail")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 19500: "19,500", 1234567: "1,234,567", -20000: "-20,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q", n, got)
		}
	}
	if v := verdict(12, 16, true); v != "met" {
		t.Error(v)
	}
	if v := verdict(24, 16, true); v != "missed by 50 %" {
		t.Error(v)
	}
	if v := verdict(15000, 20000, false); v != "missed by 25 %" {
		t.Error(v)
	}
}

// TestBenchDocPeer renders the comparison rows from saved results of both
// servers: where PopBox is behind, the verdict says on what and by how much.
func TestBenchDocPeer(t *testing.T) {
	dir := t.TempDir()
	meta := SuiteMeta{Mode: "reduced", Date: time.Now().UTC(), Peer: &PeerMeta{Name: "Centrifugo", Version: "v6.9.1"}}
	save := func(name, scenario, peer string, r *Result) {
		t.Helper()
		if err := r.writeJSON(filepath.Join(dir, name+".json")); err != nil {
			t.Fatal(err)
		}
		meta.Cases = append(meta.Cases, CaseMeta{Name: name, Scenario: scenario, File: name + ".json", Peer: peer, Command: "go run ./loadtest " + scenario})
	}
	tp := func(deliv float64, p50, p99 int64) *Result {
		return &Result{Scenario: "throughput", Subscribers: 1000, Options: &Options{ProvConns: 32},
			ByKind:     map[string]*KindCounts{"sse": {Subs: 1000, Conns: 1000, Opened: 1000}},
			Throughput: &ThroughputStats{RunSecs: 20, DelivPerSec: deliv}, Gateway: &GatewayStats{LoadCPU: 1.5},
			Latency: map[string]hist.Summary{"all": {Count: 100, P50: p50, P99: p99, P999: p99}}}
	}
	idle := func(rssPerConn, cpu float64) *Result {
		return &Result{Scenario: "capacity", Subscribers: 10000, Options: &Options{},
			ByKind:  map[string]*KindCounts{"sse": {Subs: 5000, Conns: 5000, Opened: 5000}, "ws": {Subs: 5000, Conns: 5000, Opened: 5000}},
			Conns:   ConnStats{Attempted: 10000, Open: 10000},
			Gateway: &GatewayStats{BaselineRSS: 20 << 20, RSS: 20<<20 + int64(rssPerConn*10000), RSSPerConn: rssPerConn, IdleCPU: cpu, IdleSecs: 15},
			Verify:  &VerifyStats{Expected: 10000, Verified: 10000}}
	}
	// ours ahead on delivered/s, behind on p99; ahead on RSS, behind on idle CPU
	save("vs-throughput-popbox", "throughput", "", tp(20000, 1_500_000, 20_000_000))
	save("vs-throughput-centrifugo", "throughput", peerCentrifugo, tp(11756, 1_600_000, 16_000_000))
	save("vs-idle-popbox", "capacity", "", idle(16*1024, 0.050))
	save("vs-idle-centrifugo", "capacity", peerCentrifugo, idle(50*1024, 0.040))
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, "suite-reduced.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := writeBenchDoc(doc, dir); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(doc)
	for _, want := range []string{
		"| the same workload beside Centrifugo v6.9.1 (1,000 SSE subscribers, 32 closed-loop publishers, one after the other) | ahead of Centrifugo on delivered/s and p99 | " +
			"ours 20,000/s, p50 1.5 ms, p99 20.0 ms; Centrifugo 11,756/s, p50 1.6 ms, p99 16.0 ms | behind on p99 by 25 % |",
		"| 10,000 idle subscribers, sse 5,000, ws 5,000, beside Centrifugo v6.9.1: RSS per connection, idle CPU | stay ahead of Centrifugo | " +
			"ours 16.0 KiB, 0.050 cores (10,000 of 10,000 open); Centrifugo 50.0 KiB, 0.040 cores (10,000 of 10,000 open) | behind on idle CPU by 25 % |",
		"### Beside Centrifugo v6.9.1: the same workloads", "| PopBox | 1,000 | 32 | 20,000 |", "| Centrifugo v6.9.1 | 1,000 | 32 | 11,756 |",
		"| Centrifugo v6.9.1 | 10,000 of 10,000 | 0 | 0 |", "50.0 KiB", "10,000 of 10,000 verified",
		"# the peer of the vs-*-centrifugo cases: centrifugo --config config.json (Centrifugo v6.9.1)", `"port":PORT`, `"key":"API_KEY"`,
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the document lacks %q", want)
		}
	}
	if block := string(got)[strings.Index(string(got), docBegin):]; strings.Contains(block, "peer not run") {
		t.Error("the peer ran, yet the document says it did not")
	}
	if t.Failed() {
		t.Log(string(got))
	}

	// ahead on both: met
	for _, c := range []struct {
		name string
		r    *Result
	}{{"vs-throughput-popbox", tp(25000, 1_000_000, 9_000_000)}, {"vs-idle-popbox", idle(10*1024, 0.02)}} {
		if err := c.r.writeJSON(filepath.Join(dir, c.name+".json")); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeBenchDoc(doc, dir); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(doc)
	if n := strings.Count(string(got), "(10,000 of 10,000 open) | met |") + strings.Count(string(got), "p99 16.0 ms | met |"); n != 2 {
		t.Errorf("ahead on every figure must read met (%d rows do):\n%s", n, got)
	}
}

func TestAhead(t *testing.T) {
	for _, c := range []struct {
		ours, peer float64
		lower      bool
		tol        float64
		want       string
	}{
		{20000, 11756, false, 0, ""},
		{10000, 20000, false, 0, "behind on x by 50 %"},
		{10, 20, true, 0, ""},
		{30, 20, true, 0, "behind on x by 50 %"},
		{0.003, 0, true, 0, "behind on x (0.003 against 0)"},
		{0.003, 0, true, cpuResolution(15, 3), ""}, // one 10 ms tick over 3 s: noise
		{0.05, 0.01, true, cpuResolution(15, 15), "behind on x by 400 %"},
	} {
		if got := ahead("x", c.ours, c.peer, c.lower, c.tol); got != c.want {
			t.Errorf("ahead(%v, %v, lower %v, tol %v) = %q, want %q", c.ours, c.peer, c.lower, c.tol, got, c.want)
		}
	}
	if cpuResolution() != 0 || cpuResolution(0, 20) != 0.001 {
		t.Error(cpuResolution(), cpuResolution(0, 20))
	}
	if v := aheadVerdict("", ""); v != "met" {
		t.Error(v)
	}
	if v := aheadVerdict("behind on a by 1 %", "", "behind on b by 2 %"); v != "behind on a by 1 %; behind on b by 2 %" {
		t.Error(v)
	}
}
