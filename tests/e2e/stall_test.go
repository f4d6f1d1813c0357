package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/internal/sysinfo"
	"github.com/popbox/popbox/internal/testenv"
)

// Shape of the stalled-hub attack (issue 13 item 6): one /ws client
// subscribed to stallQueues queues of stallPerQueue messages of
// stallPayload bytes each, which never reads its socket. Each message is
// one transaction to every attacker queue (the gateway stores its payload
// once; every queue's pop reads it), so the attack costs 17 MiB of
// provisioning but 1 GiB of pops.
const (
	stallQueues   = 64
	stallPerQueue = 17
	stallPayload  = 1 << 20
	victimMsgs    = 40
	victimEvery   = 100 * time.Millisecond
)

// TestOneConsumerCannotStallTheHub (issue 13 item 6): while one
// multiplexed WebSocket that never reads holds 64 queues of 17 × 1 MiB
// messages, a consumer of an unrelated queue (SSE) still gets every
// message provisioned during the attack, no pop fails, and once the
// attacker is gone every message it was not written is back in its queue,
// Pending (none is left Delivered). Latencies are logged; only the
// median is held to a generous bound (1 s): on the old main it was 2–3 s,
// with the fix tens of milliseconds.
//
// Not parallel: it measures the victim's latency and moves a GiB through
// Redis, so it runs before the parallel tests start.
func TestOneConsumerCannotStallTheHub(t *testing.T) {
	_, n := startRedisNode(t, testenv.OwnRedis())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := qn(t, "")

	// The attacker: a small receive buffer, so that little of the attack
	// can hide in the kernel.
	dialer := &net.Dialer{}
	attackHC := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(64 << 10)
		}
		return c, err
	}}}
	wsURL := "ws" + strings.TrimPrefix(n.base, "http") + "/ws"
	ac, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: attackHC})
	if err != nil {
		t.Fatalf("attacker dial: %v", err)
	}
	defer ac.CloseNow()
	ac.SetReadLimit(4 << 20)
	queues := make([]string, stallQueues)
	for i := range queues {
		queues[i] = fmt.Sprintf("%s-a%02d", prefix, i)
		b, _ := json.Marshal(map[string]any{"op": "subscribe", "queue": queues[i]})
		if err := ac.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	// Read the acknowledgements of the subscriptions (nothing else is
	// there yet); from now on the attacker never reads.
	for got := 0; got < stallQueues; {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		_, data, err := ac.Read(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("attacker subscriptions: %v", err)
		}
		var f struct{ Op, Queue, Error string }
		if err := json.Unmarshal(data, &f); err != nil || f.Op != "subscribed" {
			t.Fatalf("attacker subscriptions: frame %s", data)
		}
		got++
	}

	// The victim: an SSE consumer of an unrelated queue.
	victim := prefix + "-victim"
	received := map[string]time.Time{}
	var mu sync.Mutex
	arrived := make(chan struct{}, victimMsgs)
	sreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/queue/"+victim+"/events", nil)
	resp, err := (&http.Client{Transport: newTransport()}).Do(sreq)
	if err != nil {
		t.Fatalf("victim SSE: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("victim SSE: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() { // "retry: 2000": the stream is open
		t.Fatalf("victim SSE: no first line: %v", sc.Err())
	}
	var readers sync.WaitGroup
	defer readers.Wait()
	defer resp.Body.Close()
	readers.Go(func() {
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m struct{ Transaction string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Transaction != "" {
				mu.Lock()
				received[m.Transaction] = time.Now()
				mu.Unlock()
				arrived <- struct{}{}
			}
		}
	})

	// The attack and the victim's messages, together.
	payload := strings.Repeat("x", stallPayload)
	attackTIDs := make([]string, stallPerQueue)
	var attack sync.WaitGroup
	attack.Go(func() {
		body := jsonBody(t, msg{"payload": payload, "priority": "L", "queue": target(queues...)})
		c := testenv.Node{Gateway: n.g, Base: n.base, HC: n.hc}
		for i := range attackTIDs {
			tid, _, err := c.TryProvision(ctx, "/trans", body, nil)
			if err != nil {
				t.Errorf("provision attack message: %v", err)
				return
			}
			attackTIDs[i] = tid
		}
	})
	sent := map[string]time.Time{}
	for i := range victimMsgs {
		at := time.Now()
		tid := n.send1(t, fmt.Sprint("v", i), "H", victim)
		sent[tid] = at
		time.Sleep(victimEvery) // paces the victim's messages over the attack
	}
	attack.Wait()
	if t.Failed() {
		return
	}
	for range victimMsgs {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			mu.Lock()
			got := len(received)
			mu.Unlock()
			t.Fatalf("victim received %d of %d messages", got, victimMsgs)
		}
	}
	mu.Lock()
	var lat []time.Duration
	for tid, at := range sent {
		got, ok := received[tid]
		if !ok {
			t.Errorf("victim message %s never received", tid)
			continue
		}
		lat = append(lat, got.Sub(at))
	}
	mu.Unlock()
	slices.Sort(lat)
	median := lat[len(lat)/2]
	t.Logf("victim latency during the attack: median %v, max %v (%d messages)",
		median.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat))
	// Generous (tens of ms are measured; the stalled hub gave 2–3 s): the
	// victim's typical message is not held up by the attacker's pops.
	if median > time.Second {
		t.Errorf("victim median latency %v during the attack: the hub stalls", median)
	}

	// While the attacker is still connected, the node holds at most its
	// connection's byte budget (4 MiB: four of these messages, plus the
	// one being written) taken from Redis and not written; the rest waits
	// in Redis. Before the budget, it took every message: ~1 GiB.
	left := 0
	for _, q := range queues {
		var info struct {
			Size int `json:"size"`
		}
		if err := testenv.NewNode(t, n.g).TryGetJSON(ctx, "/queue/"+q, &info); err != nil {
			t.Fatalf("queue size: %v", err)
		}
		left += info.Size
	}
	taken := len(attackTIDs)*len(queues) - left
	t.Logf("while the attacker was connected: %d of %d messages taken from Redis; gateway %s",
		taken, len(attackTIDs)*len(queues), procMemory(n.g.Pid()))
	if taken > 16+5 {
		t.Errorf("the node took %d messages (1 MiB each) for an attacker that never read", taken)
	}

	// The attacker goes; what it was not written goes back to its queues.
	ac.CloseNow()
	var delivered, pending, inQueues int
	check := func(ctx context.Context) error {
		delivered, pending, inQueues = 0, 0, 0
		per := map[string][2]int{} // queue id: {Delivered, Pending}
		for _, tid := range attackTIDs {
			var st struct {
				Data map[string]string `json:"data"`
			}
			if err := testenv.NewNode(t, n.g).TryGetJSON(ctx, "/trans/"+tid+"/state", &st); err != nil {
				return err
			}
			for _, q := range queues {
				c := per[q]
				switch st.Data[q] {
				case "Delivered":
					c[0]++
				case "Pending":
					c[1]++
				default:
					return fmt.Errorf("%s/%s in state %q", tid, q, st.Data[q])
				}
				per[q] = c
			}
		}
		for _, q := range queues {
			var info struct {
				Size int `json:"size"`
			}
			if err := testenv.NewNode(t, n.g).TryGetJSON(ctx, "/queue/"+q, &info); err != nil {
				return err
			}
			c := per[q]
			delivered += c[0]
			pending += c[1]
			inQueues += info.Size
			if info.Size != c[1] {
				return fmt.Errorf("queue %s holds %d messages, %d are Pending, %d Delivered", q, info.Size, c[1], c[0])
			}
		}
		return nil
	}
	if c := strings.Count(n.g.Log(), "pop failed"); c > 0 {
		t.Errorf("%d pops failed during the attack", c)
	}
	testenv.EventuallyOK(t, 20*time.Second, "every message not written to the attacker back in its queue, Pending", check)
	t.Logf("after the attacker left: %d messages back in their queues (Pending), %d Delivered (written to the attacker's socket)",
		inQueues, delivered)
	if delivered > 16 {
		// Its socket could take a few 1 MiB frames (the gateway's send
		// buffer, 64 KiB of receive buffer), not more.
		t.Errorf("%d messages Delivered to an attacker that never read", delivered)
	}
}

// procMemory reports a process's resident memory and its peak ("?" where
// /proc cannot be read).
func procMemory(pid int) string {
	m, err := sysinfo.Proc{}.Memory(pid)
	if err != nil {
		return "RSS ?"
	}
	return fmt.Sprintf("RSS %d MiB (peak %d MiB)", m.RSS>>20, m.HWM>>20)
}
