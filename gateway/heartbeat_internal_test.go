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
