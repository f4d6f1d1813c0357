package scaletest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/internal/tick"
)

// ---- the results table ----

// row is one line of the fault table.
type row struct {
	Fault       string // what was injected
	Setting     string // durability setting / delivery mode under test
	Provisioned int    // provisions answered 200
	Refused     int    // provisions answered otherwise, or not at all
	Delivered   int    // distinct 200-answered messages delivered
	Lost        int    // 200-answered messages never delivered
	Duplicated  int    // extra deliveries of 200-answered messages
	Expected    int    // of the extra deliveries: re-deliveries of messages whose ack the client never sent
	Recovery    string // how long the fault took to heal
}

var (
	resultsMu sync.Mutex
	results   []row
)

// report adds r to the table printed at the end and logs it now.
func report(t *testing.T, r row) {
	t.Helper()
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
	t.Logf("\n%s", table([]row{r}))
}

func table(rows []row) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "fault injected\tsetting\tprovisioned (200)\tnot acknowledged\tdelivered\tlost\tduplicated (of which expected re-deliveries)\trecovery\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d (%d)\t%s\t\n", r.Fault, r.Setting, r.Provisioned, r.Refused,
			r.Delivered, r.Lost, r.Duplicated, r.Expected, r.Recovery)
	}
	w.Flush()
	return b.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if len(results) > 0 {
		fmt.Printf("\nFAULT TABLE\n%s\n", table(results))
	}
	os.Exit(code)
}

// ---- gateway nodes ----

// node is one gateway process seen from clients (the shared harness),
// named in the results.
type node struct {
	*testenv.Node
	name string
}

// startNode starts a gateway. redisURL "" plus POPBOX_REDIS_CLUSTER or
// POPBOX_REDIS_SENTINELS in env selects those modes. The test fails if the
// gateway's race detector reported anything.
func startNode(t *testing.T, name, redisURL string, env ...string) *node {
	t.Helper()
	n := testenv.StartNode(t, redisURL, testenv.WithEnv(env...))
	n.HC.Timeout = 15 * time.Second
	return &node{Node: n, name: name}
}

// startPair starts gateway nodes A and B alike (see startNode).
func startPair(t *testing.T, redisURL string, env ...string) (a, b *node) {
	t.Helper()
	return startNode(t, "A", redisURL, env...), startNode(t, "B", redisURL, env...)
}

// states returns GET /trans/<tid>/state as queue -> state.
func (n *node) states(t testing.TB, tid string) map[string]string {
	t.Helper()
	var r struct {
		Data map[string]string `json:"data"`
	}
	n.GetJSON(t, "/trans/"+tid+"/state", &r)
	return r.Data
}

// ---- the ledger: what happened to every message ----

type msgRec struct {
	queue      string
	tid        string
	status     int // HTTP answer to the provision; 0: none (yet)
	deliveries int
	abandoned  int // deliveries whose ack the client never sent (its connection died first)
	nodes      []string
}

type ledger struct {
	mu      sync.Mutex
	msgs    map[string]*msgRec // by payload
	unknown int                // deliveries of payloads never sent
	last    time.Time          // time of the latest delivery
}

func newLedger() *ledger { return &ledger{msgs: map[string]*msgRec{}} }

func (l *ledger) sent(payload, queue string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[payload] = &msgRec{queue: queue}
}

func (l *ledger) answered(payload, tid string, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.msgs[payload]; m != nil {
		m.tid, m.status = tid, status
	}
}

func (l *ledger) delivered(payload, node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	m := l.msgs[payload]
	if m == nil {
		l.unknown++
		return
	}
	m.deliveries++
	m.nodes = append(m.nodes, node)
}

func (l *ledger) abandon(payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.msgs[payload]; m != nil {
		m.abandoned++
	}
}

// count fills the numeric columns of a row.
func (l *ledger) count() row {
	l.mu.Lock()
	defer l.mu.Unlock()
	var r row
	for _, m := range l.msgs {
		if m.status != http.StatusOK {
			r.Refused++
			continue
		}
		r.Provisioned++
		if m.deliveries == 0 {
			r.Lost++
			continue
		}
		r.Delivered++
		r.Duplicated += m.deliveries - 1
		r.Expected += min(m.deliveries-1, m.abandoned)
	}
	return r
}

// undelivered lists the 200-answered messages not delivered yet.
func (l *ledger) undelivered() []string {
	return l.list(func(m *msgRec) bool { return m.status == http.StatusOK && m.deliveries == 0 }, nil)
}

// abandonedNotRedelivered lists messages whose ack the client never sent
// (the connection died first) and that did not come again.
func (l *ledger) abandonedNotRedelivered() []string {
	return l.list(func(m *msgRec) bool { return m.abandoned > 0 && m.deliveries <= m.abandoned },
		func(m *msgRec) string { return fmt.Sprintf(", deliveries %d, abandoned %d", m.deliveries, m.abandoned) })
}

// list describes, sorted, the messages for which keep holds:
// "<payload>(queue <q>, tid <tid><more(m)>)"; more may be nil.
func (l *ledger) list(keep func(*msgRec) bool, more func(*msgRec) string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, m := range l.msgs {
		if keep(m) {
			extra := ""
			if more != nil {
				extra = more(m)
			}
			out = append(out, fmt.Sprintf("%s(queue %s, tid %s%s)", p, m.queue, m.tid, extra))
		}
	}
	sort.Strings(out)
	return out
}

func (l *ledger) perNode() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, m := range l.msgs {
		for _, n := range m.nodes {
			out[n]++
		}
	}
	return out
}

func (l *ledger) abandonedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		n += m.abandoned
	}
	return n
}

// waitDelivered waits until every 200-answered message was delivered, then
// until no delivery happened for quiet (late duplicates show up then).
func (l *ledger) waitDelivered(t testing.TB, timeout, quiet time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(l.undelivered()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		l.mu.Lock()
		last := l.last
		l.mu.Unlock()
		if time.Since(last) >= quiet {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- subscribers ----

type subKind int

const (
	kindSSE    subKind = iota // GET /queue/q/events
	kindWS                    // GET /queue/q/ws
	kindMux                   // GET /ws, subscribe op
	kindPop                   // POST /queue/q/pop(rel) in a loop
	kindStream                // POST /queue/q/subscribe(rel)
)

func (k subKind) String() string {
	return [...]string{"sse", "ws", "ws-mux", "longpoll", "http-stream"}[k]
}

var allKinds = []subKind{kindSSE, kindWS, kindMux, kindPop, kindStream}

// subscriber consumes one queue through one transport, reconnecting (to
// the next node) whenever its connection ends, as a real client behind a
// load balancer would.
type subscriber struct {
	kind       subKind
	queue      string
	nodes      []*node
	reliable   bool
	timeoutACK int           // seconds (reliable)
	ackDelay   time.Duration // acks are sent in batches this often
	led        *ledger

	at        atomic.Int64  // index of the node of the current session
	sessions  atomic.Int64  // sessions started
	connected chan struct{} // closed once the first session is up
	once      sync.Once
	lastErr   atomic.Value
}

func newSubscriber(kind subKind, queue string, nodes []*node, start int, reliable bool, led *ledger) *subscriber {
	s := &subscriber{kind: kind, queue: queue, nodes: nodes, reliable: reliable, timeoutACK: 5,
		ackDelay: 50 * time.Millisecond, led: led, connected: make(chan struct{})}
	s.at.Store(int64(start))
	return s
}

func (s *subscriber) node() *node { return s.nodes[int(s.at.Load())%len(s.nodes)] }

func (s *subscriber) up() { s.once.Do(func() { close(s.connected) }) }

// run keeps a session open until ctx ends.
func (s *subscriber) run(ctx context.Context) {
	for ctx.Err() == nil {
		s.sessions.Add(1)
		err := s.session(ctx, s.node())
		if err != nil {
			s.lastErr.Store(err.Error())
		}
		if ctx.Err() != nil {
			return
		}
		s.at.Add(1) // the next node: a dead node's clients move on
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type ackItem struct{ tid, payload string }

// acker batches acks of one session; what it never sent when the session
// ends is recorded as abandoned (the gateway must deliver it again).
type acker struct {
	mu      sync.Mutex
	pending []ackItem
	send    func(ctx context.Context, tids []string) error
}

func (a *acker) add(tid, payload string) {
	a.mu.Lock()
	a.pending = append(a.pending, ackItem{tid, payload})
	a.mu.Unlock()
}

func (a *acker) flush(ctx context.Context) {
	a.mu.Lock()
	items := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(items) == 0 {
		return
	}
	tids := make([]string, len(items))
	for i, it := range items {
		tids[i] = it.tid
	}
	// A failed ack is not retried: the message may or may not count as
	// acknowledged; if not, it comes again after its deadline.
	_ = a.send(ctx, tids)
}

func (a *acker) loop(ctx context.Context, every time.Duration) {
	// Clients do not ack in lock-step (and a fault must not always fall
	// just after a flush).
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(every)):
	}
	tick.Every(ctx, every, func() { a.flush(ctx) })
}

func (a *acker) abandon(led *ledger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, it := range a.pending {
		led.abandon(it.payload)
	}
	a.pending = nil
}

// eventData is the JSON of an SSE data line / WebSocket frame.
type eventData struct {
	Op          string `json:"op"`
	Data        string `json:"data"`
	Transaction string `json:"transaction"`
	Queue       string `json:"queue"`
	Error       string `json:"error"`
}

func (s *subscriber) postAck(n *node) func(ctx context.Context, tids []string) error {
	return func(ctx context.Context, tids []string) error {
		r, err := n.DoJSON(ctx, http.MethodPost, "/queue/"+s.queue+"/ack", map[string]any{"transactions": tids})
		if err == nil && r.Status != http.StatusOK {
			err = fmt.Errorf("ack answered %s", r)
		}
		return err
	}
}

func (s *subscriber) relQuery() string {
	if !s.reliable {
		return ""
	}
	return "reliable=1&timeoutACK=" + strconv.Itoa(s.timeoutACK)
}

// openStream starts a stream (SSE, HTTP subscribe) on n and returns its
// response once the gateway answered 200; the caller closes the body.
func openStream(ctx context.Context, n *node, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.Stream.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s answered %d", method, path, resp.StatusCode)
	}
	return resp, nil
}

// session runs one connection to n until it ends.
func (s *subscriber) session(ctx context.Context, n *node) error {
	sctx, cancel := context.WithCancel(ctx)
	ak := &acker{}
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		ak.abandon(s.led)
	}()
	got := func(payload, tid string) {
		s.led.delivered(payload, n.name)
		if s.reliable {
			ak.add(tid, payload)
		}
	}
	startAcks := func() {
		if s.reliable {
			wg.Go(func() { ak.loop(sctx, s.ackDelay) })
		}
	}
	// upAckingOverHTTP: the subscriber is up and acks with POST /ack.
	upAckingOverHTTP := func() {
		ak.send = s.postAck(n)
		s.up()
		startAcks()
	}
	// readStream opens an SSE or subscribe stream, marks the subscriber
	// up (upAckingOverHTTP) and reads the stream's body with read.
	readStream := func(method, path string, read func(body io.Reader) error) error {
		resp, err := openStream(sctx, n, method, path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		upAckingOverHTTP()
		return read(resp.Body)
	}
	switch s.kind {
	case kindSSE:
		return readStream(http.MethodGet, "/queue/"+s.queue+"/events?"+s.relQuery(), func(body io.Reader) error {
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				line, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				var e eventData
				if err := json.Unmarshal([]byte(line), &e); err != nil || e.Transaction == "" {
					continue // the end event
				}
				got(e.Data, e.Transaction)
			}
			return errors.Join(sc.Err(), io.EOF)
		})
	case kindWS, kindMux:
		path := "/queue/" + s.queue + "/ws?" + s.relQuery()
		if s.kind == kindMux {
			path = "/ws"
		}
		c, _, err := websocket.Dial(sctx, "ws://"+n.Addr+path, nil)
		if err != nil {
			return err
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		write := func(ctx context.Context, v any) error {
			b, _ := json.Marshal(v)
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			defer wcancel()
			return c.Write(wctx, websocket.MessageText, b)
		}
		if s.kind == kindMux {
			sub := map[string]any{"op": "subscribe", "queue": s.queue, "reliable": s.reliable}
			if s.reliable {
				sub["timeoutACK"] = s.timeoutACK
			}
			if err := write(sctx, sub); err != nil {
				return err
			}
			ak.send = func(ctx context.Context, tids []string) error {
				return write(ctx, map[string]any{"op": "ack", "queue": s.queue, "transactions": tids})
			}
		} else {
			s.up()
			ak.send = func(ctx context.Context, tids []string) error {
				return write(ctx, map[string]any{"ack": tids})
			}
		}
		startAcks()
		for {
			_, b, err := c.Read(sctx)
			if err != nil {
				return err
			}
			var e eventData
			if err := json.Unmarshal(b, &e); err != nil {
				return fmt.Errorf("ws frame %s: %w", b, err)
			}
			switch {
			case e.Op == "subscribed":
				s.up()
			case e.Op == "error":
				return fmt.Errorf("ws error frame: %s", b)
			case e.Transaction != "" && (e.Op == "" || e.Op == "message"):
				got(e.Data, e.Transaction)
			}
		}
	case kindPop:
		upAckingOverHTTP()
		route := "pop?timeout=2&max=16"
		if s.reliable {
			route = "poprel?timeout=2&max=16&timeoutACK=" + strconv.Itoa(s.timeoutACK)
		}
		for {
			p, err := n.TryPop(sctx, "/queue/"+s.queue+"/"+route)
			if err != nil {
				return err
			}
			for i := range p.Data {
				got(p.Data[i], p.Transactions[i])
			}
		}
	case kindStream:
		route := "subscribe"
		if s.reliable {
			route = "subscriberel?timeoutACK=" + strconv.Itoa(s.timeoutACK)
		}
		return readStream(http.MethodPost, "/queue/"+s.queue+"/"+route, func(body io.Reader) error {
			dec := json.NewDecoder(body)
			for {
				var p testenv.Popped
				if err := dec.Decode(&p); err != nil {
					return err
				}
				for i := range p.Data {
					if i < len(p.Transactions) {
						got(p.Data[i], p.Transactions[i])
					}
				}
			}
		})
	}
	return fmt.Errorf("unknown kind %d", s.kind)
}

// ---- load: producers ----

// producers provision single-queue messages round-robin over the nodes and
// queues at a steady rate, each message with a unique payload recorded in
// the ledger. A request that could not even connect (the node is down) is
// sent to the next node instead: it cannot have reached Redis. Any other
// failure is counted as not acknowledged, never retried (a retry could
// duplicate a message that did get through).
type producers struct {
	nodes  []*node
	queues []string
	led    *ledger
	n      int           // concurrent producers
	every  time.Duration // per producer, between provisions
	seq    atomic.Int64
	errs   sync.Map // error text -> count
}

func (p *producers) run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < p.n; i++ {
		wg.Go(func() { tick.Every(ctx, p.every, p.one) })
	}
	wg.Wait()
}

func (p *producers) one() {
	seq := p.seq.Add(1)
	payload := fmt.Sprintf("m%06d", seq)
	queue := p.queues[int(seq)%len(p.queues)]
	prio := "H"
	if seq%4 == 0 {
		prio = "L"
	}
	p.led.sent(payload, queue)
	for try := 0; try < len(p.nodes); try++ {
		n := p.nodes[(int(seq)+try)%len(p.nodes)]
		// The call is not cancelled by the end of the load: every
		// provision started gets its answer.
		tid, r, err := n.TryProvision(context.Background(), "/trans", testenv.Message(payload, prio, queue), nil)
		if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
			continue
		}
		if err != nil {
			msg := strings.TrimSpace(uuidRE.ReplaceAllString(err.Error(), "<tid>"))
			if len(msg) > 200 {
				msg = msg[:200]
			}
			v, _ := p.errs.LoadOrStore(msg, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		p.led.answered(payload, tid, r.Status)
		return
	}
	p.led.answered(payload, "", 0)
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

func (p *producers) errorSummary() string {
	var parts []string
	p.errs.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%d× %s", v.(*atomic.Int64).Load(), k))
		return true
	})
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

// ---- a fault under load ----

type scenario struct {
	fault, setting string
	nodes          []*node
	queues         []string
	reliable       bool
	timeoutACK     int
	ackDelay       time.Duration
	producers      int
	every          time.Duration
	warmup, after  time.Duration
	drain          time.Duration // how long delivery may take after the load
	inject         func(t *testing.T) string
}

type outcome struct {
	row  row
	led  *ledger
	subs []*subscriber
}

// runScenario starts a subscriber per queue (transports in turn, nodes in
// turn), runs the load, injects the fault after the warm-up, keeps the load
// on for `after`, then waits until everything acknowledged was delivered
// and delivery has been quiet for the ack timeout.
func runScenario(t *testing.T, sc scenario) outcome {
	t.Helper()
	led := newLedger()
	subCtx, stopSubs := context.WithCancel(context.Background())
	var subWG sync.WaitGroup
	defer func() { stopSubs(); subWG.Wait() }()
	var subs []*subscriber
	for i, q := range sc.queues {
		s := newSubscriber(allKinds[i%len(allKinds)], q, sc.nodes, i%len(sc.nodes), sc.reliable, led)
		if sc.timeoutACK > 0 {
			s.timeoutACK = sc.timeoutACK
		}
		if sc.ackDelay > 0 {
			s.ackDelay = sc.ackDelay
		}
		subs = append(subs, s)
		subWG.Go(func() { s.run(subCtx) })
	}
	for _, s := range subs {
		select {
		case <-s.connected:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s subscriber of %s did not connect: %v", s.kind, s.queue, s.lastErr.Load())
		}
	}
	prod := &producers{nodes: sc.nodes, queues: sc.queues, led: led, n: sc.producers, every: sc.every}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() { prod.run(loadCtx); close(loadDone) }()
	start := time.Now()
	<-time.After(sc.warmup)
	recovery := sc.inject(t)
	<-time.After(sc.after)
	stopLoad()
	<-loadDone
	loadTook := time.Since(start)
	quiet := time.Duration(sc.timeoutACK)*time.Second + 1500*time.Millisecond
	if !sc.reliable {
		quiet = 1500 * time.Millisecond
	}
	led.waitDelivered(t, sc.drain, quiet)
	r := led.count()
	r.Fault, r.Setting, r.Recovery = sc.fault, sc.setting, recovery
	report(t, r)
	t.Logf("load: %d producers for %v, %d subscribers (%d sessions), deliveries per node %v, %d acks abandoned by dead connections",
		sc.producers, loadTook.Round(100*time.Millisecond), len(subs), totalSessions(subs), led.perNode(), led.abandonedCount())
	if e := prod.errorSummary(); e != "" {
		t.Logf("provisions not acknowledged:\n%s", e)
	}
	for _, n := range sc.nodes {
		if w := logSummary(n.Log()); w != "" {
			t.Logf("gateway %s warnings and errors:\n%s", n.name, w)
		}
	}
	led.mu.Lock()
	unknown := led.unknown
	led.mu.Unlock()
	if unknown > 0 {
		t.Errorf("%d deliveries of payloads never provisioned", unknown)
	}
	return outcome{row: r, led: led, subs: subs}
}

func totalSessions(subs []*subscriber) int64 {
	var n int64
	for _, s := range subs {
		n += s.sessions.Load()
	}
	return n
}

// queueNames makes n queue ids with a prefix.
func queueNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

var logMsgRE = regexp.MustCompile(`level=(WARN|ERROR) msg=("[^"]*"|\S+)`)

// logSummary counts a gateway log's WARN and ERROR lines by message.
func logSummary(log string) string {
	counts := map[string]int{}
	example := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		if m := logMsgRE.FindStringSubmatch(line); m != nil {
			k := m[1] + " " + m[2]
			counts[k]++
			if _, ok := example[k]; !ok {
				_, rest, _ := strings.Cut(line, m[0])
				if len(rest) > 240 {
					rest = rest[:240] + "..."
				}
				example[k] = strings.TrimSpace(rest)
			}
		}
	}
	var out []string
	for k, v := range counts {
		out = append(out, fmt.Sprintf("  %5d× %s (first: %s)", v, k, example[k]))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
