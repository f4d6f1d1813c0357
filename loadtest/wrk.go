package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/loadtest/internal/hist"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// The wrk-like scenarios measure the REST request path alone, the way the
// figures of issue 14 were taken with `wrk -t2 -c32`: --conns keep-alive
// connections, each sending its next request as soon as the answer to the
// previous one is read (closed loop), for --duration.
//
//   - provision: POST /trans of one small transaction to one queue; every
//     connection has its own queue.
//   - pop: POST /queue/{id}/pop?max=1 against --queues queues that were
//     filled beforehand with --prefill messages in all (one transaction to
//     every queue per round, so filling is quick); pop n takes from queue
//     n % --queues, so no pop finds its queue empty, and the run ends early
//     when every message is taken.
//
// The client is a small HTTP/1.1 writer over raw keep-alive connections
// (requests are prepared bytes; answers are read with http.ReadResponse),
// not net/http's Client, whose connection pool and per-connection
// goroutines would take CPU from the gateway on a shared box, like wrk
// itself avoids.
const (
	// maxWrkConns caps --conns of the wrk-like scenarios.
	maxWrkConns = 4096
	// maxPrefill caps the messages put in the queues before a pop run.
	maxPrefill = 2_000_000
	// maxWrkQueues caps --queues of the pop scenario (one transaction
	// targets at most 10,000 queues).
	maxWrkQueues = 10_000
)

// WrkStats is the outcome of a provision or pop run.
type WrkStats struct {
	Conns     int     `json:"conns"`
	Queues    int     `json:"queues,omitempty"`
	Prefilled int64   `json:"prefilled,omitempty"`
	FillSecs  float64 `json:"prefill_s,omitempty"`
	RunSecs   float64 `json:"run_s"`
	Requests  int64   `json:"requests"`
	OK        int64   `json:"ok"`    // 200 answers (pop: with a message)
	Empty     int64   `json:"empty"` // pop: 200 answers without a message
	Failed    int64   `json:"failed"`
	ReqPerSec float64 `json:"requests_per_s"` // OK / RunSecs
	// Latency is the request→answer time of the OK requests.
	Latency hist.Summary `json:"latency"`
	// GatewayUsPerReq and RedisUsPerReq are the CPU time of the gateway
	// process(es) and of redis-server per OK request over the run.
	GatewayUsPerReq float64 `json:"gateway_cpu_us_per_request,omitempty"`
	RedisUsPerReq   float64 `json:"redis_cpu_us_per_request,omitempty"`
}

// isWrk tells whether a scenario is one of the wrk-like ones.
func isWrk(name string) bool { return name == "provision" || name == "pop" }

// validateWrk checks the flags that matter to the wrk-like scenarios.
func (o *Options) validateWrk() error {
	switch {
	case o.Conns > maxWrkConns:
		return fmt.Errorf("--conns %d is above the cap of %d connections", o.Conns, maxWrkConns)
	case o.Scenario == "pop" && (o.Queues < 1 || o.Queues > maxWrkQueues):
		return fmt.Errorf("--queues must be between 1 and %d", maxWrkQueues)
	case o.Scenario == "pop" && (o.Prefill < 1 || o.Prefill > maxPrefill):
		return fmt.Errorf("--prefill must be between 1 and %d", maxPrefill)
	}
	return nil
}

// runWrk runs a provision or pop scenario.
func runWrk(ctx context.Context, o *Options, stderr io.Writer) (*Result, error) {
	started := time.Now()
	ctx, cancel := context.WithDeadline(ctx, started.Add(min(maxWall, o.Duration+10*time.Minute)))
	defer cancel()
	status := newStatusLine(stderr, o.Quiet)
	r := newResult(o, started, 1)
	r.Errors = map[string]int64{}
	gw, _ := watchGateway(o, r)
	rp, err := newRedisProbe(ctx, o, r)
	if err != nil {
		return nil, err
	}
	w := &WrkStats{Conns: o.Conns}
	r.Wrk = w
	dialer := transport.NewDialer(nil, o.Handshake)
	next, err := wrkRequests(ctx, o, w, dialer, status, stderr)
	if err != nil {
		return nil, err
	}

	prof := newProfiler(o)
	s0 := rp.info()
	cw := startCPU(gw.cpu)
	hw := startCPU(machineBusy)
	self := startCPU(selfCPU)
	waitProf := prof.cpu(ctx, (o.Duration - 500*time.Millisecond).Truncate(time.Second))
	counts := &wrkCounts{errors: r.Errors}
	lat := runWrkConns(ctx, o, dialer, next, counts, status, w)
	cw.stop()
	hw.stop()
	self.stop()
	r.LoadTool.CPUSecs = self.cores * self.secs
	if m, err := (sysinfo.Proc{}).Memory(os.Getpid()); err == nil {
		r.LoadTool.MaxRSS = m.HWM
	}
	waitProf()
	status.clear()

	w.record(counts, lat)
	r.Histograms = map[string]*hist.Hist{o.Scenario: lat}
	r.Host.BusyCores = hw.cores
	recordWrkGateway(r, gw, cw)
	if s1 := rp.info(); s0 != nil && s1 != nil {
		r.Redis.CPU = redisCores(s0, s1)
		r.Redis.perMessage(s0, s1, w.OK)
		w.RedisUsPerReq = r.Redis.CPUPerMsg
	}
	r.Problems = append(r.Problems, w.problems()...)
	r.addProfiles(prof)
	r.Host.LoadAvgEnd, _ = sysinfo.Proc{}.LoadAvg()
	r.WallSecs = time.Since(started).Seconds()
	recordPhaseError(r, ctx.Err())
	return interrupted(r, ctx.Err())
}

// selfCPU is the CPU time of the load tool's own process (0 when
// unreadable).
func selfCPU() time.Duration {
	c, _ := (sysinfo.Proc{}).CPUTime(os.Getpid())
	return c
}

// wrkNext returns the request connection conn sends as its n-th, or false
// when there is nothing left to send.
type wrkNext func(conn int, n int64) ([]byte, bool)

// wrkRequests prepares the requests of o.Scenario (for pop, after filling
// the queues) and returns what each connection sends next.
func wrkRequests(ctx context.Context, o *Options, w *WrkStats, dialer *transport.Dialer, status *statusLine, stderr io.Writer) (wrkNext, error) {
	prefix := randomPrefix()
	switch o.Scenario {
	case "provision":
		return provisionRequests(o, prefix), nil
	case "pop":
		return popRequests(ctx, o, w, dialer, prefix, status, stderr)
	}
	return nil, fmt.Errorf("scenario %q is not a wrk-like one", o.Scenario)
}

// provisionRequests gives every connection its own queue and sends the
// same one-message transaction to it, over and over.
func provisionRequests(o *Options, prefix string) wrkNext {
	reqs := make([][]byte, o.Conns)
	for i := range reqs {
		u := o.targetURL[i%len(o.targetURL)]
		q := fmt.Sprintf("%s-p%d", prefix, i)
		reqs[i] = httpRequest(u, "/trans", provisionBody(o, []string{q}))
	}
	return func(conn int, _ int64) ([]byte, bool) { return reqs[conn], true }
}

// popRequests fills o.Queues queues with o.Prefill messages and returns
// pops that take them round robin over the queues, one per message put.
func popRequests(ctx context.Context, o *Options, w *WrkStats, dialer *transport.Dialer, prefix string, status *statusLine, stderr io.Writer) (wrkNext, error) {
	w.Queues = o.Queues
	queues := make([]string, o.Queues)
	for i := range queues {
		queues[i] = fmt.Sprintf("%s-q%d", prefix, i)
	}
	status.logf(stderr, "filling %d queues with %d messages", o.Queues, o.Prefill)
	t0 := time.Now()
	n, err := prefill(ctx, o, dialer, queues)
	w.Prefilled, w.FillSecs = n, time.Since(t0).Seconds()
	if err != nil {
		return nil, fmt.Errorf("filling the queues: %w", err)
	}
	reqs := make([][]byte, 0, len(o.targetURL)*o.Queues)
	for _, u := range o.targetURL {
		for _, q := range queues {
			reqs = append(reqs, httpRequest(u, "/queue/"+q+"/pop?max=1&timeout=1", nil))
		}
	}
	var taken atomic.Int64
	return func(conn int, _ int64) ([]byte, bool) {
		i := taken.Add(1) - 1
		if i >= n {
			return nil, false
		}
		t := conn % len(o.targetURL)
		return reqs[t*o.Queues+int(i%int64(o.Queues))], true
	}, nil
}

// wrkCounts counts the answers of a wrk-like run, shared by its
// connections.
type wrkCounts struct {
	ok, empty, failed atomic.Int64
	mu                sync.Mutex
	errors            map[string]int64 // failures by reason, under mu
}

// fail counts a failed request under its reason.
func (c *wrkCounts) fail(err error) {
	c.failed.Add(1)
	c.mu.Lock()
	c.errors[transport.Reason(err)]++
	c.mu.Unlock()
}

// runWrkConns runs o.Conns closed-loop connections for o.Duration (or
// until next has nothing left), showing progress on the status line, and
// returns the latency of the OK requests. It sets w.RunSecs.
func runWrkConns(ctx context.Context, o *Options, dialer *transport.Dialer, next wrkNext, counts *wrkCounts, status *statusLine, w *WrkStats) *hist.Hist {
	t0 := time.Now()
	end := t0.Add(o.Duration)
	runCtx, stop := context.WithDeadline(ctx, end)
	defer stop()
	lat := hist.New()
	var wg sync.WaitGroup
	for i := range o.Conns {
		wg.Go(func() {
			c := wrkConn{dialer: dialer, addr: hostPort(o.targetURL[i%len(o.targetURL)]), pop: o.Scenario == "pop"}
			defer c.close()
			h := hist.New()
			defer lat.Merge(h)
			c.loop(runCtx, i, end, next, counts, h)
		})
	}
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			stop()
			w.RunSecs = time.Since(t0).Seconds()
			return lat
		case <-progress.C:
			status.set(fmt.Sprintf("%s: %d ok (%.0f/s), %d failed", o.Scenario, counts.ok.Load(), float64(counts.ok.Load())/time.Since(t0).Seconds(), counts.failed.Load()))
		}
	}
}

// loop sends connection conn's requests one after the other until ctx
// ends or next has nothing left, counting the answers and recording the
// latency of the OK ones in h.
func (c *wrkConn) loop(ctx context.Context, conn int, end time.Time, next wrkNext, counts *wrkCounts, h *hist.Hist) {
	for n := int64(0); ctx.Err() == nil; n++ {
		req, more := next(conn, n)
		if !more {
			return
		}
		start := time.Now()
		got, err := c.do(ctx, req)
		switch {
		case err != nil && (ctx.Err() != nil || !time.Now().Before(end)):
			return // the run ended mid-request
		case err != nil:
			counts.fail(err)
		case !got:
			counts.empty.Add(1)
		default:
			counts.ok.Add(1)
			h.RecordDuration(time.Since(start))
		}
	}
}

// record stores the counts and the latency summary of the run in w.
func (w *WrkStats) record(counts *wrkCounts, lat *hist.Hist) {
	w.OK, w.Empty, w.Failed = counts.ok.Load(), counts.empty.Load(), counts.failed.Load()
	w.Requests = w.OK + w.Empty + w.Failed
	if w.RunSecs > 0 {
		w.ReqPerSec = float64(w.OK) / w.RunSecs
	}
	w.Latency = lat.Summarize()
}

// problems lists what went wrong in the run: failures, empty pops, no
// success at all.
func (w *WrkStats) problems() []string {
	var p []string
	if w.Failed > 0 {
		p = append(p, fmt.Sprintf("%d of %d requests failed", w.Failed, w.Requests))
	}
	if w.Empty > 0 {
		p = append(p, fmt.Sprintf("%d pops found their queue empty", w.Empty))
	}
	if w.OK == 0 {
		p = append(p, "no request succeeded")
	}
	return p
}

// recordWrkGateway records the gateway's CPU over the run (cw), its CPU
// per OK request and its memory at the end.
func recordWrkGateway(r *Result, gw *gwWatch, cw *cpuWindow) {
	r.Gateway.LoadCPU, r.Gateway.LoadSecs = cw.cores, cw.secs
	if r.Wrk.OK > 0 && cw.cores > 0 {
		r.Wrk.GatewayUsPerReq = cw.cores * cw.secs * 1e6 / float64(r.Wrk.OK)
	}
	m, _ := gw.mem()
	r.Gateway.RSS, r.Gateway.HWM = m.RSS, m.HWM
	if gw.err != "" {
		r.Gateway.Error = gw.err
	}
}

// prefill puts o.Prefill messages into queues, spread evenly (the first
// o.Prefill % len(queues) queues get one more), with transactions that each
// target every queue (or the first ones, for the last round), sent over a
// few keep-alive connections. It returns the messages put.
func prefill(ctx context.Context, o *Options, d *transport.Dialer, queues []string) (int64, error) {
	rounds := (o.Prefill + int64(len(queues)) - 1) / int64(len(queues))
	full := provisionBody(o, queues)
	var next atomic.Int64
	var put atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range min(4, int(rounds)) {
		wg.Go(func() {
			u := o.targetURL[i%len(o.targetURL)]
			c := wrkConn{dialer: d, addr: hostPort(u)}
			defer c.close()
			for {
				k := next.Add(1) - 1
				if k >= rounds || ctx.Err() != nil {
					return
				}
				qs, body := queues, full
				if left := o.Prefill - k*int64(len(queues)); left < int64(len(queues)) {
					qs = queues[:left]
					body = provisionBody(o, qs)
				}
				if _, err := c.do(ctx, httpRequest(u, "/trans", body)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				put.Add(int64(len(qs)))
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return put.Load(), firstErr
	}
	return put.Load(), ctx.Err()
}

// provisionBody is a POST /trans body of a small message to queues.
func provisionBody(o *Options, queues []string) []byte {
	size := max(o.Payload, 40)
	b := []byte(`{"payload":"`)
	b = append(b, strings.Repeat("x", size)...)
	b = append(b, `","priority":"H"`...)
	if o.Expire > 0 {
		b = append(b, `,"expirationDelay":`...)
		b = strconv.AppendInt(b, int64(o.Expire), 10)
	}
	b = append(b, `,"queue":[`...)
	for i, q := range queues {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = append(b, q...) // queue ids are [A-Za-z0-9_-]: no escaping
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

// httpRequest is a complete HTTP/1.1 POST request to u's path + path with
// body (nil: empty), ready to be written to a keep-alive connection.
func httpRequest(u *url.URL, path string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: popbox-loadtest\r\n", strings.TrimSuffix(u.EscapedPath(), "/"), path, u.Host)
	if body != nil {
		b.WriteString("Content-Type: application/json\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes()
}

// hostPort is u's host:port (port 80 or 443 when not given).
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// wrkConn is one keep-alive connection of a wrk-like run.
type wrkConn struct {
	dialer *transport.Dialer
	addr   string
	pop    bool // answers are pops: tell whether they carried a message
	nc     net.Conn
	br     *bufio.Reader
	body   bytes.Buffer
}

// do sends req and reads the answer. got is false for a pop answer without
// a message. The connection is dialled again after any error or a
// "Connection: close".
func (c *wrkConn) do(ctx context.Context, req []byte) (got bool, err error) {
	if c.nc == nil {
		nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return false, err
		}
		c.nc = nc
		if c.br == nil {
			c.br = bufio.NewReaderSize(nc, 16<<10)
		} else {
			c.br.Reset(nc)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if _, err := c.nc.Write(req); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return false, err
	}
	c.body.Reset()
	_, err = c.body.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.Close {
		c.close()
	}
	if resp.StatusCode != http.StatusOK {
		return false, &transport.StatusError{Code: resp.StatusCode}
	}
	if c.pop && bytes.Contains(c.body.Bytes(), []byte(`"data":[]`)) {
		return false, nil
	}
	return true, nil
}

func (c *wrkConn) close() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

// printWrk prints the summary of a wrk-like run.
func (r *Result) printWrk(w io.Writer) {
	s := r.Wrk
	fmt.Fprintf(w, "== %s: %d keep-alive connections on %d target(s), closed loop, %.1fs\n", r.Scenario, s.Conns, len(r.Options.Targets), s.RunSecs)
	if s.Queues > 0 {
		fmt.Fprintf(w, "queues: %d, filled with %d messages in %.1fs\n", s.Queues, s.Prefilled, s.FillSecs)
	}
	fmt.Fprintf(w, "requests: %d ok (%.0f/s), %d empty, %d failed\n", s.OK, s.ReqPerSec, s.Empty, s.Failed)
	l := s.Latency
	fmt.Fprintf(w, "latency (ms): p50 %.2f, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	if g := r.Gateway; g != nil {
		if g.Error != "" {
			fmt.Fprintf(w, "gateway: %s\n", g.Error)
		}
		if g.LoadSecs > 0 && len(g.PIDs) > 0 {
			fmt.Fprintf(w, "gateway CPU: %.2f cores, %.1f µs per request\n", g.LoadCPU, s.GatewayUsPerReq)
		}
	}
	if rd := r.Redis; rd != nil {
		if rd.Error != "" {
			fmt.Fprintf(w, "redis: %s\n", rd.Error)
		}
		if rd.CallsPerMsg > 0 {
			fmt.Fprintf(w, "redis-server CPU: %.2f cores; per request %.1f µs, %.1f scripts, %.1f commands (counting those inside scripts)\n",
				rd.CPU, rd.CPUPerMsg, rd.EvalPerMsg, rd.CallsPerMsg)
			fmt.Fprintf(w, "  top commands: %s\n", topCommands(rd.Commands, 5))
		}
	}
	r.printTail(w)
}
