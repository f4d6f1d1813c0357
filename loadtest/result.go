package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/hist"
	"github.com/popbox/popbox/loadtest/internal/redisinfo"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// Result is the outcome of one scenario run (the --out JSON).
type Result struct {
	Scenario    string                  `json:"scenario"`
	Started     time.Time               `json:"started"`
	WallSecs    float64                 `json:"wall_s"`
	Command     []string                `json:"command"`
	Options     *Options                `json:"options"`
	Machine     sysinfo.Machine         `json:"machine"`
	Procs       int                     `json:"procs"`
	SourceAddrs bool                    `json:"source_addrs"`
	Conns       ConnStats               `json:"connections"`
	Subscribers int64                   `json:"subscribers"`
	ByKind      map[string]*KindCounts  `json:"by_transport"`
	Gateway     *GatewayStats           `json:"gateway,omitempty"`
	GwCounters  *GatewayCounters        `json:"gateway_counters,omitempty"` // capacity: the gateways' /metrics (gwcounters.go)
	Redis       *RedisStats             `json:"redis,omitempty"`
	Verify      *VerifyStats            `json:"verify,omitempty"`
	Throughput  *ThroughputStats        `json:"throughput,omitempty"`
	Fanout      *FanoutStats            `json:"fanout,omitempty"`
	Wrk         *WrkStats               `json:"wrk,omitempty"`
	Latency     map[string]hist.Summary `json:"latency,omitempty"`
	Provision   hist.Summary            `json:"provision_call"`
	Histograms  map[string]*hist.Hist   `json:"histograms,omitempty"`
	Series      *Series                 `json:"series,omitempty"`
	Errors      map[string]int64        `json:"errors"`
	LoadTool    LoadToolStats           `json:"load_tool"`
	Host        HostStats               `json:"host"`
	Profiles    []string                `json:"profiles,omitempty"`
	Problems    []string                `json:"problems,omitempty"`
}

// ConnStats counts connections.
type ConnStats struct {
	Attempted   int64   `json:"attempted"`
	Open        int64   `json:"open"` // when every attempt had settled
	OpenAtEnd   int64   `json:"open_at_end"`
	Failed      int64   `json:"failed"`
	Dropped     int64   `json:"dropped"`
	ConnectSecs float64 `json:"connect_s"`
}

// GatewayStats is what /proc says about the gateway process(es).
type GatewayStats struct {
	PIDs         []int       `json:"pids"`
	Found        string      `json:"found_by"`
	Error        string      `json:"error,omitempty"`
	BaselineRSS  int64       `json:"baseline_rss_bytes"`
	RSS          int64       `json:"rss_bytes"` // at the end of the hold (capacity) or of the run
	HWM          int64       `json:"hwm_bytes"`
	RSSPerConn   float64     `json:"rss_per_conn_bytes,omitempty"`
	IdleCPU      float64     `json:"idle_cpu_cores,omitempty"`
	IdleSecs     float64     `json:"idle_window_s,omitempty"`
	LoadCPU      float64     `json:"load_cpu_cores,omitempty"`
	LoadSecs     float64     `json:"load_window_s,omitempty"`
	PerProcess   []ProcStats `json:"per_process,omitempty"`
	RSSAfterVerf int64       `json:"rss_after_verify_bytes,omitempty"`
}

// ProcStats is one gateway process.
type ProcStats struct {
	PID         int   `json:"pid"`
	BaselineRSS int64 `json:"baseline_rss_bytes"`
	RSS         int64 `json:"rss_bytes"`
}

// RedisStats is the gateway's footprint in Redis.
type RedisStats struct {
	Clients *redisinfo.Clients `json:"clients,omitempty"`
	Error   string             `json:"error,omitempty"`
	CPU     float64            `json:"cpu_cores,omitempty"` // redis-server during the load window
	// Commands is the INFO commandstats delta over the measured phase
	// (after the subscribers connected, until the last delivery); calls
	// made inside Lua scripts are counted too.
	Commands map[string]redisinfo.CmdStat `json:"commands,omitempty"`
	// CallsPerMsg and CPUPerMsg divide the deltas by the messages
	// delivered: the Redis work behind one delivery. One Redis core allows
	// about 1e6/CPUPerMsg deliveries per second.
	CallsPerMsg float64 `json:"calls_per_message,omitempty"`
	CPUPerMsg   float64 `json:"cpu_us_per_message,omitempty"`
	EvalPerMsg  float64 `json:"scripts_per_message,omitempty"`
}

func (rs *RedisStats) perMessage(before, after *redisinfo.Snapshot, delivered int64) {
	rs.Commands = map[string]redisinfo.CmdStat{}
	var calls, evals int64
	for name, a := range after.Commands {
		b := before.Commands[name]
		d := redisinfo.CmdStat{Calls: a.Calls - b.Calls, Usec: a.Usec - b.Usec}
		if d.Calls <= 0 || name == "info" || strings.HasPrefix(name, "client") {
			continue
		}
		rs.Commands[name] = d
		calls += d.Calls
		if strings.HasPrefix(name, "eval") || strings.HasPrefix(name, "fcall") {
			evals += d.Calls
		}
	}
	if delivered > 0 {
		rs.CallsPerMsg = float64(calls) / float64(delivered)
		rs.EvalPerMsg = float64(evals) / float64(delivered)
		rs.CPUPerMsg = (after.CPU - before.CPU) * 1e6 / float64(delivered)
	}
}

// VerifyStats is the capacity check: one message per subscriber.
type VerifyStats struct {
	Expected   int64   `json:"expected"`
	Verified   int64   `json:"verified"`
	Missing    int64   `json:"missing"`
	Duplicates int64   `json:"duplicates"`
	Secs       float64 `json:"secs"`
}

// ThroughputStats is the throughput/latency run.
type ThroughputStats struct {
	RunSecs      float64 `json:"run_s"`
	Provisioned  int64   `json:"provisioned"`
	Delivered    int64   `json:"delivered"`
	Undelivered  int64   `json:"undelivered"`
	Duplicates   int64   `json:"duplicates"`
	ProvErrors   int64   `json:"provision_errors"`
	ProvPerSec   float64 `json:"provisioned_per_s"`
	DelivPerSec  float64 `json:"delivered_per_s"`
	PeakDelivSec int64   `json:"peak_delivered_per_s"`
	TargetRate   float64 `json:"target_rate,omitempty"`
}

// FanoutStats is the fan-out run.
type FanoutStats struct {
	Queues int64         `json:"queues"`
	Open   int64         `json:"open_subscribers"`
	Rounds []FanoutRound `json:"rounds"`
}

// FanoutRound is one transaction to every queue; times in ms from just
// before the POST /trans.
type FanoutRound struct {
	ProvisionMs float64 `json:"provision_ms"`
	ProvError   string  `json:"provision_error,omitempty"`
	Delivered   int64   `json:"delivered"`
	Missing     int64   `json:"missing"`
	FirstMs     float64 `json:"first_ms"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	LastMs      float64 `json:"last_ms"`
}

// Series are per-second counts from the start of the run.
type Series struct {
	Provisioned []int64 `json:"provisioned"`
	Delivered   []int64 `json:"delivered"`
}

// HostStats is how busy the whole machine was: figures measured on a box
// that other work keeps busy are not comparable.
type HostStats struct {
	LoadAvgStart float64 `json:"loadavg_start"`
	LoadAvgEnd   float64 `json:"loadavg_end"`
	// BusyCores is the machine's average busy CPU (all processes) over the
	// measured window (capacity: the idle window; others: the run).
	BusyCores float64 `json:"busy_cores"`
	Cores     int     `json:"cores"`
}

// LoadToolStats is the load tool's own cost.
type LoadToolStats struct {
	CPUSecs float64 `json:"cpu_s"`
	MaxRSS  int64   `json:"max_rss_bytes"` // largest worker
	Nice    int     `json:"worker_nice"`   // the workers' nice value (--worker-nice), the highest
}

// merge folds the worker results into r.
func (r *Result) merge(results []*WorkerResult) {
	r.ByKind = map[string]*KindCounts{}
	r.Errors = map[string]int64{}
	r.Histograms = map[string]*hist.Hist{}
	all, prov := hist.New(), hist.New()
	var rounds []*hist.Hist
	var sProv, sDeliv []int64
	addSeries := func(dst []int64, src []int64) []int64 {
		for len(dst) < len(src) {
			dst = append(dst, 0)
		}
		for i, v := range src {
			dst[i] += v
		}
		return dst
	}
	for _, w := range results {
		if w == nil {
			continue
		}
		r.Subscribers += w.Subs
		r.Conns.OpenAtEnd += w.OpenAtStop
		r.Conns.Failed += w.Progress.Failed
		r.Conns.Dropped += w.Progress.Dropped
		r.Conns.Attempted += w.Progress.Attempted
		r.Conns.ConnectSecs = max(r.Conns.ConnectSecs, w.ConnectSecs)
		for k, c := range w.ByKind {
			t := r.ByKind[k]
			if t == nil {
				t = &KindCounts{}
				r.ByKind[k] = t
			}
			t.Subs += c.Subs
			t.Conns += c.Conns
			t.Opened += c.Opened
			t.Failed += c.Failed
			t.Dropped += c.Dropped
		}
		for k, v := range w.Errors {
			r.Errors[k] += v
		}
		for k, h := range w.Latency {
			if r.Histograms[k] == nil {
				r.Histograms[k] = hist.New()
			}
			r.Histograms[k].Merge(h)
			all.Merge(h)
		}
		prov.Merge(w.ProvisionCall)
		for i, h := range w.Rounds {
			for len(rounds) <= i {
				rounds = append(rounds, hist.New())
			}
			rounds[i].Merge(h)
		}
		sProv = addSeries(sProv, w.SeriesProv)
		sDeliv = addSeries(sDeliv, w.SeriesDeliv)
		r.LoadTool.CPUSecs += w.CPUSecs
		r.LoadTool.MaxRSS = max(r.LoadTool.MaxRSS, w.MaxRSS)
		r.LoadTool.Nice = max(r.LoadTool.Nice, w.Nice)
	}
	if all.Count() > 0 {
		r.Latency = map[string]hist.Summary{}
		for k, h := range r.Histograms {
			r.Latency[k] = h.Summarize()
		}
		r.Histograms["all"] = all
		r.Latency["all"] = all.Summarize()
	}
	if prov.Count() > 0 {
		r.Histograms["provision_call"] = prov
		r.Provision = prov.Summarize()
	}
	for i, h := range rounds {
		r.Histograms[fmt.Sprintf("round_%d", i)] = h
	}
	if len(sProv) > 0 || len(sDeliv) > 0 {
		r.Series = &Series{Provisioned: sProv, Delivered: sDeliv}
	}
}

func sumResults(results []*WorkerResult, f func(*WorkerResult) int64) int64 {
	var n int64
	for _, w := range results {
		if w != nil {
			n += f(w)
		}
	}
	return n
}

// writeJSON writes r to path.
func (r *Result) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// kib formats bytes as KiB.
func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// printSummary writes the human summary.
func (r *Result) printSummary(w io.Writer) {
	if r.Wrk != nil {
		r.printWrk(w)
		return
	}
	fmt.Fprintf(w, "== %s: %d subscribers (%s) on %d target(s), %d worker process(es)%s, %.1fs\n",
		r.Scenario, r.Subscribers, describeCounts(r.ByKind), len(r.Options.Targets), r.Procs,
		map[bool]string{true: ", loopback source addresses", false: ""}[r.SourceAddrs], r.WallSecs)
	c := r.Conns
	fmt.Fprintf(w, "connections: attempted %d, open %d (in %.1fs), failed %d, dropped %d, open at end %d\n",
		c.Attempted, c.Open, c.ConnectSecs, c.Failed, c.Dropped, c.OpenAtEnd)
	if r.GwCounters != nil {
		fmt.Fprintf(w, "gateway counters: %s\n", r.GwCounters.text())
	}
	if g := r.Gateway; g != nil {
		if g.Error != "" {
			fmt.Fprintf(w, "gateway: %s\n", g.Error)
		}
		if len(g.PIDs) > 0 {
			fmt.Fprintf(w, "gateway pids %v (%s): RSS %s (baseline %s, peak %s)", g.PIDs, g.Found, mib(g.RSS), mib(g.BaselineRSS), mib(g.HWM))
			if g.RSSPerConn > 0 {
				fmt.Fprintf(w, ", %s per connection", kib(g.RSSPerConn))
			}
			fmt.Fprintln(w)
			if g.IdleSecs > 0 {
				fmt.Fprintf(w, "gateway CPU while idle: %.3f cores (over %.0fs)\n", g.IdleCPU, g.IdleSecs)
			}
			if g.LoadSecs > 0 {
				fmt.Fprintf(w, "gateway CPU under load: %.2f cores (over %.1fs)\n", g.LoadCPU, g.LoadSecs)
			}
		}
	}
	if rd := r.Redis; rd != nil {
		if rd.Error != "" {
			fmt.Fprintf(w, "redis: %s\n", rd.Error)
		}
		if cl := rd.Clients; cl != nil {
			fmt.Fprintf(w, "redis clients: %d in all, %d popbox over %d node name(s), at most %d per node\n",
				cl.Total, cl.Popbox, len(cl.ByName), cl.MaxPerName())
		}
		if rd.CPU > 0 {
			fmt.Fprintf(w, "redis-server CPU under load: %.2f cores\n", rd.CPU)
		}
		if rd.CallsPerMsg > 0 {
			fmt.Fprintf(w, "redis work per delivered message: %.1f scripts, %.1f commands (counting those inside scripts), %.1f µs of Redis CPU",
				rd.EvalPerMsg, rd.CallsPerMsg, rd.CPUPerMsg)
			if rd.CPUPerMsg > 0 {
				fmt.Fprintf(w, " (one Redis core allows ~%.0f msg/s)", 1e6/rd.CPUPerMsg)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "  top commands: %s\n", topCommands(rd.Commands, 5))
		}
	}
	if v := r.Verify; v != nil {
		fmt.Fprintf(w, "messages verified: %d of %d (missing %d, duplicates %d) in %.1fs\n",
			v.Verified, v.Expected, v.Missing, v.Duplicates, v.Secs)
	}
	if t := r.Throughput; t != nil {
		fmt.Fprintf(w, "run %.1fs: provisioned %d (%.0f/s), delivered %d (%.0f/s, peak %d/s), undelivered %d, duplicates %d, provision errors %d\n",
			t.RunSecs, t.Provisioned, t.ProvPerSec, t.Delivered, t.DelivPerSec, t.PeakDelivSec, t.Undelivered, t.Duplicates, t.ProvErrors)
	}
	if f := r.Fanout; f != nil {
		fmt.Fprintf(w, "fan-out to %d queues (%d subscribers open):\n", f.Queues, f.Open)
		fmt.Fprintf(w, "  %-5s %12s %10s %8s %9s %9s %9s %9s\n", "round", "provision", "delivered", "missing", "first", "p50", "p99", "last")
		for i, rd := range f.Rounds {
			fmt.Fprintf(w, "  %-5d %10.1fms %10d %8d %7.1fms %7.1fms %7.1fms %7.1fms", i, rd.ProvisionMs, rd.Delivered, rd.Missing, rd.FirstMs, rd.P50Ms, rd.P99Ms, rd.LastMs)
			if rd.ProvError != "" {
				fmt.Fprintf(w, "  (%s)", rd.ProvError)
			}
			fmt.Fprintln(w)
		}
	}
	if len(r.Latency) > 0 && r.Fanout == nil {
		fmt.Fprintf(w, "provision→receive latency (ms):\n  %-9s %9s %8s %8s %8s %8s %8s\n", "transport", "count", "p50", "p90", "p99", "p99.9", "max")
		for _, k := range latencyKeys(r.Latency) {
			s := r.Latency[k]
			fmt.Fprintf(w, "  %-9s %9d %8.2f %8.2f %8.2f %8.2f %8.2f\n", k, s.Count, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max))
		}
	}
	if r.Provision.Count > 0 {
		p := r.Provision
		fmt.Fprintf(w, "POST /trans call time (ms): p50 %.2f, p99 %.2f, max %.2f over %d calls\n", ms(p.P50), ms(p.P99), ms(p.Max), p.Count)
	}
	r.printTail(w)
}

// printTail prints the errors, the load tool's and the machine's load, the
// profiles and the problems of a run.
func (r *Result) printTail(w io.Writer) {
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "errors by reason:")
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return r.Errors[keys[i]] > r.Errors[keys[j]] || (r.Errors[keys[i]] == r.Errors[keys[j]] && keys[i] < keys[j])
		})
		for _, k := range keys {
			fmt.Fprintf(w, "  %8d  %s\n", r.Errors[k], k)
		}
	} else {
		fmt.Fprintln(w, "errors: none")
	}
	fmt.Fprintf(w, "load tool: %.1f CPU-seconds, largest worker RSS %s%s\n", r.LoadTool.CPUSecs, mib(r.LoadTool.MaxRSS), niceNote(r.LoadTool.Nice))
	fmt.Fprintf(w, "machine: %.2f of %d cores busy (all processes) during the measured window; load average %.1f → %.1f\n",
		r.Host.BusyCores, r.Host.Cores, r.Host.LoadAvgStart, r.Host.LoadAvgEnd)
	for _, p := range r.Profiles {
		fmt.Fprintf(w, "gateway profile: %s (go tool pprof -top %s)\n", p, p)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
}

// latencyKeys orders transports as transport.Kinds, then "all".
func latencyKeys(m map[string]hist.Summary) []string {
	var out []string
	for _, k := range transport.Kinds {
		if _, ok := m[string(k)]; ok {
			out = append(out, string(k))
		}
	}
	if _, ok := m["all"]; ok {
		out = append(out, "all")
	}
	return out
}

// topCommands lists the n commands that took the most Redis time.
func topCommands(m map[string]redisinfo.CmdStat, n int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return m[names[i]].Usec > m[names[j]].Usec })
	var parts []string
	for i, k := range names {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d calls/%dms", k, m[k].Calls, m[k].Usec/1000))
	}
	return strings.Join(parts, ", ")
}

func describeCounts(m map[string]*KindCounts) string {
	var parts []string
	for _, k := range transport.Kinds {
		if c := m[string(k)]; c != nil && c.Subs > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", k, thousands(c.Subs)))
		}
	}
	return strings.Join(parts, ", ")
}

// niceNote tells that the workers ran at a lower priority than the
// gateways ("" at nice 0).
func niceNote(nice int) string {
	if nice == 0 {
		return ""
	}
	return fmt.Sprintf(", workers at nice %d", nice)
}
