package testenv

import (
	"context"
	"testing"
	"time"
)

// pollEvery is how often Eventually checks its condition.
const pollEvery = 20 * time.Millisecond

// Eventually polls cond every 20 ms until it holds and returns how long
// that took; when timeout passes first it fails the test with
// "<what>: not true after <timeout>", followed by the last state that
// detail (when given) describes, e.g. the values cond saw last. It is the
// one polling loop of the test suites: tests wait on a condition with a
// deadline instead of sleeping for a guessed time.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, detail ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := what + ": not true after " + timeout.String()
			for _, d := range detail {
				msg += " (last seen: " + d() + ")"
			}
			t.Fatal(msg)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(start)
}

// EventuallyOK is Eventually for a condition that reports why it does not
// hold yet: cond gets a context of 2 s for its I/O and returns nil once it
// holds; the failure message ends with the last error.
func EventuallyOK(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) error) time.Duration {
	t.Helper()
	var last error
	return Eventually(t, timeout, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		last = cond(ctx)
		return last == nil
	}, func() string { return last.Error() })
}
