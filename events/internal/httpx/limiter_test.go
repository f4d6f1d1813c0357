package httpx

import (
	"testing"
	"time"
)

// TestLimiter: the first log runs, the ones within the interval are held
// back, and the next one that runs reports how many were held.
func TestLimiter(t *testing.T) {
	l := NewLimiter(time.Hour)
	var runs []int
	for i := 0; i < 5; i++ {
		l.Do(func(held int) { runs = append(runs, held) })
	}
	if len(runs) != 1 || runs[0] != 0 {
		t.Fatalf("runs within one interval: %v, want [0]", runs)
	}

	l = NewLimiter(time.Millisecond)
	runs = nil
	l.Do(func(held int) { runs = append(runs, held) })
	calls := 1
	deadline := time.Now().Add(10 * time.Second)
	for len(runs) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no second run after the interval: %v", runs)
		}
		l.Do(func(held int) { runs = append(runs, held) })
		calls++
	}
	// Every call between the two runs was counted as held back.
	if runs[0] != 0 || runs[1] != calls-2 {
		t.Fatalf("runs %v after %d calls, want [0 %d]", runs, calls, calls-2)
	}
}
