package testenv

import (
	"os"
	"os/exec"
	"time"
)

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
