package auth

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func fakeLimiter(interval time.Duration, burst int, now *time.Time) *FailureLimiter {
	l := NewFailureLimiter(interval, burst)
	l.now = func() time.Time { return *now }
	return l
}

// tracked returns the number of addresses tracked.
func (l *FailureLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := fakeLimiter(2*time.Second, 3, &now)
	for i := range 3 {
		if b, _ := l.Blocked("192.0.2.1"); b {
			t.Fatalf("blocked after %d failures, burst 3", i)
		}
		l.Failed("192.0.2.1")
	}
	b, retry := l.Blocked("192.0.2.1")
	if !b || retry <= 0 || retry > 2*time.Second {
		t.Fatalf("after the burst: blocked %v retry %v, want blocked within 2s", b, retry)
	}
	// Asking does not spend anything: still exactly one refill away.
	if _, r2 := l.Blocked("192.0.2.1"); r2 != retry {
		t.Fatalf("retry moved from %v to %v by asking", retry, r2)
	}
	// Another address is not affected; nor is an IPv4-mapped spelling
	// of it a way around.
	if b, _ := l.Blocked("192.0.2.2"); b {
		t.Fatal("another address blocked")
	}
	if b, _ := l.Blocked("::ffff:192.0.2.1"); !b {
		t.Fatal("the IPv4-mapped form of a blocked address is not blocked")
	}
	now = now.Add(retry)
	if b, _ := l.Blocked("192.0.2.1"); b {
		t.Fatal("still blocked after the refill")
	}
	l.Failed("192.0.2.1")
	if b, _ := l.Blocked("192.0.2.1"); !b {
		t.Fatal("one refill allows one failure, not more")
	}
	// IPv6 counts per /64.
	for i := range 3 {
		l.Failed(fmt.Sprintf("2001:db8:1:2::%x", i+1))
	}
	if b, _ := l.Blocked("2001:db8:1:2:ffff::1"); !b {
		t.Fatal("another address of the same /64 is not blocked")
	}
	if b, _ := l.Blocked("2001:db8:1:3::1"); b {
		t.Fatal("another /64 is blocked")
	}
	var nl *FailureLimiter
	nl.Failed("192.0.2.1")
	if b, _ := nl.Blocked("192.0.2.1"); b || NewFailureLimiter(0, 3) != nil || NewFailureLimiter(time.Second, 0) != nil {
		t.Fatal("a nil or switched-off limiter limits")
	}
}

// TestFailureLimiterBounded: many addresses never grow the table past its
// bound, and an address still within its penalty is the last to go.
func TestFailureLimiterBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := fakeLimiter(time.Minute, 2, &now)
	l.max = 8
	l.Failed("198.51.100.1")
	l.Failed("198.51.100.1")
	for i := range 100 {
		now = now.Add(time.Millisecond)
		l.Failed(fmt.Sprintf("203.0.113.%d", i))
		if n := l.tracked(); n > l.max {
			t.Fatalf("%d addresses tracked, bound %d", n, l.max)
		}
	}
	// Refilled buckets go first.
	now = now.Add(5 * time.Minute)
	l.Failed("198.51.100.2")
	if n := l.tracked(); n != 1 {
		t.Fatalf("after everything refilled: %d tracked, want 1", n)
	}
}

func TestFailureLimiterConcurrent(t *testing.T) {
	l := NewFailureLimiter(time.Hour, 50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				addr := fmt.Sprintf("10.0.%d.%d", g, i%4)
				if b, _ := l.Blocked(addr); !b {
					l.Failed(addr)
				}
			}
		}()
	}
	wg.Wait()
	if n := l.tracked(); n != 32 {
		t.Fatalf("%d addresses tracked, want 32", n)
	}
}
