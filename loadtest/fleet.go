package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// workerEnv marks a worker process (the test binary uses it too).
const workerEnv = "POPBOX_LOADTEST_ROLE"

// workerConn is the parent's end of one worker: in-process or a child
// process running `loadtest worker`.
type workerConn struct {
	idx  int
	mu   sync.Mutex
	in   io.WriteCloser
	cmd  *exec.Cmd
	done chan error // the worker's exit status (buffered)
}

func (c *workerConn) send(cmd Command) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err = c.in.Write(append(b, '\n'))
	return err
}

func (c *workerConn) closeInput() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in.Close()
}

// workerEvent is an event of worker idx (err set when its output ended).
type workerEvent struct {
	idx int
	ev  Event
	err error
}

// readEvents forwards the JSON lines of r as events until r ends or quit
// closes.
func readEvents(idx int, r io.Reader, out chan<- workerEvent, quit <-chan struct{}) {
	send := func(ev workerEvent) bool {
		select {
		case out <- ev:
			return true
		case <-quit:
			return false
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 256<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			if !send(workerEvent{idx: idx, err: fmt.Errorf("worker %d: bad output line: %.100s", idx, sc.Text())}) {
				return
			}
			continue
		}
		if !send(workerEvent{idx: idx, ev: ev}) {
			return
		}
	}
	err := sc.Err()
	if err == nil {
		err = io.EOF
	}
	send(workerEvent{idx: idx, err: err})
}

// workerLaunch says how a worker is started: in this process, or as a
// child process of this executable at a nice value (0: this one's).
type workerLaunch struct {
	inProc bool
	nice   int
}

// command is the child process of a worker: this executable's worker
// verb, through nice(1) when a nice value is set (every thread of the
// Go runtime inherits it from the start; setpriority(2) on Linux would
// change one thread only).
func (l workerLaunch) command(exe string) (*exec.Cmd, error) {
	if l.nice == 0 {
		return exec.Command(exe, "worker"), nil
	}
	nice, err := exec.LookPath("nice")
	if err != nil {
		return nil, fmt.Errorf("--worker-nice: %w", err)
	}
	return exec.Command(nice, "-n", strconv.Itoa(l.nice), exe, "worker"), nil
}

// startWorker starts worker idx with spec: in this process when
// launch.inProc, else as a child process of this executable.
func startWorker(ctx context.Context, idx int, spec *WorkerSpec, launch workerLaunch, events chan<- workerEvent, quit <-chan struct{}) (*workerConn, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	c := &workerConn{idx: idx, done: make(chan error, 1)}
	if launch.inProc {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		c.in = inW
		go func() {
			err := runWorker(ctx, inR, outW)
			inR.Close()
			outW.CloseWithError(err)
			c.done <- err
		}()
		go readEvents(idx, outR, events, quit)
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the load tool's executable: %w", err)
		}
		cmd, err := launch.command(exe)
		if err != nil {
			return nil, err
		}
		cmd.Env = append(os.Environ(), workerEnv+"=worker")
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting worker %d: %w", idx, err)
		}
		c.in, c.cmd = in, cmd
		go readEvents(idx, out, events, quit)
		go func() { c.done <- cmd.Wait() }()
	}
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("sending worker %d its spec: %w", idx, err)
	}
	return c, nil
}

// fleet is the set of workers of a run and what they last reported.
type fleet struct {
	workers  []*workerConn
	events   chan workerEvent
	quit     chan struct{} // closed by stop: event readers give up
	prog     []Progress
	ready    []bool
	phase    []bool
	results  []*WorkerResult
	ended    []bool
	errs     []string
	started  time.Time
	status   *statusLine
	scenario string
	// extra returns more text for the progress line (may be nil).
	extra func() string
	// last delivered count shown, for the rate
	lastN int64
	lastT time.Time
}

func newFleet(n int, scenario string, status *statusLine) *fleet {
	return &fleet{
		events: make(chan workerEvent, 64*n+64), quit: make(chan struct{}), prog: make([]Progress, n), ready: make([]bool, n),
		phase: make([]bool, n), results: make([]*WorkerResult, n), ended: make([]bool, n),
		started: time.Now(), status: status, scenario: scenario,
	}
}

func (f *fleet) handle(we workerEvent) {
	if we.err != nil {
		if !f.ended[we.idx] {
			f.ended[we.idx] = true
			if f.results[we.idx] == nil && !errors.Is(we.err, io.EOF) {
				f.errs = append(f.errs, fmt.Sprintf("worker %d: %v", we.idx, we.err))
			} else if f.results[we.idx] == nil {
				f.errs = append(f.errs, fmt.Sprintf("worker %d ended without a result", we.idx))
			}
		}
		return
	}
	ev := we.ev
	if ev.Progress != nil {
		f.prog[we.idx] = *ev.Progress
	}
	switch ev.Ev {
	case "ready":
		f.ready[we.idx] = true
	case "phase":
		f.phase[we.idx] = true
	case "result":
		f.results[we.idx] = ev.Result
		if ev.Result != nil {
			f.prog[we.idx] = ev.Result.Progress
		}
	case "fatal":
		f.errs = append(f.errs, fmt.Sprintf("worker %d: %s", we.idx, ev.Msg))
		f.ended[we.idx] = true
	}
}

// total sums the workers' progress.
func (f *fleet) total() Progress {
	var t Progress
	for _, p := range f.prog {
		t.Attempted += p.Attempted
		t.Open += p.Open
		t.OpenSubs += p.OpenSubs
		t.Failed += p.Failed
		t.Dropped += p.Dropped
		t.Delivered += p.Delivered
		t.Provisioned += p.Provisioned
		t.ProvErrors += p.ProvErrors
		t.Problems += p.Problems
	}
	return t
}

// all reports whether every worker that has not ended satisfies flag, and
// at least one has.
func (f *fleet) all(flags []bool) bool {
	any := false
	for i, ok := range flags {
		if !ok && !f.ended[i] {
			return false
		}
		any = any || ok
	}
	return any
}

func (f *fleet) allEnded() bool {
	for _, e := range f.ended {
		if !e {
			return false
		}
	}
	return true
}

var errTimeout = errors.New("timed out")

// pump handles events until until() holds (nil), timeout passes
// (errTimeout; timeout 0 means none), every worker ended, or ctx ends.
func (f *fleet) pump(ctx context.Context, timeout time.Duration, until func() bool) error {
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if until != nil && until() {
			return nil
		}
		if f.allEnded() {
			if until == nil {
				return nil
			}
			return errors.New("every worker has ended")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tc:
			return errTimeout
		case we := <-f.events:
			f.handle(we)
		case <-tick.C:
			f.show()
		}
	}
}

// wait waits for a duration while handling events.
func (f *fleet) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	err := f.pump(ctx, d, nil)
	if errors.Is(err, errTimeout) {
		return nil
	}
	return err
}

func (f *fleet) broadcast(c Command) {
	for i, w := range f.workers {
		if !f.ended[i] {
			if err := w.send(c); err != nil {
				f.errs = append(f.errs, fmt.Sprintf("worker %d: sending %s: %v", i, c.Cmd, err))
			}
		}
	}
}

// stop tells every worker to stop and collects their results (bounded).
func (f *fleet) stop(ctx context.Context) {
	f.broadcast(Command{Cmd: "stop"})
	for _, w := range f.workers {
		w.closeInput()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = f.pump(ctx, 0, func() bool {
		for i := range f.workers {
			if f.results[i] == nil && !f.ended[i] {
				return false
			}
		}
		return true
	})
	for _, w := range f.workers {
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
			if w.cmd != nil && w.cmd.Process != nil {
				_ = w.cmd.Process.Kill()
			}
		}
	}
	close(f.quit)
	f.status.clear()
}

// show refreshes the live progress line.
func (f *fleet) show() {
	if !f.status.enabled() {
		return
	}
	t := f.total()
	now := time.Now()
	rate := 0.0
	if !f.lastT.IsZero() {
		if dt := now.Sub(f.lastT).Seconds(); dt > 0 {
			rate = float64(t.Delivered-f.lastN) / dt
		}
	}
	f.lastN, f.lastT = t.Delivered, now
	var b strings.Builder
	fmt.Fprintf(&b, "%s %5.0fs  open %d/%d  failed %d  dropped %d  delivered %d (%.0f/s)  provisioned %d  errors %d",
		f.scenario, time.Since(f.started).Seconds(), t.Open, t.Attempted, t.Failed, t.Dropped,
		t.Delivered, rate, t.Provisioned, t.ProvErrors+t.Problems)
	if f.extra != nil {
		if s := f.extra(); s != "" {
			b.WriteString("  ")
			b.WriteString(s)
		}
	}
	f.status.set(b.String())
}

// statusLine is a one-line live display on a terminal (a no-op otherwise).
type statusLine struct {
	w   io.Writer
	on  bool
	len int
}

// newStatusLine shows progress on w when w is a terminal and quiet is off.
func newStatusLine(w io.Writer, quiet bool) *statusLine {
	on := false
	if f, ok := w.(*os.File); ok && !quiet {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &statusLine{w: w, on: on}
}

func (s *statusLine) enabled() bool { return s != nil && s.on }

func (s *statusLine) set(line string) {
	if !s.enabled() {
		return
	}
	pad := ""
	if n := s.len - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(s.w, "\r%s%s", line, pad)
	s.len = len(line)
}

func (s *statusLine) clear() {
	if !s.enabled() || s.len == 0 {
		return
	}
	fmt.Fprintf(s.w, "\r%s\r", strings.Repeat(" ", s.len))
	s.len = 0
}

// logf prints a note to w, clearing the progress line first.
func (s *statusLine) logf(w io.Writer, format string, args ...any) {
	s.clear()
	fmt.Fprintf(w, format+"\n", args...)
}
