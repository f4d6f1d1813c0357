package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for concurrent use: a process's or a
// logger's output written in one goroutine and read in another while it
// runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CloseWithin calls c.Close with a context that ends after d and returns
// its error (for what shuts down gracefully within a deadline, such as an
// event bus draining its sinks).
func CloseWithin(c interface{ Close(context.Context) error }, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Close(ctx)
}

// within calls f with a context that ends after d and returns its result;
// an error fails the test ("what: error").
func within[T any](t testing.TB, d time.Duration, what string, f func(context.Context) (T, error)) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	v, err := f(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// Tool returns the path of an external program a test needs: the one the
// environment variable env names when it is set (it must then work), else
// the first of names found (a name with a slash is a path, one without is
// looked up in PATH). Without one the test is skipped, or fails when CI is
// set (.ci/run installs the Debian package pkg).
func Tool(t testing.TB, env, pkg string, names ...string) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		p, err := exec.LookPath(v)
		if err != nil {
			t.Fatalf("%s=%s: %v", env, v, err)
		}
		return p
	}
	if p := FindTool(names...); p != "" {
		return p
	}
	name := filepath.Base(names[0])
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (.ci/run installs the Debian package %s)", name, pkg)
	}
	t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	return ""
}

// FindTool returns the path of the first of names found (a name with a
// slash is a path, one without is looked up in PATH), "" when none is.
func FindTool(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}
