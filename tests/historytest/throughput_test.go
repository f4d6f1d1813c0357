package historytest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestHistoryThroughput measures provision+pop round trips through two
// gateways on the same Redis, one recording history in MongoDB and one
// not, and reports the throughput ratio (the goal is ≥ 0.9): the median
// of the ratios of 8 rounds. The runs alternate in rounds so that other
// load on the machine hits both alike;
// after each history round the test waits (untimed) until the history
// sink has written everything, so no MongoDB work of one round spills into
// the next. MongoDB runs on the same machine and its CPU use counts against
// the history gateway, as it would for a co-located database.
//
// POPBOX_TEST_THROUGHPUT_N sets the round trips per gateway (default
// 2000); the ratio is only asserted loosely (≥ 0.6), since a shared test
// machine is noisy.
func TestHistoryThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput measurement skipped in -short mode")
	}
	total := 2000
	if v, err := strconv.Atoi(os.Getenv("POPBOX_TEST_THROUGHPUT_N")); err == nil && v > 0 {
		total = v
	}
	const rounds, workers = 8, 4
	perRound := total / rounds

	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t)
	on := startNode(t, r.URL(), mongoEnv(m)...)
	off := startNode(t, r.URL())

	run := func(n *node, tag string, count int) time.Duration {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := fmt.Sprintf("tp-%s-%d", tag, w)
				for i := w; i < count; i += workers {
					if err := n.roundTrip(q); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return took
	}
	// Warm up both (connections, Lua scripts, MongoDB indexes).
	run(on, "on", 100)
	run(off, "off", 100)
	published := float64(100 * eventsPerRoundTrip)
	on.settle(t, "history", published, 60*time.Second)

	mpid := m.Pid() // 0 for an external server: its CPU is not counted
	var tOn, tOff time.Duration
	var cpuOn, cpuOff, cpuMongo time.Duration
	var ratios []float64
	for round := range rounds {
		var dOn, dOff time.Duration
		order := []*node{on, off}
		if round%2 == 1 {
			order = []*node{off, on}
		}
		for _, n := range order {
			c0, m0 := procCPU(n.Pid()), procCPU(mpid)
			if n == on {
				dOn = run(on, "on", perRound)
				cpuOn += procCPU(on.Pid()) - c0
				// Untimed: let the history sink store the round (its
				// /metrics scrapes would blur the gateway's CPU count).
				published += float64(perRound * eventsPerRoundTrip)
				on.settle(t, "history", published, 120*time.Second)
				cpuMongo += procCPU(mpid) - m0
			} else {
				dOff = run(off, "off", perRound)
				cpuOff += procCPU(off.Pid()) - c0
			}
		}
		tOn += dOn
		tOff += dOff
		ratios = append(ratios, dOff.Seconds()/dOn.Seconds())
	}
	n := float64(perRound * rounds)
	thrOn, thrOff := n/tOn.Seconds(), n/tOff.Seconds()
	slices.Sort(ratios)
	median := (ratios[(len(ratios)-1)/2] + ratios[len(ratios)/2]) / 2
	c := on.sink(t, "history")
	t.Logf("provision+pop round trips: %d per gateway, %d workers, %d alternating rounds; history off %.0f/s, on %.0f/s (overall ratio %.3f; per round %.3f)",
		int(n), workers, rounds, thrOff, thrOn, thrOn/thrOff, ratios)
	t.Logf("history sink: %v", c)
	if mpid != 0 {
		// Where the time goes: CPU per 1000 round trips of each gateway
		// (while serving) and of MongoDB (storing them).
		per := func(d time.Duration) time.Duration { return (d * 1000 / time.Duration(n)).Round(time.Millisecond) }
		t.Logf("CPU per 1000 round trips: gateway history off %v, on %v; %s %v", per(cpuOff), per(cpuOn), m.Kind, per(cpuMongo))
	}
	// The median of the per-round ratios resists bursts of load from
	// elsewhere on the machine better than the overall one.
	t.Log("HISTORY on/off throughput ratio:", fmt.Sprintf("%.3f", median))
	if c.dropped != 0 || c.written != published {
		t.Errorf("history sink dropped events under load: %v (published %v)", c, published)
	}
	if median < 0.6 {
		t.Errorf("history on/off throughput ratio %.3f < 0.6 (goal ≥ 0.9)", median)
	}
}
