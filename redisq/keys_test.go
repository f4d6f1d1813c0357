package redisq

import (
	"testing"

	"github.com/popbox/popbox/internal/domain"
)

func TestQueueOfListKey(t *testing.T) {
	k := KeysOfQueue("UNSEC:a}b{c")
	for _, key := range []string{k.High, k.Low} {
		full, ok := QueueOfListKey(key)
		if !ok || full != "UNSEC:a}b{c" {
			t.Errorf("QueueOfListKey(%q) = %q %v", key, full, ok)
		}
	}
	if _, ok := QueueOfListKey(k.Info); ok {
		t.Error("info key taken for a list")
	}
	if _, ok := QueueOfListKey("other"); ok {
		t.Error("foreign key taken for a list")
	}
}

func TestListKeyIsQueueList(t *testing.T) {
	for _, full := range []string{"UNSEC:q1", "SEC:org/a}b{c"} {
		k := KeysOfQueue(full)
		if got := listKey(full, domain.PriorityHigh); got != k.High {
			t.Errorf("listKey(%q, H) = %q, want %q", full, got, k.High)
		}
		if got := listKey(full, domain.PriorityLow); got != k.Low {
			t.Errorf("listKey(%q, L) = %q, want %q", full, got, k.Low)
		}
	}
}

func TestPopKeysAreQueueKeys(t *testing.T) {
	full := "SEC:org/a}b{c"
	k := KeysOfQueue(full)
	h, l, lp, in := popKeys(full)
	if h != k.High || l != k.Low || lp != k.LastPop || in != k.Inflight {
		t.Errorf("popKeys(%q) = %q %q %q %q, want %q %q %q %q", full, h, l, lp, in, k.High, k.Low, k.LastPop, k.Inflight)
	}
	p, m, st := transKeyParts()
	if transKeyArgs != [3]any{p, m, st} {
		t.Errorf("transKeyArgs = %v", transKeyArgs)
	}
}
