package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/popbox/popbox/loadtest/internal/fakegw"
)

// TestMain lets the test binary act as a worker process: runScenario
// re-executes os.Executable() with workerEnv set when --procs > 1.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "worker" {
		os.Exit(realMain(context.Background(), nil, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run parses args for scenario, runs it and returns the result. Unless args
// name the gateway's pid, the figures of "the gateway" are this process's
// (the in-process fake gateways live here).
func run(t *testing.T, scenario string, args ...string) *Result {
	t.Helper()
	ctx := testCtx(t)
	if !slices.Contains(args, "--gateway-pid") {
		args = append(args, "--gateway-pid", fmt.Sprint(os.Getpid()))
	}
	args = append(args, "--quiet")
	o, err := parseOptions(ctx, scenario, args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.Progress = 20 * time.Millisecond
	var log bytes.Buffer
	r, err := runScenario(ctx, o, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var sum bytes.Buffer
	r.printSummary(&sum)
	t.Logf("%s", sum.String())
	return r
}

const allKinds = "sse=1,ws=1,wsmux=1,stream=1,longpoll=1"

func TestCapacity(t *testing.T) {
	gw := fakegw.New(t)
	out := filepath.Join(t.TempDir(), "cap.json")
	r := run(t, "capacity", "--target", gw.URL, "--conns", "40", "--mix", allKinds, "--mux-queues", "3",
		"--duration", "300ms", "--idle-window", "100ms", "--verify-timeout", "10s", "--poll-timeout", "1")
	if len(r.Problems) > 0 || len(r.Errors) > 0 {
		t.Fatalf("problems %v, errors %v", r.Problems, r.Errors)
	}
	if r.Subscribers != 40 || r.Verify.Verified != 40 || r.Verify.Missing != 0 || r.Verify.Duplicates != 0 {
		t.Fatalf("verify %+v of %d", r.Verify, r.Subscribers)
	}
	// 8 wsmux subscribers over 3 queues a connection = 3 connections
	if c := r.ByKind["wsmux"]; c.Subs != 8 || c.Conns != 3 || r.Conns.Open != 35 || r.Conns.OpenAtEnd != 35 {
		t.Fatalf("wsmux %+v, open %d/%d", c, r.Conns.Open, r.Conns.OpenAtEnd)
	}
	if r.Gateway.RSS <= 0 || r.Gateway.IdleSecs <= 0 || r.Gateway.RSSPerConn == 0 {
		t.Fatalf("gateway stats %+v", r.Gateway)
	}
	if len(r.Latency) != 6 || r.Latency["all"].Count != 40 {
		t.Fatalf("latency %v", r.Latency)
	}
	if err := r.writeJSON(out); err != nil {
		t.Fatal(err)
	}
	var back Result
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &back); err != nil || back.Verify.Verified != 40 || back.Histograms["all"].Count() != 40 {
		t.Fatalf("JSON round trip: %v", err)
	}
}

func TestCapacityMultiProcessWithSourceAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	gw := fakegw.New(t)
	own, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0) // 20 - nice (Linux)
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, "capacity", "--target", gw.URL, "--conns", "30", "--mix", "sse=1,ws=1,stream=1", "--procs", "2",
		"--source-addrs-after", "10", "--duration", "200ms", "--idle-window", "100ms", "--verify-timeout", "10s", "--worker-nice", "3")
	if len(r.Problems) > 0 || r.Verify.Verified != 30 || r.Procs != 2 || !r.SourceAddrs {
		t.Fatalf("procs %d, sources %v, verify %+v, problems %v", r.Procs, r.SourceAddrs, r.Verify, r.Problems)
	}
	// the workers ran through nice(1), three below this process
	if want := min(20-own+3, 19); r.LoadTool.Nice != want {
		t.Fatalf("workers at nice %d, want %d", r.LoadTool.Nice, want)
	}
	// worker 0 binds to 127.0.0.2, worker 1 to 127.0.0.3 (provisioning too)
	rem := gw.Remotes()
	if rem["127.0.0.2"] < 15 || rem["127.0.0.3"] < 15 {
		t.Fatalf("connections by source address: %v", rem)
	}
	if r.LoadTool.CPUSecs <= 0 {
		t.Fatal("worker CPU not reported")
	}
}

func TestThroughput(t *testing.T) {
	gw := fakegw.New(t)
	chart := filepath.Join(t.TempDir(), "tp.svg")
	r := run(t, "throughput", "--target", gw.URL, "--conns", "20", "--mix", "sse=1,ws=1", "--duration", "1200ms",
		"--prov-conns", "4", "--window", "16", "--chart", chart)
	tp := r.Throughput
	if tp == nil || tp.Provisioned == 0 || tp.Delivered != tp.Provisioned || tp.Undelivered != 0 || tp.Duplicates != 0 || len(r.Problems) > 0 {
		t.Fatalf("throughput %+v, problems %v", tp, r.Problems)
	}
	if tp.DelivPerSec <= 0 || tp.PeakDelivSec <= 0 || r.Series == nil {
		t.Fatalf("rates %+v", tp)
	}
	if err := writeChart(chart, r); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(chart); !bytes.Contains(b, []byte("<polyline")) {
		t.Fatal("chart has no lines")
	}
}

func TestLatencyFixedRate(t *testing.T) {
	gw := fakegw.New(t)
	r := run(t, "latency", "--target", gw.URL, "--conns", "10", "--mix", allKinds, "--rate", "200", "--duration", "1s", "--poll-timeout", "1")
	tp := r.Throughput
	if tp == nil || tp.Provisioned < 100 || tp.Provisioned > 210 || tp.Undelivered != 0 {
		t.Fatalf("at 200/s for 1s: %+v", tp)
	}
	for _, k := range []string{"sse", "ws", "wsmux", "stream", "longpoll", "all"} {
		if r.Latency[k].Count == 0 {
			t.Errorf("no latency for %s", k)
		}
	}
}

func TestFanout(t *testing.T) {
	gw := fakegw.New(t)
	chart := filepath.Join(t.TempDir(), "fo.svg")
	r := run(t, "fanout", "--target", gw.URL, "--queues", "25", "--mix", "sse=1,wsmux=1", "--mux-queues", "5", "--rounds", "3")
	f := r.Fanout
	if f == nil || len(f.Rounds) != 3 || f.Queues != 25 || len(r.Problems) > 0 {
		t.Fatalf("fanout %+v, problems %v", f, r.Problems)
	}
	for i, rd := range f.Rounds {
		if rd.Delivered != 25 || rd.Missing != 0 || rd.LastMs < rd.FirstMs || rd.ProvisionMs <= 0 {
			t.Fatalf("round %d: %+v", i, rd)
		}
	}
	if gw.Provisions.Load() != 3 {
		t.Fatalf("%d provision calls, want 3 (one per round)", gw.Provisions.Load())
	}
	if err := writeChart(chart, r); err != nil {
		t.Fatal(err)
	}
}

func TestFailuresAreCounted(t *testing.T) {
	gw := fakegw.New(t)
	// a second gateway node that accepts provisioning (into the same
	// store) but refuses every subscriber
	gwURL, _ := url.Parse(gw.URL)
	proxy := httputil.NewSingleHostReverseProxy(gwURL)
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trans" {
			proxy.ServeHTTP(w, r)
			return
		}
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer refuse.Close()
	// half the subscribers go to a gateway that refuses them
	r := run(t, "capacity", "--target", gw.URL+","+refuse.URL, "--conns", "10", "--mix", "sse=1",
		"--duration", "100ms", "--idle-window", "50ms", "--verify-timeout", "2s")
	if r.Conns.Failed != 5 || r.Errors["connect: http 503"] != 5 || r.Verify.Verified != 5 || len(r.Problems) == 0 {
		t.Fatalf("failed %d, errors %v, verify %+v, problems %v", r.Conns.Failed, r.Errors, r.Verify, r.Problems)
	}
	var out bytes.Buffer
	if code := report(r.Options, r, &out, io.Discard); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(out.String(), "PROBLEM:") || !strings.Contains(out.String(), "connect: http 503") {
		t.Fatal(out.String())
	}
	// provisioning failures in a throughput run
	gw.FailProvision.Store(true)
	r = run(t, "throughput", "--target", gw.URL, "--conns", "2", "--mix", "stream=1", "--duration", "300ms", "--prov-conns", "1")
	if r.Throughput.ProvErrors == 0 || r.Errors["provision: http 500"] == 0 {
		t.Fatalf("provision errors: %+v %v", r.Throughput, r.Errors)
	}
}

func TestOptionsValidation(t *testing.T) {
	ctx := testCtx(t)
	bad := map[string][]string{
		"not a loopback":      {"capacity", "--target", "http://192.0.2.1:3001"},
		"hard cap":            {"capacity", "--conns", "200001", "--target", "http://127.0.0.1:1"},
		"between 0 and 30m0s": {"latency", "--duration", "31m", "--target", "http://127.0.0.1:1"},
		"10000":               {"fanout", "--queues", "10001", "--target", "http://127.0.0.1:1"},
		"unknown":             {"capacity", "--mix", "smoke=3", "--target", "http://127.0.0.1:1"},
		"--redis":             {"capacity", "--redis", "10.0.0.1:6379", "--target", "http://127.0.0.1:1"},
		"--idle-window":       {"capacity", "--duration", "1s", "--idle-window", "2s", "--target", "http://127.0.0.1:1"},
		"TLS":                 {"throughput", "--target", "https://127.0.0.1:3002"},
		"positive weight":     {"throughput", "--mix", "sse=0", "--target", "http://127.0.0.1:1"},
		"--worker-nice":       {"capacity", "--worker-nice", "20", "--target", "http://127.0.0.1:1"},
	}
	for want, args := range bad {
		_, err := parseOptions(ctx, args[0], args[1:], io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want one mentioning %q", args, err, want)
		}
	}
	var stderr bytes.Buffer
	if code := realMain(ctx, []string{"capacity", "--target", "http://192.0.2.1:3001"}, nil, io.Discard, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "refusing target") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if code := realMain(ctx, []string{"nosuch"}, nil, io.Discard, io.Discard); code != 2 {
		t.Fatal("unknown scenario must exit 2")
	}
	if code := realMain(ctx, []string{"latency", "-h"}, nil, io.Discard, io.Discard); code != 0 {
		t.Fatal("-h must exit 0")
	}
}

func TestPlan(t *testing.T) {
	ctx := testCtx(t)
	o, err := parseOptions(ctx, "capacity", []string{"--target", "http://127.0.0.1:1,http://127.0.0.1:2", "--conns", "100000",
		"--mix", "sse=40,ws=30,wsmux=10,stream=10,longpoll=10"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p, err := makePlan(o, 20000, "lt-x", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Workers) != 6 || p.Conns != 100000 || p.ByKind["sse"] != 40000 || p.ByKind["longpoll"] != 10000 {
		t.Fatalf("%d workers, %d conns, %v", len(p.Workers), p.Conns, p.ByKind)
	}
	// 50,000 per destination > 28,000: every worker gets its own source
	// address (each holds < 25,000 connections)
	seen := map[string]bool{}
	total := 0
	for _, w := range p.Workers {
		if len(w.Sources) != 1 || seen[w.Sources[0]] {
			t.Fatalf("worker %d sources %v", w.Index, w.Sources)
		}
		seen[w.Sources[0]] = true
		total += w.Subs()
	}
	if total != 100000 || !seen["127.0.0.2"] || !seen["127.0.0.7"] {
		t.Fatalf("total %d, sources %v", total, seen)
	}
	// an explicit --procs that overflows the file limit is refused
	o.Procs = 2
	if _, err := makePlan(o, 20000, "lt-x", time.Now()); err == nil || !strings.Contains(err.Error(), "--procs 6") {
		t.Fatalf("overflow: %v", err)
	}
	// few connections: no source addresses
	o.Procs, o.Conns = 0, 1000
	if p, err := makePlan(o, 20000, "lt-x", time.Now()); err != nil || p.Sources || len(p.Workers) != 1 {
		t.Fatalf("small plan: %+v %v", p, err)
	}
	if got := splitWeights(10, map[string]int{"sse": 1, "ws": 1, "stream": 1}); got["sse"]+got["ws"]+got["stream"] != 10 {
		t.Fatalf("splitWeights %v", got)
	}
	if fmt.Sprint(spread(7, 3)) != "[3 2 2]" {
		t.Fatal(spread(7, 3))
	}
}

func TestGatewayProfiles(t *testing.T) {
	gw := fakegw.New(t)
	var mu sync.Mutex
	var paths []string
	pp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		mu.Unlock()
		if r.URL.Path == "/debug/pprof/goroutine" {
			http.Error(w, "nope", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, "profile bytes")
	}))
	defer pp.Close()
	prefix := filepath.Join(t.TempDir(), "case")
	r := run(t, "throughput", "--target", gw.URL, "--conns", "2", "--mix", "sse=1", "--duration", "1500ms",
		"--prov-conns", "1", "--pprof", pp.URL, "--pprof-out", prefix)
	if len(r.Profiles) != 1 || r.Profiles[0] != prefix+"-cpu.pprof" {
		t.Fatalf("profiles %v, problems %v, requests %v", r.Profiles, r.Problems, paths)
	}
	if b, _ := os.ReadFile(prefix + "-cpu.pprof"); string(b) != "profile bytes" {
		t.Fatalf("cpu profile %q", b)
	}
	r = run(t, "capacity", "--target", gw.URL, "--conns", "2", "--mix", "sse=1", "--duration", "100ms", "--idle-window", "50ms",
		"--pprof", pp.URL, "--pprof-out", prefix)
	if len(r.Profiles) != 1 || !strings.HasSuffix(r.Profiles[0], "-heap.pprof") || !strings.Contains(strings.Join(r.Problems, ";"), "goroutine profile: /debug/pprof/goroutine: http 404") {
		t.Fatalf("profiles %v, problems %v", r.Profiles, r.Problems)
	}
	// An idle window of a second or more is CPU-profiled too.
	r = run(t, "capacity", "--target", gw.URL, "--conns", "2", "--mix", "sse=1", "--duration", "1600ms", "--idle-window", "1500ms",
		"--pprof", pp.URL, "--pprof-out", prefix)
	if len(r.Profiles) != 2 || !strings.HasSuffix(r.Profiles[0], "-cpu.pprof") || !strings.HasSuffix(r.Profiles[1], "-heap.pprof") {
		t.Fatalf("idle window profiles %v, problems %v", r.Profiles, r.Problems)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(paths[0], "/debug/pprof/profile?seconds=") {
		t.Fatalf("requests %v", paths)
	}
	if _, err := parseOptions(testCtx(t), "capacity", []string{"--pprof", "http://192.0.2.1:6060"}, io.Discard); err == nil {
		t.Fatal("--pprof must be loopback too")
	}
}

// TestWrkProvision: the wrk-like provision scenario keeps its connections
// busy for the duration, counts every answer, and reports requests/s and
// latency; every request reached the gateway.
func TestWrkProvision(t *testing.T) {
	gw := fakegw.New(t)
	r := run(t, "provision", "--target", gw.URL, "--conns", "2", "--duration", "300ms")
	w := r.Wrk
	if w == nil || w.OK == 0 || w.Failed != 0 || w.Empty != 0 || len(r.Problems) != 0 {
		t.Fatalf("wrk %+v, problems %v", w, r.Problems)
	}
	// Requests in flight when the run ended reached the gateway but are
	// not counted: at most one per connection.
	if got := gw.Provisions.Load(); got < w.OK || got > w.OK+int64(w.Conns) {
		t.Errorf("gateway saw %d provisions, the tool counted %d over %d connections", got, w.OK, w.Conns)
	}
	if w.ReqPerSec <= 0 || w.Latency.Count != uint64(w.OK) || w.Latency.P50 <= 0 {
		t.Errorf("requests/s %v, latency %+v", w.ReqPerSec, w.Latency)
	}
}

// TestWrkFailuresByReason: refused requests count as failed, by the
// reason label the other scenarios use too.
func TestWrkFailuresByReason(t *testing.T) {
	gw := fakegw.New(t)
	gw.FailProvision.Store(true)
	r := run(t, "provision", "--target", gw.URL, "--conns", "2", "--duration", "200ms")
	w := r.Wrk
	if w == nil || w.OK != 0 || w.Failed == 0 || r.Errors["http 500"] != w.Failed || len(r.Errors) != 1 {
		t.Fatalf("wrk %+v, errors %v", w, r.Errors)
	}
}

// TestWrkPopStopsWhenEmptied: the pop scenario fills its queues, pops one
// message per request, never finds a queue empty, and ends by itself once
// every message is taken, well before --duration.
func TestWrkPopStopsWhenEmptied(t *testing.T) {
	gw := fakegw.New(t)
	start := time.Now()
	r := run(t, "pop", "--target", gw.URL, "--conns", "3", "--duration", "1m", "--queues", "4", "--prefill", "50")
	w := r.Wrk
	if w == nil || w.Prefilled != 50 || w.OK != 50 || w.Empty != 0 || w.Failed != 0 || len(r.Problems) != 0 {
		t.Fatalf("wrk %+v, problems %v", w, r.Problems)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the run took %v: it did not stop when the queues were empty", took)
	}
}

// TestWrkLimits: the wrk-like scenarios refuse what crosses their bounds.
func TestWrkLimits(t *testing.T) {
	ctx := testCtx(t)
	for _, args := range [][]string{
		{"provision", "--conns", "4097"},
		{"provision", "--duration", "31m"},
		{"pop", "--queues", "10001"},
		{"pop", "--prefill", "0"},
		{"pop", "--prefill", "2000001"},
		{"provision", "--target", "http://10.0.0.1:3001"},
	} {
		a := append([]string{}, args[1:]...)
		if !slices.Contains(a, "--target") {
			a = append(a, "--target", "http://127.0.0.1:1")
		}
		if _, err := parseOptions(ctx, args[0], a, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
