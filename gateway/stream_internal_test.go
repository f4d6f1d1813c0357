package gateway

import (
	"testing"
	"time"
)

// TestNextHeartbeat: a heartbeat falls due within interval ± 25 %, at the
// end of a slot shared by every stream of the node (a second, or
// interval/16 when shorter).
func TestNextHeartbeat(t *testing.T) {
	start := time.Date(2026, 12, 7, 0, 0, 0, 123456789, time.UTC)
	for _, interval := range []time.Duration{30 * time.Second, 5 * time.Second, 200 * time.Millisecond, 10 * time.Microsecond} {
		slot := min(maxHeartbeatSlot, interval/16)
		seen := map[time.Duration]bool{}
		for i := range 2000 {
			now := start.Add(time.Duration(i) * 7777 * time.Microsecond)
			d := nextHeartbeat(interval, now)
			if d < interval*3/4 || d > interval*5/4 {
				t.Fatalf("interval %v, now %v: next heartbeat in %v, outside ±25 %%", interval, now, d)
			}
			if at := now.Add(d); slot > 0 && !at.Equal(at.Truncate(slot)) {
				t.Fatalf("interval %v: heartbeat at %v is not on a %v slot", interval, at, slot)
			}
			seen[d/max(slot, 1)] = true
		}
		if len(seen) < 3 {
			t.Errorf("interval %v: heartbeats not spread (%d distinct delays)", interval, len(seen))
		}
	}
}

// TestExpiryEventChecksTheDeadline: the token-expiry event ends a stream
// only once its current deadline has passed; a late timer of a deadline
// since moved (or a wall clock set back) re-arms for the current one
// instead of ending the stream early or leaving it without a timer.
func TestExpiryEventChecksTheDeadline(t *testing.T) {
	st := &stream{running: true} // served by this test only
	st.setExpiry(time.Now().Add(time.Hour))
	defer st.setExpiry(time.Time{})
	st.expiry.Stop() // as if it had fired: the event came, the deadline is an hour away
	if r, done := st.handle(evExpiry); done {
		t.Fatalf("a stream whose token expires in an hour ended (%v)", r)
	}
	if st.expiry == nil || !st.expiry.Stop() {
		t.Fatal("no timer armed for the current deadline after a stale expiry event")
	}
	st.expires = time.Now().Add(-time.Second)
	if r, done := st.handle(evExpiry); !done || r != endTokenExpired {
		t.Fatalf("past the deadline: %v, %v; want the stream ended, %v", r, done, endTokenExpired)
	}
}

// TestLiveStreamsList: the node's list of open streams keeps every stream
// added and no stream removed, whatever its place (head, middle, tail,
// alone), and a post reaches exactly the streams in it.
func TestLiveStreamsList(t *testing.T) {
	var l liveStreams
	sts := make([]*stream, 5)
	for i := range sts {
		sts[i] = &stream{running: true} // posts only record the event
		l.add(sts[i])
	}
	in := func() map[*stream]bool {
		m := map[*stream]bool{}
		for st := l.head; st != nil; st = st.liveNext {
			if m[st] {
				t.Fatal("a stream is in the list twice")
			}
			if st.liveNext != nil && st.liveNext.livePrev != st {
				t.Fatal("the list's back links are broken")
			}
			m[st] = true
		}
		return m
	}
	l.remove(sts[2]) // middle
	l.remove(sts[4]) // head (added last)
	l.remove(sts[0]) // tail
	l.remove(sts[0]) // again: harmless
	got := in()
	if len(got) != 2 || !got[sts[1]] || !got[sts[3]] {
		t.Fatalf("list holds %d streams, want streams 1 and 3", len(got))
	}
	l.post(evShutdown)
	for i, st := range sts {
		if want := i == 1 || i == 3; (st.events&evShutdown != 0) != want {
			t.Errorf("stream %d: shutdown posted %v, want %v", i, st.events&evShutdown != 0, want)
		}
	}
	l.remove(sts[1])
	l.remove(sts[3]) // the last one
	if l.head != nil {
		t.Fatal("list not empty after every stream was removed")
	}
}
