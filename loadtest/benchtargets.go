package main

import (
	"fmt"
	"math"
	"strings"
)

// originalNotRunnable is why the ratio rows of issue 14 (× the original
// Node PopBox) show absolute figures: the original cannot be obtained on
// this machine. Its package.json names it "PopBox", which is not on npm
// (the npm package "popbox" is an unrelated Vue component), and it depends
// on tarballs from GitHub, which is out of reach here (package registries
// only).
const originalNotRunnable = "original not runnable here (not on npm; no network beyond registries)"

// renderTargets writes the tables that compare the measurements with the
// issues' targets: issue 14's table first, then the rows of issue 8 that
// issue 14 does not restate.
func renderTargets(b *strings.Builder, suites []*suiteData) {
	renderIssue14(b, suites)
	renderIssue8(b, suites)
}

// peerCase returns the result of a comparison case and, when it has none,
// why ("peer not run: ..." or "not measured").
func peerCase(suites []*suiteData, name string) (*Result, string) {
	if _, r := findSuite(suites, name, "full"); r != nil {
		return r, ""
	}
	why := "not measured"
	for _, s := range suites {
		if c, ok := s.cases[name]; ok {
			switch {
			case c.NotRun != "":
				return nil, c.NotRun
			case c.Error != "":
				why = "failed: " + c.Error
			}
		}
	}
	if strings.HasSuffix(name, "-"+peerCentrifugo) {
		for _, s := range suites {
			if s.meta.Peer != nil && s.meta.Peer.NotRun != "" && why == "not measured" {
				why = "peer not run: " + s.meta.Peer.NotRun
			}
		}
	}
	return nil, why
}

// peerName is "Centrifugo v6.9.1" as the suite found it.
func peerName(suites []*suiteData) string {
	for _, s := range suites {
		if p := s.meta.Peer; p != nil && p.Version != "" {
			return p.Name + " " + p.Version
		}
	}
	return "Centrifugo " + centrifugoWant
}

// throughputText is "9,970/s, p50 11.2 ms, p99 25.4 ms".
func throughputText(r *Result) string {
	all := r.Latency["all"]
	s := fmt.Sprintf("%s/s, p50 %.1f ms, p99 %.1f ms", thousands(int64(r.Throughput.DelivPerSec)), ms(all.P50), ms(all.P99))
	if n := r.Throughput.Undelivered; n > 0 {
		s += fmt.Sprintf(", %s undelivered", thousands(n))
	}
	return s
}

// idleText is "34.3 KiB, 0.045 cores (10,000 open)".
func idleText(r *Result) string {
	g := r.Gateway
	if g == nil || g.RSS <= 0 {
		return "not measured (no RSS figure)"
	}
	s := fmt.Sprintf("%s, %.3f cores (%s of %s open", kib(g.RSSPerConn), g.IdleCPU, thousands(r.Conns.Open), thousands(r.Conns.Attempted))
	if r.Conns.Failed+r.Conns.Dropped > 0 {
		s += fmt.Sprintf(", %d failed, %d dropped", r.Conns.Failed, r.Conns.Dropped)
	}
	return s + ")"
}

// ahead compares ours with the peer's figure: "" when ours is at least as
// good or the two differ by no more than tol (what the measurement can
// tell apart), else "behind on WHAT by N %".
func ahead(what string, ours, peer float64, lowerBetter bool, tol float64) string {
	if math.Abs(ours-peer) <= tol {
		return ""
	}
	if lowerBetter {
		switch {
		case ours <= peer:
			return ""
		case peer <= 0:
			return fmt.Sprintf("behind on %s (%.3g against 0)", what, ours)
		}
		return fmt.Sprintf("behind on %s by %.0f %%", what, (ours/peer-1)*100)
	}
	if ours >= peer {
		return ""
	}
	return fmt.Sprintf("behind on %s by %.0f %%", what, (1-ours/peer)*100)
}

// cpuResolution is the smallest difference of two CPU figures (cores)
// measured over windows of these lengths that is not clock noise: /proc
// counts process CPU time in 10 ms ticks, so two ticks over the shorter
// window.
func cpuResolution(secs ...float64) float64 {
	shortest := math.Inf(1)
	for _, s := range secs {
		if s > 0 {
			shortest = min(shortest, s)
		}
	}
	if math.IsInf(shortest, 1) {
		return 0
	}
	return 0.02 / shortest
}

// aheadVerdict joins ahead results: "met" when none is behind.
func aheadVerdict(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "met"
	}
	return strings.Join(out, "; ")
}

// renderIssue14 renders issue 14's table of targets: one row (or two)
// per figure, each from the suite results that measure it.
func renderIssue14(b *strings.Builder, suites []*suiteData) {
	peer := peerName(suites)
	b.WriteString("## Against the targets (issue 14)\n\n")
	b.WriteString("Every row measured by this suite on this machine (gateway, Redis, load tool and the peer together). " +
		"The provisions/s and pops/s targets are ratios to the original PopBox (Node), which cannot be run here: it is not on npm " +
		"(the npm package `popbox` is an unrelated Vue component) and its dependencies are GitHub tarballs, out of reach " +
		"(package registries only); those rows give our absolute figures. The peer (" + peer + ", memory engine, uni SSE + uni WebSocket, anonymous " +
		"connections naming their channel, HTTP API with a key) runs right after the same workload against PopBox, with the " +
		"same load tool. \"KiB\" is 1024 bytes. Where both suites ran, the full suite's figure is shown.\n\n")
	t := table{head: []string{"figure", "target", "measured", "verdict"}}
	_, p := findSuite(suites, "provision", "full")
	_, q := findSuite(suites, "pop", "full")
	addWrkRows(&t, p, q)
	addGatewayCPURow(&t, p)
	addRedisCostRow(&t, suites, p)
	addThroughputRow(&t, suites)
	addVsThroughputRow(&t, suites, peer)
	addVsIdleRow(&t, suites, peer)
	addCapacityRow(&t, suites)
	addCapacity100kRows(&t, suites)
	t.render(b)
}

// addWrkRows adds the ratio rows (provisions/s and pops/s of the
// wrk-like runs p and q): the original is not runnable here, so they show
// absolute figures.
func addWrkRows(t *table, p, q *Result) {
	for _, row := range []struct {
		label string
		r     *Result
	}{
		{"provisions/s, 32 keep-alive connections, one queue each (wrk-like `provision`)", p},
		{"pops/s, the same way, queues pre-filled (`pop`)", q},
	} {
		if row.r == nil || row.r.Wrk == nil {
			t.add(row.label, "≥ 10× the original", "not measured", "not measured")
			continue
		}
		w := row.r.Wrk
		if w.Conns != 32 { // a scaled trial run
			row.label = strings.Replace(row.label, "32 keep-alive", fmt.Sprintf("%d keep-alive", w.Conns), 1)
		}
		t.add(row.label, "≥ 10× the original",
			fmt.Sprintf("%s/s (p50 %.2f ms, p99 %.2f ms)", thousands(int64(w.ReqPerSec)), ms(w.Latency.P50), ms(w.Latency.P99)),
			originalNotRunnable+": absolute figure only")
	}
}

// addGatewayCPURow adds the gateway CPU per provision of the `provision`
// run p.
func addGatewayCPURow(t *table, p *Result) {
	gw, gwText := math.NaN(), "not measured"
	if p != nil && p.Wrk != nil && p.Gateway != nil && p.Wrk.GatewayUsPerReq > 0 {
		gw = p.Wrk.GatewayUsPerReq
		gwText = fmt.Sprintf("%.0f µs (%.2f cores at %s/s)", gw, p.Gateway.LoadCPU, thousands(int64(p.Wrk.ReqPerSec)))
	}
	t.add("gateway CPU per provision (`provision` run)", "≤ 40 µs", gwText, verdict(gw, 40, true))
}

// addRedisCostRow adds Redis' CPU per provision (from the `provision` run
// p) and its commands per delivered message (from the `throughput` run).
func addRedisCostRow(t *table, suites []*suiteData, p *Result) {
	rd, cmds := math.NaN(), math.NaN()
	var rdParts []string
	if p != nil && p.Wrk != nil && p.Wrk.RedisUsPerReq > 0 {
		rd = p.Wrk.RedisUsPerReq
		text := fmt.Sprintf("%.0f µs per provision", rd)
		if p.Redis != nil && p.Redis.CPU > 0 {
			text += fmt.Sprintf(" (%.2f cores)", p.Redis.CPU)
		}
		rdParts = append(rdParts, text)
	}
	if _, tp := findSuite(suites, "throughput", "full"); tp != nil && tp.Redis != nil && tp.Redis.CallsPerMsg > 0 {
		cmds = tp.Redis.CallsPerMsg
		rdParts = append(rdParts, fmt.Sprintf("%.1f commands and %.1f scripts per delivered message (`throughput` run; commands inside scripts counted)",
			tp.Redis.CallsPerMsg, tp.Redis.EvalPerMsg))
	}
	rdText := "not measured"
	if len(rdParts) > 0 {
		rdText = strings.Join(rdParts, "; ")
	}
	t.add("Redis CPU per provision; Redis commands per delivered message", "≤ 15 µs; ≤ 6 commands", rdText,
		joinVerdicts(verdict(rd, 15, true), verdict(cmds, 6, true)))
}

// addThroughputRow adds the end-to-end delivered messages per second of
// the `throughput` run.
func addThroughputRow(t *table, suites []*suiteData) {
	_, r := findSuite(suites, "throughput", "full")
	if r == nil || r.Throughput == nil {
		t.add("delivered msg/s end-to-end, 1,000 SSE subscribers (`throughput`)", "≥ 20,000/s, p99 ≤ 15 ms", "not measured", "not measured")
		return
	}
	all := r.Latency["all"]
	t.add(fmt.Sprintf("delivered msg/s end-to-end, %s SSE subscribers (`throughput`, %d publishers)", thousands(r.Subscribers), r.Options.ProvConns),
		"≥ 20,000/s, p99 ≤ 15 ms", throughputText(r),
		joinVerdicts(verdict(r.Throughput.DelivPerSec, 20000, false), verdict(ms(all.P99), 15, true)))
}

// addVsThroughputRow compares the throughput workload run against PopBox
// and against the peer.
func addVsThroughputRow(t *table, suites []*suiteData, peer string) {
	ours, oursWhy := peerCase(suites, "vs-throughput-popbox")
	theirs, theirsWhy := peerCase(suites, "vs-throughput-"+peerCentrifugo)
	label := "the same workload beside " + peer + " (1,000 SSE subscribers, 32 closed-loop publishers, one after the other)"
	if ours != nil && ours.Options != nil {
		label = fmt.Sprintf("the same workload beside %s (%s SSE subscribers, %d closed-loop publishers, one after the other)",
			peer, thousands(ours.Subscribers), ours.Options.ProvConns)
	}
	switch {
	case ours == nil || ours.Throughput == nil:
		t.add(label, "ahead of Centrifugo on delivered/s and p99", "ours: "+oursWhy, "not measured")
	case theirs == nil || theirs.Throughput == nil:
		t.add(label, "ahead of Centrifugo on delivered/s and p99", "ours "+throughputText(ours)+"; Centrifugo: "+theirsWhy, "peer not run")
	default:
		t.add(label, "ahead of Centrifugo on delivered/s and p99",
			"ours "+throughputText(ours)+"; Centrifugo "+throughputText(theirs),
			aheadVerdict(ahead("delivered/s", ours.Throughput.DelivPerSec, theirs.Throughput.DelivPerSec, false, 0),
				ahead("p99", float64(ours.Latency["all"].P99), float64(theirs.Latency["all"].P99), true, 0)))
	}
}

// addVsIdleRow compares the idle-subscriber workload run against PopBox
// and against the peer: RSS per connection and idle CPU.
func addVsIdleRow(t *table, suites []*suiteData, peer string) {
	ours, oursWhy := peerCase(suites, "vs-idle-popbox")
	theirs, theirsWhy := peerCase(suites, "vs-idle-"+peerCentrifugo)
	label := "10,000 idle subscribers, SSE/WS 50/50, beside " + peer + ": RSS per connection, idle CPU"
	if ours != nil {
		label = fmt.Sprintf("%s idle subscribers, %s, beside %s: RSS per connection, idle CPU", thousands(ours.Subscribers), describeCounts(ours.ByKind), peer)
	}
	switch {
	case ours == nil || ours.Gateway == nil || ours.Gateway.RSS <= 0:
		t.add(label, "stay ahead of Centrifugo", "ours: "+oursWhy, "not measured")
	case theirs == nil || theirs.Gateway == nil || theirs.Gateway.RSS <= 0:
		t.add(label, "stay ahead of Centrifugo", "ours "+idleText(ours)+"; Centrifugo: "+theirsWhy, "peer not run")
	default:
		t.add(label, "stay ahead of Centrifugo", "ours "+idleText(ours)+"; Centrifugo "+idleText(theirs),
			aheadVerdict(ahead("RSS per connection", ours.Gateway.RSSPerConn, theirs.Gateway.RSSPerConn, true, 0),
				ahead("idle CPU", ours.Gateway.IdleCPU, theirs.Gateway.IdleCPU, true, cpuResolution(ours.Gateway.IdleSecs, theirs.Gateway.IdleSecs))))
	}
}

// addCapacityRow adds the RSS per idle connection of the `capacity` run.
func addCapacityRow(t *table, suites []*suiteData) {
	_, capR := findSuite(suites, "capacity", "full")
	if capR == nil || capR.Gateway == nil || !(capR.Gateway.RSSPerConn > 0) {
		t.add("RSS per idle connection, 19,500 mixed (`capacity`)", "≤ 16 KiB (stretch ≤ 10)", "not measured", "not measured")
		return
	}
	rss := capR.Gateway.RSSPerConn / 1024
	v := verdict(rss, 16, true)
	if rss <= 10 {
		v += " (stretch met too)"
	}
	t.add(fmt.Sprintf("RSS per idle connection, %s mixed (`capacity`)", thousands(capR.Subscribers)), "≤ 16 KiB (stretch ≤ 10)",
		fmt.Sprintf("%.1f KiB (RSS %s → %s with %s connections)", rss, mib(capR.Gateway.BaselineRSS), mib(capR.Gateway.RSS), thousands(capR.Conns.Open)), v)
}

// addCapacity100kRows adds the two rows of the `capacity-100k` run: the
// connections held and delivered to, then RSS and idle CPU at 100,000.
func addCapacity100kRows(t *table, suites []*suiteData) {
	_, big := findSuite(suites, "capacity-100k", "full")
	if big == nil {
		t.add("idle subscribers on one machine, 6 processes (`capacity-100k`)", "100,000 of 100,000, 0 dropped, every message delivered, in every run",
			"not measured (make bench-full)", "not measured")
		t.add("RSS per connection / idle CPU at 100,000", "≤ 16 KiB; ≤ 0.3 cores", "not measured (make bench-full)", "not measured")
		return
	}
	v := big.Verify
	if v == nil {
		v = &VerifyStats{}
	}
	verd := "met in this run"
	if big.Conns.Open < 100000 || big.Conns.Dropped > 0 || big.Conns.Failed > 0 || v.Verified < v.Expected || v.Expected == 0 {
		verd = "missed"
	}
	procs := 0
	if big.Gateway != nil {
		procs = len(big.Gateway.PIDs)
	}
	measured := fmt.Sprintf("%s open of %s over %d processes, %d failed, %d dropped, %s of %s messages delivered (one run)",
		thousands(big.Conns.Open), thousands(big.Conns.Attempted), procs, big.Conns.Failed, big.Conns.Dropped, thousands(v.Verified), thousands(v.Expected))
	if gc := big.GwCounters; gc != nil && big.Conns.Failed+big.Conns.Dropped > 0 {
		measured += fmt.Sprintf("; the gateways ended streams: %s; rejected %s; closed before a request %s",
			countsText(gc.StreamEnds), thousands(gc.Rejected), thousands(gc.Unanswered))
	}
	t.add("idle subscribers on one machine, 6 processes (`capacity-100k`)", "100,000 of 100,000, 0 dropped, every message delivered, in every run", measured, verd)
	rss, idle := math.NaN(), math.NaN()
	text := "not measured (no RSS figure)"
	if g := big.Gateway; g != nil && g.RSSPerConn > 0 {
		rss = g.RSSPerConn / 1024
		text = fmt.Sprintf("%.1f KiB; %.3f cores", rss, g.IdleCPU)
		if g.IdleSecs > 0 {
			idle = g.IdleCPU
		}
	}
	t.add("RSS per connection / idle CPU at 100,000", "≤ 16 KiB; ≤ 0.3 cores", text, joinVerdicts(verdict(rss, 16, true), verdict(idle, 0.3, true)))
}

// renderIssue8 renders issue 8's targets that issue 14's table does not
// restate (RSS per connection, 100K and delivered/s are there).
func renderIssue8(b *strings.Builder, suites []*suiteData) {
	b.WriteString("### Issue 8's other targets\n\n")
	t := table{head: []string{"figure", "target", "measured", "verdict"}}
	if s, r := findSuite(suites, "capacity", "full"); r != nil {
		v := r.Verify
		if v == nil {
			v = &VerifyStats{}
		}
		ok := r.Conns.Failed == 0 && r.Conns.Dropped == 0 && v.Verified == v.Expected && v.Expected > 0 && len(r.Errors) == 0
		verd := "met"
		if !ok || r.Conns.Open < 19500 {
			verd = "missed"
		}
		t.add("concurrent idle subscribers on one gateway process, mixed transports",
			"19,500 (the file ceiling) with 0 errors",
			fmt.Sprintf("%s open of %s, %d failed, %d dropped, %s of %s messages verified (%s suite)",
				thousands(r.Conns.Open), thousands(r.Conns.Attempted), r.Conns.Failed, r.Conns.Dropped,
				thousands(v.Verified), thousands(v.Expected), s.meta.Mode), verd)
		idle, text := math.NaN(), "not measured"
		if r.Gateway != nil && r.Gateway.IdleSecs > 0 {
			idle, text = r.Gateway.IdleCPU, fmt.Sprintf("%.3f cores over %.0f s", r.Gateway.IdleCPU, r.Gateway.IdleSecs)
		}
		t.add(fmt.Sprintf("gateway CPU while idle, %s subscribers", thousands(r.Subscribers)), "≤ 0.1 cores", text, verdict(idle, 0.1, true))
	} else {
		t.add("concurrent idle subscribers on one gateway process, mixed transports", "19,500 (the file ceiling) with 0 errors", "not measured", "not measured")
		t.add("gateway CPU while idle, 19,500 subscribers", "≤ 0.1 cores", "not measured", "not measured")
	}
	maxRedis := int64(-1)
	for _, s := range suites {
		for _, r := range s.results {
			if r.Redis != nil && r.Redis.Clients != nil {
				maxRedis = max(maxRedis, int64(r.Redis.Clients.MaxPerName()))
			}
		}
	}
	redisText, redisV := "not measured", "not measured"
	if maxRedis >= 0 {
		redisText = fmt.Sprintf("at most %d per gateway process (CLIENT LIST, over every scenario)", maxRedis)
		redisV = verdict(float64(maxRedis), 64, true)
	}
	t.add("Redis connections per gateway process, whatever its subscriber count", "≤ 64", redisText, redisV)
	if _, r := findSuite(suites, "fanout", "full"); r != nil && r.Fanout != nil && len(r.Fanout.Rounds) > 0 {
		prov, last := medianRound(r.Fanout.Rounds, func(f FanoutRound) float64 { return f.ProvisionMs }),
			medianRound(r.Fanout.Rounds, func(f FanoutRound) float64 { return f.LastMs })
		worstP, worstL := 0.0, 0.0
		for _, rd := range r.Fanout.Rounds {
			worstP, worstL = max(worstP, rd.ProvisionMs), max(worstL, rd.LastMs)
		}
		t.add(fmt.Sprintf("fan-out of one transaction to %s live subscribers", thousands(r.Fanout.Queues)), "provision answers ≤ 500 ms; last delivery ≤ 1 s",
			fmt.Sprintf("provision %.0f ms, last delivery %.0f ms (median of %d rounds; worst %.0f / %.0f ms)", prov, last, len(r.Fanout.Rounds), worstP, worstL),
			joinVerdicts(verdict(prov, 500, true), verdict(last, 1000, true)))
	} else {
		t.add("fan-out of one transaction to 10,000 live subscribers", "provision answers ≤ 500 ms; last delivery ≤ 1 s", "not measured", "not measured")
	}
	if _, r := findSuite(suites, "latency", "full"); r != nil && len(r.Latency) > 0 {
		all := r.Latency["all"]
		t.add(fmt.Sprintf("provision→receive latency at %s msg/s to %s subscribers", thousands(int64(r.Options.Rate)), thousands(r.Subscribers)),
			"p50 ≤ 2 ms, p99 ≤ 10 ms", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms (all transports; per transport below)", ms(all.P50), ms(all.P99)),
			joinVerdicts(verdict(ms(all.P50), 2, true), verdict(ms(all.P99), 10, true)))
	} else {
		t.add("provision→receive latency at 1,000 msg/s to 10,000 subscribers", "p50 ≤ 2 ms, p99 ≤ 10 ms", "not measured", "not measured")
	}
	t.render(b)
}

// renderPeer renders the comparison cases of one suite run side by side.
func renderPeer(b *strings.Builder, s *suiteData) {
	var names []string
	for _, c := range s.meta.Cases {
		if strings.HasPrefix(c.Name, "vs-") {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return
	}
	peer := "Centrifugo"
	if p := s.meta.Peer; p != nil && p.Version != "" {
		peer += " " + p.Version
	}
	fmt.Fprintf(b, "### Beside %s: the same workloads, one right after the other\n\n", peer)
	b.WriteString("The peer runs its memory engine with the unidirectional SSE and WebSocket transports; " +
		"each subscriber names its channel (its queue) in the connect request, and the load tool publishes with " +
		"`POST /api/publish` where it sends `POST /trans` to PopBox. Neither history nor recovery is on for the peer, " +
		"so it keeps no message for a subscriber that is not connected; PopBox queues each one in Redis.\n\n")
	if p := s.meta.Peer; p != nil && p.NotRun != "" {
		fmt.Fprintf(b, "**%s: peer not run**: %s.\n\n", p.Name, p.NotRun)
	}
	server := func(c CaseMeta) string {
		if c.Peer != "" {
			return peer
		}
		return "PopBox"
	}
	tp := table{head: []string{"server", "subscribers", "publishers", "delivered/s", "latency p50 / p99 / p99.9", "publish call p50 / p99", "server CPU", "undelivered", "errors"}}
	idle := table{head: []string{"server", "open of attempted", "failed", "dropped", "RSS before → with subscribers", "RSS per connection", "idle CPU", "one message each", "errors"}}
	for _, name := range names {
		c := s.cases[name]
		r := s.results[name]
		if r == nil {
			why := "not measured"
			switch {
			case c.NotRun != "":
				why = c.NotRun
			case c.Error != "":
				why = "failed: " + c.Error
			}
			if c.Scenario == "capacity" {
				idle.add(server(c), why, "", "", "", "", "", "", "")
			} else {
				tp.add(server(c), why, "", "", "", "", "", "", "")
			}
			continue
		}
		g := r.Gateway
		if g == nil {
			g = &GatewayStats{}
		}
		switch {
		case r.Throughput != nil:
			all := r.Latency["all"]
			tp.add(server(c), thousands(r.Subscribers), fmt.Sprint(r.Options.ProvConns), thousands(int64(r.Throughput.DelivPerSec)),
				fmt.Sprintf("%.1f / %.1f / %.1f ms", ms(all.P50), ms(all.P99), ms(all.P999)),
				fmt.Sprintf("%.1f / %.1f ms", ms(r.Provision.P50), ms(r.Provision.P99)),
				fmt.Sprintf("%.2f cores", g.LoadCPU), thousands(r.Throughput.Undelivered), errorsText(r))
		case c.Scenario == "capacity":
			v := r.Verify
			if v == nil {
				v = &VerifyStats{}
			}
			idle.add(server(c), fmt.Sprintf("%s of %s", thousands(r.Conns.Open), thousands(r.Conns.Attempted)),
				thousands(r.Conns.Failed), thousands(r.Conns.Dropped), fmt.Sprintf("%s → %s", mib(g.BaselineRSS), mib(g.RSS)),
				kib(g.RSSPerConn), fmt.Sprintf("%.3f cores over %.0f s", g.IdleCPU, g.IdleSecs),
				fmt.Sprintf("%s of %s verified", thousands(v.Verified), thousands(v.Expected)), errorsText(r))
		}
	}
	if len(tp.rows) > 0 {
		b.WriteString("Throughput (closed loop):\n\n")
		tp.render(b)
	}
	if len(idle.rows) > 0 {
		b.WriteString("Idle connections (RSS and CPU of the server process; CPU over the idle window):\n\n")
		idle.render(b)
	}
}
