package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/internal/testenv"
)

// TestMain raises the default parallelism: the subtests spend their time
// waiting on pops, timeouts and expiries in other processes, not on the
// CPU, and the default (GOMAXPROCS, 2 on small CI boxes) would serialise
// them. An explicit -parallel wins.
func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			explicit = true
		}
	})
	if !explicit {
		_ = flag.Set("test.parallel", "32")
	}
	os.Exit(m.Run())
}

const jsonCT = "application/json"

// uuidV4 is the shape of a transaction id: a lower-case version 4 UUID.
var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// node is one gateway process seen from a client.
type node struct {
	g    *testenv.Gateway
	base string // http://127.0.0.1:PORT
	host string // 127.0.0.1:PORT, the Host header clients send
	hc   *http.Client
}

func newTransport() *http.Transport {
	return &http.Transport{
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     30 * time.Second,
	}
}

// startNode starts a gateway on redisURL (the shared harness,
// testenv.StartNode) and fails the test if the gateway's race detector
// reported anything by the end of the test.
func startNode(t *testing.T, redisURL string, opts ...testenv.GatewayOption) *node {
	t.Helper()
	tn := testenv.StartNode(t, redisURL, opts...)
	tn.HC.Timeout = 2 * time.Minute
	return &node{g: tn.Gateway, base: tn.URL, host: tn.Addr, hc: tn.HC}
}

// startRedisNode starts a redis-server (testenv.StartRedis with ropts) and
// one gateway on it: the opening of most tests here.
func startRedisNode(t *testing.T, ropts ...testenv.RedisOption) (*testenv.Redis, *node) {
	t.Helper()
	r := testenv.StartRedis(t, ropts...)
	return r, startNode(t, r.URL())
}

// response is an HTTP answer read in full.
type response = testenv.Response

// req is one request to send.
type req struct {
	method string
	path   string
	ctype  string // Content-Type; "" sends none
	body   []byte
	accept string
	host   string      // Host header; "" = the gateway's address
	header http.Header // more request headers
	ctx    context.Context
}

func (n *node) send(t testing.TB, r req) response {
	t.Helper()
	resp, err := n.try(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return resp
}

func (n *node) try(r req) (response, error) {
	ctx := r.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	c := testenv.Node{Gateway: n.g, Base: n.base, HC: n.hc}
	return c.Do(ctx, testenv.Request{Method: r.method, Path: r.path, ContentType: r.ctype, Body: r.body,
		Accept: r.accept, Host: r.host, Header: r.header})
}

func (n *node) get(t testing.TB, path string) response {
	t.Helper()
	return n.send(t, req{method: http.MethodGet, path: path})
}

func (n *node) delete(t testing.TB, path string) response {
	t.Helper()
	return n.send(t, req{method: http.MethodDelete, path: path})
}

// postJSON sends v (a []byte or string is sent as is, anything else is
// marshalled) with Content-Type application/json.
func (n *node) postJSON(t testing.TB, path string, v any) response {
	t.Helper()
	return n.send(t, req{method: http.MethodPost, path: path, ctype: jsonCT, body: jsonBody(t, v)})
}

func (n *node) putJSON(t testing.TB, path string, v any) response {
	t.Helper()
	return n.send(t, req{method: http.MethodPut, path: path, ctype: jsonCT, body: jsonBody(t, v)})
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	r, err := testenv.JSON(http.MethodPost, "", v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return r.Body
}

// decodeOne decodes b as exactly one JSON value (a second value after it,
// e.g. two answers written to one response, is an error).
func decodeOne(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("more than one JSON value in the body (second: %v, err %v)", extra, err)
	}
	return v, nil
}

// normal turns v into what decoding its JSON gives (maps of any, float64
// numbers), for comparison with decoded bodies.
func normal(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

// expectJSON checks the status, a JSON content type and that the body is
// exactly one JSON value equal to want.
func expectJSON(t testing.TB, r response, status int, want any) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, jsonCT) {
		t.Errorf("Content-Type %q, want %s", ct, jsonCT)
	}
	got, err := decodeOne(r.Body)
	if err != nil {
		t.Fatalf("%v; body %s", err, r)
	}
	if d := cmp.Diff(normal(t, want), got); d != "" {
		t.Fatalf("body mismatch (-want +got):\n%s\nbody: %s", d, r)
	}
}

// object decodes a JSON object answer with the given status.
func object(t testing.TB, r response, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r)
	}
	v, err := decodeOne(r.Body)
	if err != nil {
		t.Fatalf("%v; body %s", err, r)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("body is not a JSON object: %s", r)
	}
	return m
}

// errs is the {"errors": [...]} body.
func errs(e ...string) map[string]any { return map[string]any{"errors": e} }

// badContentType is the answer to a JSON route called without
// Content-Type: application/json: the classic error string, unchanged, and
// a hint (docs/API.md, Errors).
var badContentType = map[string]any{"errors": []string{"invalid content-type header"},
	"hint": "this route expects a JSON body sent with the header Content-Type: application/json"}

// --- classic API shortcuts ---

// msg is a provisioning body.
type msg map[string]any

// target is the `queue` array for queue ids.
func target(ids ...string) []map[string]string { return testenv.Targets(ids...) }

// provision POSTs body to <prefix>/trans and returns the transaction id.
func (n *node) provision(t testing.TB, prefix string, body any) string {
	t.Helper()
	return n.provisionAt(t, prefix+"/trans", body)
}

// provisionAt POSTs body to path (e.g. "/trans?delay=2") and returns the
// transaction id.
func (n *node) provisionAt(t testing.TB, path string, body any) string {
	t.Helper()
	return n.provisionWith(t, path, body, nil)
}

// provisionWith is provisionAt with more request headers.
func (n *node) provisionWith(t testing.TB, path string, body any, header http.Header) string {
	t.Helper()
	c := testenv.Node{Gateway: n.g, Base: n.base, HC: n.hc}
	tid, _, err := c.TryProvision(context.Background(), path, jsonBody(t, body), header)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

// send1 provisions one message with payload and priority to queues at the
// root namespace.
func (n *node) send1(t testing.TB, payload, prio string, queues ...string) string {
	t.Helper()
	return n.provision(t, "", msg{"payload": payload, "priority": prio, "queue": target(queues...)})
}

// popped is a pop / peek answer.
type popped = testenv.Popped

// parsePop checks the exact shape of a pop or peek answer and decodes it.
func parsePop(t testing.TB, r response) popped {
	t.Helper()
	p, err := testenv.ParsePop(r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pop runs POST <prefix>/queue/<q>/pop?<query>.
func (n *node) pop(t testing.TB, prefix, q, query string) popped {
	t.Helper()
	return parsePop(t, n.send(t, req{method: http.MethodPost, path: prefix + "/queue/" + q + "/pop?" + query}))
}

func (n *node) peek(t testing.TB, prefix, q, query string) popped {
	t.Helper()
	return parsePop(t, n.get(t, prefix+"/queue/"+q+"/peek?"+query))
}

// queueInfo is GET <prefix>/queue/<q> as an object.
func (n *node) queueInfo(t testing.TB, prefix, q string) map[string]any {
	t.Helper()
	return object(t, n.get(t, prefix+"/queue/"+q), http.StatusOK)
}

func (n *node) blocked(t testing.TB, q string) bool {
	t.Helper()
	m := n.queueInfo(t, "", q)
	b, ok := m["blocked"].(bool)
	if !ok {
		t.Fatalf("GET /queue/%s: blocked is not a bool: %v", q, m)
	}
	return b
}

// expectPop compares a pop / peek answer with the expected payloads and ids.
func expectPop(t testing.TB, got popped, payloads, tids []string) {
	t.Helper()
	if payloads == nil {
		payloads = []string{}
	}
	if tids == nil {
		tids = []string{}
	}
	want := popped{OK: true, Data: payloads, Transactions: tids}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("pop answer mismatch (-want +got):\n%s", d)
	}
}

// qn makes a queue id unique to the running (sub)test.
func qn(t testing.TB, suffix string) string {
	name := strings.NewReplacer("/", ".", " ", "_", "#", "_", "?", "_").Replace(t.Name())
	if suffix != "" {
		name += "-" + suffix
	}
	return name
}

// parallelQ runs f as a parallel subtest named name, with q a queue id
// unique to that subtest (qn).
func parallelQ(t *testing.T, name string, f func(t *testing.T, q string)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		f(t, qn(t, ""))
	})
}

// eventually polls cond every 20 ms until it holds or timeout passes
// (testenv.Eventually).
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, detail ...func() string) time.Duration {
	t.Helper()
	return testenv.Eventually(t, timeout, what, cond, detail...)
}

// asyncPop runs a pop in the background; the answer arrives on the channel.
type popOutcome struct {
	p    popped
	r    response
	err  error
	took time.Duration
}

func (n *node) asyncPop(ctx context.Context, prefix, q, query string) <-chan popOutcome {
	return n.asyncVerb(ctx, prefix, q, "pop", query)
}

// asyncVerb is asyncPop with POST <prefix>/queue/<q>/<verb> (pop, or a
// route that answers like it, e.g. reliable pops).
func (n *node) asyncVerb(ctx context.Context, prefix, q, verb, query string) <-chan popOutcome {
	ch := make(chan popOutcome, 1)
	start := time.Now()
	go func() {
		r, err := n.try(req{method: http.MethodPost, path: prefix + "/queue/" + q + "/" + verb + "?" + query, ctx: ctx})
		out := popOutcome{r: r, err: err, took: time.Since(start)}
		if err == nil && r.Status == http.StatusOK {
			out.err = json.Unmarshal(r.Body, &out.p)
		} else if err == nil {
			out.err = fmt.Errorf("%s answered %s", verb, r)
		}
		ch <- out
	}()
	return ch
}

func waitPop(t testing.TB, ch <-chan popOutcome, timeout time.Duration) popOutcome {
	t.Helper()
	select {
	case o := <-ch:
		if o.err != nil {
			t.Fatalf("pop: %v", o.err)
		}
		return o
	case <-time.After(timeout):
		t.Fatalf("pop did not answer within %v", timeout)
		return popOutcome{}
	}
}
