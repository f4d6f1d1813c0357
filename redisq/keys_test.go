package redisq

import "testing"

func TestSplitQueue(t *testing.T) {
	cases := []struct {
		full, org, id string
		secure, ok    bool
	}{
		{"UNSEC:q1", "", "q1", false, true},
		{"SEC:q1", "", "q1", true, true},
		{"acme:UNSEC:q:1", "acme", "q:1", false, true},
		{"acme:SEC:UNSEC:x", "acme", "UNSEC:x", true, true},
		{"acme:other:q", "", "", false, false},
		{"q1", "", "", false, false},
	}
	for _, c := range cases {
		org, sec, id, ok := SplitQueue(c.full)
		if org != c.org || sec != c.secure || id != c.id || ok != c.ok {
			t.Errorf("SplitQueue(%q) = %q %v %q %v", c.full, org, sec, id, ok)
		}
	}
	if Namespace("acme", true) != "acme:SEC:" || Namespace("", false) != "UNSEC:" {
		t.Fatal("Namespace")
	}
}

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
