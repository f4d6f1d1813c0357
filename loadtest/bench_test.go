package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/loadtest/internal/fakegw"
	"github.com/popbox/popbox/loadtest/internal/sysinfo"
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
	if len(reduced) != 4 || len(full) != 5 || full[4].Name != "capacity-100k" || full[4].Gateways != 6 || !full[4].ReusePort {
		t.Fatalf("reduced %d cases, full %+v", len(reduced), full[len(full)-1])
	}
	got := strings.Join(scaleArgs([]string{"--conns", "19500", "--duration", "40s", "--idle-window", "20s", "--rounds", "5"}, 0.05), " ")
	if got != "--conns 975 --duration 2s --idle-window 1s --rounds 5" {
		t.Fatal(got)
	}
	// every case's flags parse
	for _, c := range append(reduced, full...) {
		if _, err := parseOptions(testCtx(t), c.Scenario, append(c.Args, "--target", "http://127.0.0.1:1"), os.Stderr); err != nil {
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
	} {
		r := run(t, c.args[0], append(c.args[1:], "--target", gw.URL)...)
		if err := r.writeJSON(filepath.Join(dir, c.name+".json")); err != nil {
			t.Fatal(err)
		}
		meta.Cases = append(meta.Cases, CaseMeta{Name: c.name, Scenario: c.args[0], File: c.name + ".json", Gateways: 1,
			Command: "go run ./loadtest " + strings.Join(c.args, " ")})
	}
	meta.Cases = append(meta.Cases, CaseMeta{Name: "broken", Scenario: "capacity", Error: "gateway 0 exited: boom"})
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, "suite-reduced.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "docs", "BENCHMARKS.md")
	if err := writeBenchDoc(doc, dir); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(doc)
	for _, want := range []string{"# Benchmarks", docBegin, docEnd, "## Against the targets", "Reduced suite (`make bench`)",
		"### Capacity: 12 idle subscribers", "### Throughput: 4 subscribers", "### Fan-out: one transaction to 8 queues",
		"### Latency: 100 msg/s over 5 subscribers", "| longpoll |", "redis-benchmark -t lpush", "| LPUSH | 98,000 |",
		"not measured here: `make bench-full`", "**broken: failed to run**: gateway 0 exited: boom", "abc123"} {
		if !strings.Contains(string(first), want) {
			t.Errorf("the document lacks %q", want)
		}
	}
	if t.Failed() {
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
