// Command stallmeasure measures an SSE consumer's delivery latency while a
// non-reading /ws client subscribes many queues of big messages (issue 13
// item 6). Loopback only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func main() {
	base := flag.String("base", "http://127.0.0.1:46301", "gateway")
	queues := flag.Int("queues", 64, "queues of the stalled /ws client")
	per := flag.Int("per", 17, "messages per queue")
	size := flag.Int("size", 1<<20, "payload bytes")
	samples := flag.Int("samples", 20, "victim messages")
	flag.Parse()
	ctx := context.Background()
	payload := strings.Repeat("m", *size)
	post := func(q, p string) {
		b, _ := json.Marshal(map[string]any{"payload": p, "priority": "H", "queue": []map[string]string{{"id": q}}})
		resp, err := http.Post(*base+"/trans", "application/json", bytes.NewReader(b))
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
	}
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for q := range *queues {
		for range *per {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); defer func() { <-sem }(); post(fmt.Sprint("stall", q), payload) }()
		}
	}
	wg.Wait()
	log.Printf("provisioned %d x %d x %d bytes in %v", *queues, *per, *size, time.Since(start))

	// The victim: an SSE consumer of another queue.
	resp, err := http.Get(*base + "/queue/victim/events")
	if err != nil {
		log.Fatal(err)
	}
	lat := make(chan time.Duration, *samples)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev struct{ Data string }
			if json.Unmarshal([]byte(line), &ev) != nil {
				continue
			}
			ns, _ := strconv.ParseInt(ev.Data, 10, 64)
			lat <- time.Since(time.Unix(0, ns))
		}
	}()
	time.Sleep(500 * time.Millisecond)

	// The staller: subscribes every queue and never reads.
	c, _, err := websocket.Dial(ctx, strings.Replace(*base, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseNow()
	for q := range *queues {
		f, _ := json.Marshal(map[string]any{"op": "subscribe", "queue": fmt.Sprint("stall", q)})
		if err := c.Write(ctx, websocket.MessageText, f); err != nil {
			log.Fatal(err)
		}
	}
	var got []time.Duration
	for range *samples {
		time.Sleep(200 * time.Millisecond)
		post("victim", strconv.FormatInt(time.Now().UnixNano(), 10))
	}
	timeout := time.After(60 * time.Second)
	for len(got) < *samples {
		select {
		case d := <-lat:
			got = append(got, d)
		case <-timeout:
			log.Printf("only %d of %d victim messages within 60 s", len(got), *samples)
			*samples = len(got)
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	if len(got) > 0 {
		fmt.Printf("victim SSE latency over %d messages: median %v, max %v\n", len(got), got[len(got)/2].Round(time.Millisecond), got[len(got)-1].Round(time.Millisecond))
	}
}
