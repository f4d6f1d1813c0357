//go:build linux

package hangup

// watching is how many sockets are watched and whether the loop runs.
func watching() (n int, running bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.watched), w.running
}
