package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Node is a gateway process seen from a client: the black-box suites
// (e2e, scaletest, historytest, uitest) talk to it over real HTTP through
// these helpers.
type Node struct {
	*Gateway
	// Base is where requests go: the gateway's URL unless changed (e.g.
	// to its TLS port).
	Base string
	// HC sends short requests; its timeout (a minute by default) may be
	// changed before the node is used.
	HC *http.Client
	// Stream sends streams and long polls: no overall timeout (the
	// request's context bounds it).
	Stream *http.Client
}

// StartNode starts a gateway on redisURL (StartGateway) and returns a
// client for it (NewNode).
func StartNode(t testing.TB, redisURL string, opts ...GatewayOption) *Node {
	t.Helper()
	return NewNode(t, StartGateway(t, redisURL, opts...))
}

// NewNode returns a client for a running gateway. When the test ends its
// idle connections are closed and the test fails if the gateway's race
// detector reported anything.
func NewNode(t testing.TB, g *Gateway) *Node {
	t.Helper()
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second}
	n := &Node{Gateway: g, Base: g.URL, HC: &http.Client{Transport: tr, Timeout: time.Minute}, Stream: &http.Client{Transport: tr}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if strings.Contains(g.Log(), "WARNING: DATA RACE") {
			t.Errorf("gateway %s reported a data race:\n%s", g.Addr, g.Log())
		}
	})
	return n
}

// Request is one request to send to a node.
type Request struct {
	Method      string
	Path        string // with the query
	ContentType string // "" sends none
	Body        []byte // nil sends none
	Accept      string
	Host        string      // Host header; "" = the gateway's address
	Header      http.Header // more request headers
	Stream      bool        // send with the Stream client (no overall timeout)
}

// Response is an HTTP answer read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// String is the status and the start of the body, for failure messages.
func (r Response) String() string {
	b := r.Body
	if len(b) > 600 {
		b = append(b[:600:600], "..."...)
	}
	return fmt.Sprintf("%d %s", r.Status, b)
}

// Do sends r and reads the whole answer.
func (n *Node) Do(ctx context.Context, r Request) (Response, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, r.Method, n.Base+r.Path, body)
	if err != nil {
		return Response{}, err
	}
	if r.ContentType != "" {
		hr.Header.Set("Content-Type", r.ContentType)
	}
	if r.Accept != "" {
		hr.Header.Set("Accept", r.Accept)
	}
	for k, vs := range r.Header {
		hr.Header[k] = vs
	}
	if r.Host != "" {
		hr.Host = r.Host
	}
	hc := n.HC
	if r.Stream {
		hc = n.Stream
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// JSON is a request with v as its JSON body (a []byte or string is sent as
// is, anything else is marshalled; nil sends no body and no Content-Type).
func JSON(method, path string, v any) (Request, error) {
	r := Request{Method: method, Path: path}
	switch b := v.(type) {
	case nil:
		return r, nil
	case []byte:
		r.Body = b
	case string:
		r.Body = []byte(b)
	default:
		var err error
		if r.Body, err = json.Marshal(v); err != nil {
			return r, err
		}
	}
	r.ContentType = "application/json"
	return r, nil
}

// DoJSON sends v as a JSON body (see JSON) and reads the whole answer.
func (n *Node) DoJSON(ctx context.Context, method, path string, v any) (Response, error) {
	r, err := JSON(method, path, v)
	if err != nil {
		return Response{}, err
	}
	return n.Do(ctx, r)
}

// Must sends body (see JSON) with method to path and fails the test unless
// the answer has status want.
func (n *Node) Must(t testing.TB, method, path string, body any, want int) Response {
	t.Helper()
	r, err := n.DoJSON(context.Background(), method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.Status != want {
		t.Fatalf("%s %s = %s, want %d", method, path, r, want)
	}
	return r
}

// Get is GET path; it fails the test if no answer arrives.
func (n *Node) Get(t testing.TB, path string) Response {
	t.Helper()
	r, err := n.Do(context.Background(), Request{Method: http.MethodGet, Path: path})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

// TryGetJSON decodes the answer to GET path into v; the answer must be 200
// with a JSON body.
func (n *Node) TryGetJSON(ctx context.Context, path string, v any) error {
	r, err := n.Do(ctx, Request{Method: http.MethodGet, Path: path})
	if err != nil {
		return err
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s", path, n.Addr, r)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("GET %s on %s: %w: %s", path, n.Addr, err, r)
	}
	return nil
}

// GetJSON is TryGetJSON that fails the test on an error.
func (n *Node) GetJSON(t testing.TB, path string, v any) {
	t.Helper()
	if err := n.TryGetJSON(context.Background(), path, v); err != nil {
		t.Fatal(err)
	}
}

// uuidV4 is the shape of a transaction id: a lower-case version 4 UUID.
var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// IsTransactionID reports whether s has the shape of a transaction id (a
// lower-case version 4 UUID).
func IsTransactionID(s string) bool { return uuidV4.MatchString(s) }

// Targets is the `queue` array of a provisioning body for queue ids.
func Targets(ids ...string) []map[string]string {
	out := make([]map[string]string, len(ids))
	for i, id := range ids {
		out[i] = map[string]string{"id": id}
	}
	return out
}

// Message is a provisioning body: payload and priority for queues.
func Message(payload, prio string, queues ...string) map[string]any {
	return map[string]any{"payload": payload, "priority": prio, "queue": Targets(queues...)}
}

// TryProvision POSTs body (see JSON) to path (e.g. "/trans",
// "/ns/trans?delay=2") with the given extra headers (nil: none) and
// returns the transaction id of the answer, which must be exactly
// {"ok":true,"data":"<uuid v4>"}. The answer is returned in every case
// where one arrived.
func (n *Node) TryProvision(ctx context.Context, path string, body any, header http.Header) (string, Response, error) {
	r, err := JSON(http.MethodPost, path, body)
	if err != nil {
		return "", Response{}, err
	}
	r.Header = header
	resp, err := n.Do(ctx, r)
	if err != nil {
		return "", resp, err
	}
	if resp.Status != http.StatusOK {
		return "", resp, fmt.Errorf("POST %s answered %s", path, resp)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		return "", resp, fmt.Errorf("POST %s answer %s: %w", path, resp, err)
	}
	tid, _ := m["data"].(string)
	if len(m) != 2 || m["ok"] != true || !IsTransactionID(tid) {
		return "", resp, fmt.Errorf(`POST %s answer %s, want {"ok":true,"data":"<uuid v4>"}`, path, resp)
	}
	return tid, resp, nil
}

// Provision provisions one message with payload and priority to queues at
// the root namespace and returns its transaction id; it fails the test
// otherwise.
func (n *Node) Provision(t testing.TB, payload, prio string, queues ...string) string {
	t.Helper()
	tid, _, err := n.TryProvision(context.Background(), "/trans", Message(payload, prio, queues...), nil)
	if err != nil {
		t.Fatalf("provision on %s: %v", n.Addr, err)
	}
	return tid
}

// Popped is a pop or peek answer.
type Popped struct {
	OK           bool     `json:"ok"`
	Data         []string `json:"data"`
	Transactions []string `json:"transactions"`
}

// ParsePop decodes a pop or peek answer, which must be 200 and exactly
// {"ok":true,"data":[...],"transactions":[...]} with arrays of one length.
func ParsePop(r Response) (Popped, error) {
	if r.Status != http.StatusOK {
		return Popped{}, fmt.Errorf("pop answered %s", r)
	}
	var m map[string]json.RawMessage
	var p Popped
	if err := json.Unmarshal(r.Body, &m); err != nil {
		return Popped{}, fmt.Errorf("pop answer %s: %w", r, err)
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || len(m) != 3 || !p.OK || p.Data == nil || p.Transactions == nil || len(p.Data) != len(p.Transactions) {
		return Popped{}, errors.Join(fmt.Errorf(`pop answer %s, want {"ok":true,"data":[...],"transactions":[...]} with parallel arrays`, r), err)
	}
	return p, nil
}

// TryPop sends POST path (e.g. "/queue/q/pop?timeout=1") on the stream
// client and decodes the answer (ParsePop).
func (n *Node) TryPop(ctx context.Context, path string) (Popped, error) {
	r, err := n.Do(ctx, Request{Method: http.MethodPost, Path: path, Stream: true})
	if err != nil {
		return Popped{}, err
	}
	return ParsePop(r)
}

// Pop is TryPop that fails the test on an error.
func (n *Node) Pop(t testing.TB, path string) Popped {
	t.Helper()
	return within(t, 2*time.Minute, "POST "+path+" on "+n.Addr, func(ctx context.Context) (Popped, error) { return n.TryPop(ctx, path) })
}

// Peek is GET path (e.g. "/queue/q/peek?max=5") decoded as a peek answer;
// it fails the test on an error.
func (n *Node) Peek(t testing.TB, path string) Popped {
	t.Helper()
	p, err := ParsePop(n.Get(t, path))
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, n.Addr, err)
	}
	return p
}
