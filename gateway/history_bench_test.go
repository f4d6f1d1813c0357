package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/internal/testenv"
)

// historyBenchNode is an in-process gateway wired as internal/app wires
// one (callback sink always, history sink when a Store is given), serving
// over a real loopback HTTP listener.
type historyBenchNode struct {
	url string
	bus *events.Bus
	hc  *http.Client
}

func startHistoryBenchNode(b *testing.B, redisURL string, hist *history.Store) *historyBenchNode {
	b.Helper()
	n := startTestNode(b, redisURL, nodeSetup{history: hist, callbacks: true})
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	return &historyBenchNode{url: n.plain.URL, bus: n.bus, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// eventsPerRoundTrip is what one roundTrip publishes: the provision
// action, Pending, the pop action and Delivered.
const eventsPerRoundTrip = 4

// roundTrip provisions one message to q and pops it.
func (n *historyBenchNode) roundTrip(q string) error {
	body := `{"payload":"m","priority":"H","queue":[{"id":"` + q + `"}]}`
	resp, err := n.hc.Post(n.url+"/trans", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	var pr struct {
		Data string `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&pr)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("provision: %d %v", resp.StatusCode, err)
	}
	resp, err = n.hc.Post(n.url+"/queue/"+q+"/pop?timeout=5&max=1", "", nil)
	if err != nil {
		return err
	}
	var pop struct {
		Transactions []string `json:"transactions"`
	}
	err = json.NewDecoder(resp.Body).Decode(&pop)
	resp.Body.Close()
	if err != nil || len(pop.Transactions) != 1 || pop.Transactions[0] != pr.Data {
		return fmt.Errorf("pop %s: %v %v, want [%s]", q, pop.Transactions, err, pr.Data)
	}
	return nil
}

// BenchmarkProvisionPopHistory compares provision+pop round trips (over
// HTTP, in parallel) through an in-process gateway with the MongoDB
// history on and off, same Redis. Run it with
//
//	go test -run '^$' -bench ProvisionPopHistory -benchtime 2000x ./gateway/
//
// (add -v to see the ratio of the last runs logged) and compare the rt/s
// of history=on and history=off (the goal is a ratio ≥ 0.9). Each
// history=on run ends once the history sink has written everything it
// was given, so the MongoDB writes count in its rt/s; served-rt/s is the
// rate clients saw and drain-ms how long the history took to catch up
// after the last answer. MongoDB is mongod or the embedded FerretDB
// (internal/testenv) on the same machine, competing for its CPUs.
func BenchmarkProvisionPopHistory(b *testing.B) {
	r := testenv.StartRedis(b)
	hist := openHistory(b)
	nodes := map[string]*historyBenchNode{
		"off": startHistoryBenchNode(b, r.URL(), nil),
		"on":  startHistoryBenchNode(b, r.URL(), hist),
	}
	rate := map[string]float64{}       // round trips per second until history has stored them
	servedRate := map[string]float64{} // round trips per second as clients saw them
	published := map[string]uint64{}   // events each node gave its history sink
	var qn atomic.Int64
	for _, mode := range []string{"off", "on"} {
		n := nodes[mode]
		b.Run("history="+mode, func(b *testing.B) {
			if err := n.roundTrip("bench-warm-" + mode); err != nil {
				b.Fatal(err)
			}
			published[mode] += eventsPerRoundTrip
			waitHistory(b, n.bus, published[mode])
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				q := fmt.Sprintf("bench-%s-%d", mode, qn.Add(1))
				for pb.Next() {
					if err := n.roundTrip(q); err != nil {
						b.Error(err)
						return
					}
				}
			})
			served := time.Since(start)
			published[mode] += eventsPerRoundTrip * uint64(b.N)
			waitHistory(b, n.bus, published[mode])
			b.StopTimer()
			took := time.Since(start)
			rate[mode] = float64(b.N) / took.Seconds()
			servedRate[mode] = float64(b.N) / served.Seconds()
			b.ReportMetric(rate[mode], "rt/s")
			b.ReportMetric(servedRate[mode], "served-rt/s")
			b.ReportMetric(float64((took - served).Milliseconds()), "drain-ms")
		})
	}
	if rate["off"] > 0 && rate["on"] > 0 {
		b.Logf("HISTORY on/off throughput ratio: %.3f (on %.0f rt/s, off %.0f rt/s; as served to clients %.3f)",
			rate["on"]/rate["off"], rate["on"], rate["off"], servedRate["on"]/servedRate["off"])
	}
}

// waitHistory waits until the history sink (if any) has written (or
// dropped) want events in all.
func waitHistory(b *testing.B, bus *events.Bus, want uint64) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, ok := bus.Stats()["history"]
		if !ok {
			return
		}
		if st.Written+st.DroppedTotal() >= want {
			if st.DroppedTotal() > 0 {
				b.Errorf("history sink dropped events: %+v", st)
			}
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("history sink not drained: %+v, want %d written", st, want)
		}
		time.Sleep(time.Millisecond)
	}
}
