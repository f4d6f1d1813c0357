package testenv

import (
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// running is the process a harness started, while it runs: its command
// and the channel closed once it has exited (startLogged).
type running struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
}

// set records a started process.
func (p *running) set(cmd *exec.Cmd, done <-chan struct{}) {
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// alive tells whether a process is recorded and not ended through end.
func (p *running) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// pid is the recorded process's id, 0 if none.
func (p *running) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// end forgets the recorded process and ends it (endProcess); it does
// nothing when none is recorded.
func (p *running) end(sig os.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	endProcess(cmd, done, sig, grace)
}

// start starts bin with args, its output appended to the file logPath (""
// discards it), and records it.
func (p *running) start(logPath, bin string, args ...string) error {
	if logPath == "" {
		logPath = os.DevNull
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	done, err := startLogged(cmd, logf)
	if err != nil {
		return err
	}
	p.set(cmd, done)
	return nil
}

// lookPath finds the program name on PATH; without it the test fails,
// naming the Debian package pkg that installs it.
func lookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not on PATH (install the %s package): %v", name, pkg, err)
	}
	return p
}

// startLogged starts cmd with its output going to logf and returns a
// channel closed once the process has exited (and logf is closed). logf
// is closed on a failed start too.
func startLogged(cmd *exec.Cmd, logf *os.File) (<-chan struct{}, error) {
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return done, nil
}

// endProcess sends sig to a process started by a harness and waits for it
// to exit (done is closed by the goroutine that waits on it); after grace
// it is killed.
func endProcess(cmd *exec.Cmd, done <-chan struct{}, sig os.Signal, grace time.Duration) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}
