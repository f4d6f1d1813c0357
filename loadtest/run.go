package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/payload"
	"github.com/popbox/popbox/loadtest/internal/redisinfo"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// gwWatch reads the gateway processes' memory and CPU from /proc.
type gwWatch struct {
	proc  sysinfo.Proc
	pids  []int
	found string
	err   string
}

func newGwWatch(o *Options) *gwWatch {
	g := &gwWatch{}
	if len(o.GwPIDs) > 0 {
		g.pids, g.found = o.GwPIDs, "--gateway-pid"
		return g
	}
	var ports []int
	for _, u := range o.targetURL {
		var p int
		fmt.Sscanf(u.Port(), "%d", &p)
		ports = append(ports, p)
	}
	pids, how, err := g.proc.FindGateways(ports)
	if err != nil {
		g.err = "gateway metrics unavailable (give --gateway-pid): " + err.Error()
		return g
	}
	g.pids, g.found = pids, how
	return g
}

// mem returns the summed memory and the RSS per pid.
func (g *gwWatch) mem() (sysinfo.Mem, map[int]int64) {
	var t sysinfo.Mem
	per := map[int]int64{}
	for _, pid := range g.pids {
		m, err := g.proc.Memory(pid)
		if err != nil {
			g.note(err)
			continue
		}
		t.RSS += m.RSS
		t.HWM += m.HWM
		per[pid] = m.RSS
	}
	return t, per
}

func (g *gwWatch) cpu() time.Duration {
	var t time.Duration
	for _, pid := range g.pids {
		c, err := g.proc.CPUTime(pid)
		if err != nil {
			g.note(err)
			continue
		}
		t += c
	}
	return t
}

func (g *gwWatch) note(err error) {
	if g.err == "" {
		g.err = err.Error()
	}
}

// cpuWindow measures the CPU of some processes between start and stop.
type cpuWindow struct {
	read  func() time.Duration
	c0    time.Duration
	t0    time.Time
	cores float64
	secs  float64
}

func startCPU(read func() time.Duration) *cpuWindow {
	return &cpuWindow{read: read, c0: read(), t0: time.Now()}
}

func (c *cpuWindow) stop() {
	c.secs = time.Since(c.t0).Seconds()
	if c.secs > 0 {
		c.cores = (c.read() - c.c0).Seconds() / c.secs
	}
}

// machineBusy reads the machine's busy CPU time (0 when unreadable).
func machineBusy() time.Duration {
	b, _, err := sysinfo.Proc{}.MachineCPU()
	if err != nil {
		return 0
	}
	return b
}

func randomPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "lt-" + hex.EncodeToString(b[:])
}

// runScenario runs one scenario and returns its result; log gets notes.
func runScenario(ctx context.Context, o *Options, stderr io.Writer) (*Result, error) {
	if isWrk(o.Scenario) {
		return runWrk(ctx, o, stderr)
	}
	started := time.Now()
	nofile, err := sysinfo.RaiseNoFile()
	if err != nil {
		return nil, fmt.Errorf("raising the open-file limit: %w", err)
	}
	budget := o.Duration + o.Verify*time.Duration(max(1, o.Rounds)) + 5*time.Minute
	deadline := started.Add(min(maxWall, budget))
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Minute))
	defer cancel()
	plan, err := makePlan(o, nofile, randomPrefix(), deadline)
	if err != nil {
		return nil, err
	}
	status := newStatusLine(stderr, o.Quiet)
	r := newResult(o, started, len(plan.Workers))
	r.SourceAddrs = plan.Sources
	gw, basePer := watchGateway(o, r)
	if gw.err != "" {
		status.logf(stderr, "note: %s", gw.err)
	}
	rp, err := newRedisProbe(ctx, o, r)
	if err != nil {
		return nil, err
	}
	prof := newProfiler(o)
	f, err := startFleet(ctx, plan, o.Scenario, status)
	if err != nil {
		return nil, err
	}
	phaseErr := runPhases(ctx, o, plan, f, r, gw, rp, prof)
	f.stop(ctx)
	recordPhaseError(r, phaseErr)
	r.Problems = append(r.Problems, f.errs...)
	r.merge(f.results)
	finish(o, r, f, gw, basePer)
	r.Host.LoadAvgEnd, _ = sysinfo.Proc{}.LoadAvg()
	r.addProfiles(prof)
	r.WallSecs = time.Since(started).Seconds()
	return interrupted(r, phaseErr)
}

// interrupted returns r, and err too when it says the run was interrupted
// (its partial result is still written).
func interrupted(r *Result, err error) (*Result, error) {
	if errors.Is(err, context.Canceled) {
		return r, err
	}
	return r, nil
}

// newResult starts the result of a scenario run by procs load processes:
// what was run, when, and on which machine.
func newResult(o *Options, started time.Time, procs int) *Result {
	r := &Result{
		Scenario: o.Scenario, Started: started.UTC(), Command: os.Args, Options: o,
		Machine: sysinfo.Proc{}.DescribeMachine(), Procs: procs,
	}
	r.Host.Cores = r.Machine.Cores
	r.Host.LoadAvgStart, _ = sysinfo.Proc{}.LoadAvg()
	return r
}

// watchGateway finds the gateway processes, records them and their
// baseline memory in r, and returns the watch with the RSS per pid.
func watchGateway(o *Options, r *Result) (*gwWatch, map[int]int64) {
	gw := newGwWatch(o)
	base, basePer := gw.mem()
	r.Gateway = &GatewayStats{PIDs: gw.pids, Found: gw.found, BaselineRSS: base.RSS}
	return gw, basePer
}

// redisProbe samples the Redis named by --redis, if any: INFO snapshots
// and the client list. Without --redis every sample is empty. The first
// failure is recorded in the result's RedisStats.
type redisProbe struct {
	ctx    context.Context
	target *redisinfo.Target
	stats  *RedisStats
}

// newRedisProbe parses --redis and, when it is set, gives r a RedisStats
// that the probe fills.
func newRedisProbe(ctx context.Context, o *Options, r *Result) (*redisProbe, error) {
	p := &redisProbe{ctx: ctx}
	if o.RedisAddr == "" {
		return p, nil
	}
	t, err := redisinfo.ParseTarget(o.RedisAddr)
	if err != nil {
		return nil, err
	}
	p.target = &t
	r.Redis = &RedisStats{}
	p.stats = r.Redis
	return p, nil
}

// info returns an INFO snapshot, nil without --redis or on error.
func (p *redisProbe) info() *redisinfo.Snapshot {
	if p.target == nil {
		return nil
	}
	d := transport.NewDialer(nil, 5*time.Second)
	s, err := redisinfo.Info(p.ctx, d.DialContext, *p.target)
	if err != nil {
		if p.stats.Error == "" {
			p.stats.Error = err.Error()
		}
		return nil
	}
	return s
}

// clients records Redis' client list in the result's RedisStats.
func (p *redisProbe) clients() {
	if p.target == nil {
		return
	}
	d := transport.NewDialer(nil, 5*time.Second)
	cl, err := redisinfo.ListClients(p.ctx, d.DialContext, *p.target)
	if err != nil {
		p.stats.Error = err.Error()
		return
	}
	p.stats.Clients = &cl
}

// startFleet starts the planned load workers (in this process when there
// is only one); on error it stops the ones already started.
func startFleet(ctx context.Context, plan *Plan, scenario string, status *statusLine) (*fleet, error) {
	f := newFleet(len(plan.Workers), scenario, status)
	inProc := len(plan.Workers) == 1
	for i, spec := range plan.Workers {
		w, err := startWorker(ctx, i, spec, workerLaunch{inProc: inProc, nice: plan.Nice}, f.events, f.quit)
		if err != nil {
			f.stop(ctx)
			return nil, err
		}
		f.workers = append(f.workers, w)
	}
	return f, nil
}

// runPhases waits until every worker is connected, then runs the
// scenario's measurement phases and records Redis' work per delivered
// message over them.
func runPhases(ctx context.Context, o *Options, plan *Plan, f *fleet, r *Result, gw *gwWatch, rp *redisProbe, prof *gwProfiler) error {
	if err := f.pump(ctx, 0, func() bool { return f.all(f.ready) }); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	r.Conns.Open = f.total().Open
	openSubs := f.total().OpenSubs
	s0 := rp.info()
	var err error
	switch o.Scenario {
	case "capacity":
		err = runCapacity(ctx, o, f, r, gw, rp.clients, openSubs, prof)
		r.GwCounters = gatewayCounters(ctx, o.targetURL, len(gw.pids))
	case "throughput", "latency":
		err = runLoad(ctx, o, f, r, gw, rp.clients, rp.info, prof)
	case "fanout":
		err = runFanout(ctx, o, plan, f, r, gw, rp.info, openSubs, prof)
	}
	if s1 := rp.info(); s0 != nil && s1 != nil {
		r.Redis.perMessage(s0, s1, f.total().Delivered)
	}
	return err
}

// recordPhaseError notes in r's problems why the phases ended early.
func recordPhaseError(r *Result, err error) {
	switch {
	case errors.Is(err, context.Canceled):
		r.Problems = append(r.Problems, "interrupted: partial results")
	case errors.Is(err, context.DeadlineExceeded):
		r.Problems = append(r.Problems, "stopped at the hard time limit: partial results")
	case err != nil:
		r.Problems = append(r.Problems, err.Error())
	}
}

// addProfiles records the gateway profiles fetched (prof may be nil) and
// the errors met fetching them.
func (r *Result) addProfiles(prof *gwProfiler) {
	if prof != nil {
		r.Profiles = prof.files
		r.Problems = append(r.Problems, prof.errs...)
	}
}

func runCapacity(ctx context.Context, o *Options, f *fleet, r *Result, gw *gwWatch, sampleRedis func(), openSubs int64, prof *gwProfiler) error {
	if err := f.wait(ctx, o.Duration-o.Idle); err != nil {
		return err
	}
	cw, hw := startCPU(gw.cpu), startCPU(machineBusy)
	// The idle window's CPU profile: what an idle node spends its CPU on
	// (heartbeats, pongs, the scheduler, GC).
	waitProf := prof.cpu(ctx, (o.Idle - 500*time.Millisecond).Truncate(time.Second))
	if err := f.wait(ctx, o.Idle); err != nil {
		waitProf()
		return err
	}
	cw.stop()
	hw.stop()
	waitProf()
	r.Host.BusyCores = hw.cores
	prof.heap(ctx)
	if o.Idle > 0 {
		r.Gateway.IdleCPU, r.Gateway.IdleSecs = cw.cores, cw.secs
	}
	m, per := gw.mem()
	r.Gateway.RSS, r.Gateway.HWM = m.RSS, m.HWM
	for _, pid := range gw.pids {
		r.Gateway.PerProcess = append(r.Gateway.PerProcess, ProcStats{PID: pid, RSS: per[pid]})
	}
	sampleRedis()
	vstart := time.Now()
	f.broadcast(Command{Cmd: "provision"})
	err := f.pump(ctx, o.Verify+time.Minute, func() bool { return f.all(f.phase) })
	r.Verify = &VerifyStats{Secs: time.Since(vstart).Seconds()}
	m2, _ := gw.mem()
	r.Gateway.RSSAfterVerf = m2.RSS
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	return nil
}

// recordLoad ends the CPU windows of the gateway (cw) and the host (hw)
// opened with the load and records them, the Redis CPU since the INFO
// snapshot rs0 (nil: not recorded) and the gateway's memory into r.
func recordLoad(r *Result, gw *gwWatch, cw, hw *cpuWindow, rs0 *redisinfo.Snapshot, redisInfo func() *redisinfo.Snapshot) {
	cw.stop()
	hw.stop()
	r.Host.BusyCores = hw.cores
	if rs1 := redisInfo(); rs0 != nil && rs1 != nil {
		r.Redis.CPU = redisCores(rs0, rs1)
	}
	r.Gateway.LoadCPU, r.Gateway.LoadSecs = cw.cores, cw.secs
	m, _ := gw.mem()
	r.Gateway.RSS, r.Gateway.HWM = m.RSS, m.HWM
}

func runLoad(ctx context.Context, o *Options, f *fleet, r *Result, gw *gwWatch, sampleRedis func(), redisInfo func() *redisinfo.Snapshot, prof *gwProfiler) error {
	t0 := time.Now()
	f.broadcast(Command{Cmd: "run", T0: t0.UnixNano()})
	cw, hw := startCPU(gw.cpu), startCPU(machineBusy)
	waitProf := prof.cpu(ctx, (o.Duration - 500*time.Millisecond).Truncate(time.Second))
	defer waitProf()
	rs0 := redisInfo()
	// the run lasts o.Duration unless every worker finished early
	if err := f.pump(ctx, o.Duration, func() bool { return f.all(f.phase) }); err != nil && !errors.Is(err, errTimeout) {
		return err
	}
	recordLoad(r, gw, cw, hw, rs0, redisInfo)
	sampleRedis()
	if err := f.pump(ctx, o.Verify+time.Minute, func() bool { return f.all(f.phase) }); err != nil {
		return fmt.Errorf("draining: %w", err)
	}
	return nil
}

func runFanout(ctx context.Context, o *Options, plan *Plan, f *fleet, r *Result, gw *gwWatch, redisInfo func() *redisinfo.Snapshot, openSubs int64, prof *gwProfiler) error {
	var queues []string
	for _, s := range plan.Workers {
		for i := 0; i < s.Subs(); i++ {
			queues = append(queues, QueueName(s.Prefix, s.Index, i))
		}
	}
	d := transport.NewDialer(nil, o.Handshake)
	prov := transport.NewProvisioner(o.targetURL, d, 1, 2*time.Minute)
	prov.ExpirationDelay = o.Expire
	defer prov.Close()
	r.Fanout = &FanoutStats{Queues: int64(len(queues)), Open: openSubs}
	cw, hw := startCPU(gw.cpu), startCPU(machineBusy)
	rs0 := redisInfo()
	var buf []byte
	for round := 0; round < o.Rounds; round++ {
		start := time.Now()
		buf = payload.Append(buf[:0], payload.Message{T: start.UnixNano(), Seq: uint64(round)}, o.Payload)
		_, err := prov.Provision(ctx, queues, buf)
		fr := FanoutRound{ProvisionMs: float64(time.Since(start)) / 1e6}
		if err != nil {
			fr.ProvError = transport.Reason(err)
		}
		r.Fanout.Rounds = append(r.Fanout.Rounds, fr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			continue
		}
		want := int64(round+1) * openSubs
		err = f.pump(ctx, o.Verify, func() bool { return f.total().Delivered >= want })
		if err != nil && !errors.Is(err, errTimeout) {
			return err
		}
	}
	recordLoad(r, gw, cw, hw, rs0, redisInfo)
	prof.heap(ctx)
	return nil
}

// finish derives the scenario figures from the merged worker results.
func finish(o *Options, r *Result, f *fleet, gw *gwWatch, basePer map[int]int64) {
	g := r.Gateway
	if gw.err != "" {
		g.Error = gw.err
	}
	for i := range g.PerProcess {
		g.PerProcess[i].BaselineRSS = basePer[g.PerProcess[i].PID]
	}
	if g.RSS > 0 && r.Conns.Open > 0 && o.Scenario == "capacity" {
		g.RSSPerConn = float64(g.RSS-g.BaselineRSS) / float64(r.Conns.Open)
	}
	res := f.results
	provisioned := sumResults(res, func(w *WorkerResult) int64 { return w.Progress.Provisioned })
	delivered := sumResults(res, func(w *WorkerResult) int64 { return w.Progress.Delivered })
	dupes := sumResults(res, func(w *WorkerResult) int64 { return w.Duplicates })
	provErr := sumResults(res, func(w *WorkerResult) int64 { return w.Progress.ProvErrors })
	switch o.Scenario {
	case "capacity":
		if r.Verify == nil {
			r.Verify = &VerifyStats{}
		}
		r.Verify.Expected = r.Subscribers
		r.Verify.Verified = sumResults(res, func(w *WorkerResult) int64 { return w.Verified })
		r.Verify.Missing = sumResults(res, func(w *WorkerResult) int64 { return w.Missing })
		r.Verify.Duplicates = dupes
		if r.Verify.Verified < r.Verify.Expected {
			r.Problems = append(r.Problems, fmt.Sprintf("%d of %d subscribers did not get exactly one message", r.Verify.Expected-r.Verify.Verified, r.Verify.Expected))
		}
	case "throughput", "latency":
		t := &ThroughputStats{Provisioned: provisioned, Delivered: delivered, Undelivered: max(0, provisioned-delivered),
			Duplicates: dupes, ProvErrors: provErr}
		for _, w := range res {
			if w != nil {
				t.RunSecs = max(t.RunSecs, w.RunSecs)
			}
		}
		if o.Scenario == "latency" {
			t.TargetRate = o.Rate
		}
		whole := int(math.Floor(t.RunSecs))
		if r.Series != nil && whole >= 1 {
			t.ProvPerSec = float64(sumPrefix(r.Series.Provisioned, whole)) / float64(whole)
			t.DelivPerSec = float64(sumPrefix(r.Series.Delivered, whole)) / float64(whole)
			for i, v := range r.Series.Delivered {
				if i < whole {
					t.PeakDelivSec = max(t.PeakDelivSec, v)
				}
			}
		} else if t.RunSecs > 0 {
			t.ProvPerSec = float64(provisioned) / t.RunSecs
			t.DelivPerSec = float64(delivered) / t.RunSecs
		}
		r.Throughput = t
		if t.Undelivered > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%d provisioned messages were not delivered within the drain timeout", t.Undelivered))
		}
		if provErr > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%d provision calls failed", provErr))
		}
	case "fanout":
		if r.Fanout != nil {
			for i := range r.Fanout.Rounds {
				rd := &r.Fanout.Rounds[i]
				h := r.Histograms[fmt.Sprintf("round_%d", i)]
				if h == nil || h.Count() == 0 {
					rd.Missing = r.Fanout.Queues
					continue
				}
				rd.Delivered = int64(h.Count())
				rd.Missing = max(0, r.Fanout.Queues-rd.Delivered)
				rd.FirstMs, rd.P50Ms, rd.P99Ms, rd.LastMs = ms(h.Min()), ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Max())
				if rd.Missing > 0 {
					r.Problems = append(r.Problems, fmt.Sprintf("round %d: %d of %d queues got nothing", i, rd.Missing, r.Fanout.Queues))
				}
				if rd.ProvError != "" {
					r.Problems = append(r.Problems, fmt.Sprintf("round %d: provision failed: %s", i, rd.ProvError))
				}
			}
		}
	}
	if r.Conns.Failed > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d connections failed", r.Conns.Failed))
	}
	if r.Conns.Dropped > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d connections dropped", r.Conns.Dropped))
	}
}

// redisCores is the Redis CPU (cores) between two snapshots.
func redisCores(a, b *redisinfo.Snapshot) float64 {
	if dt := b.At.Sub(a.At).Seconds(); dt > 0 {
		return (b.CPU - a.CPU) / dt
	}
	return 0
}

func sumPrefix(s []int64, n int) int64 {
	var t int64
	for i := 0; i < n && i < len(s); i++ {
		t += s[i]
	}
	return t
}
