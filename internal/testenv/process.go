package testenv

import (
	"os"
	"os/exec"
	"time"
)

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
