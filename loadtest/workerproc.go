package main

// The worker process: its spec and commands on stdin, its events on stdout.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/popbox/popbox/internal/tick"
)

// eventWriter writes events as JSON lines, one at a time.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *eventWriter) send(ev Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enc.Encode(ev)
}

// runWorker is the worker process: it reads its spec and commands from in
// and writes events to out. It returns when told to stop, when in closes
// (the parent is gone) or at the spec's deadline.
func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	ew := &eventWriter{enc: json.NewEncoder(out)}
	br := bufio.NewReaderSize(in, 1<<16)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return fmt.Errorf("worker: reading spec: %w", err)
	}
	var spec WorkerSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("worker: bad spec: %w", err)
	}
	w, err := newWorker(&spec)
	if err != nil {
		_ = ew.send(Event{Ev: "fatal", Msg: err.Error()})
		return err
	}
	defer w.prov.Close()
	if !spec.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, spec.Deadline)
		defer cancel()
	}
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()

	cmds := readCommands(ctx, br)
	// The progress reporter runs for the whole life of the worker.
	progCtx, stopProg := context.WithCancel(context.Background())
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		w.reportProgress(progCtx, ew, spec.Progress)
	}()

	var running sync.WaitGroup
	w.connectAll(subCtx, &running)
	if spec.Scenario == "fanout" {
		w.expect.Store(w.openSubs.Load())
	}
	p := w.progress()
	_ = ew.send(Event{Ev: "ready", Progress: &p})

	phase := func(f func()) {
		f()
		p := w.progress()
		_ = ew.send(Event{Ev: "phase", Progress: &p})
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case c, ok := <-cmds:
			if !ok {
				break loop
			}
			switch c.Cmd {
			case "provision":
				w.sDeliv.t0.Store(time.Now().UnixNano())
				w.sProv.t0.Store(time.Now().UnixNano())
				phase(func() { w.provisionEach(ctx) })
			case "run":
				t0 := time.Unix(0, c.T0)
				w.sDeliv.t0.Store(c.T0)
				w.sProv.t0.Store(c.T0)
				phase(func() { w.run(ctx, t0) })
			case "stop":
				break loop
			}
		}
	}
	w.openStop = w.open.Load()
	cancelSubs()
	waitTimeout(&running, 10*time.Second)
	stopProg()
	<-progDone
	return ew.send(Event{Ev: "result", Result: w.result()})
}

// readCommands reads the parent's commands from br until it ends (the
// parent is gone) or ctx ends; the channel closes then. The reader
// goroutine may stay blocked in a read of br until the process exits: a
// read cannot be cancelled, and the worker process ends right after.
func readCommands(ctx context.Context, br *bufio.Reader) <-chan Command {
	cmds := make(chan Command)
	go func() {
		defer close(cmds)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				var c Command
				if json.Unmarshal(line, &c) == nil {
					select {
					case cmds <- c:
					case <-ctx.Done():
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return cmds
}

// reportProgress sends a progress event every interval (at least 50 ms)
// and at every milestone, until ctx ends.
func (w *worker) reportProgress(ctx context.Context, ew *eventWriter, interval time.Duration) {
	tick.EveryOrWake(ctx, max(interval, 50*time.Millisecond), w.milestone, func() {
		p := w.progress()
		_ = ew.send(Event{Ev: "progress", Progress: &p})
	})
}

// waitTimeout waits for wg at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
