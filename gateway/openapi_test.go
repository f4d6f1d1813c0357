package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	oaerrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/gateway/openapi"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/internal/testenv"
)

// The contract test: gateway/openapi/openapi.json is checked against a real
// gateway (in process, real Redis, real MongoDB for history, a TLS port for
// the secure boxes). Every request the test sends and every answer it gets
// is validated against the description with libopenapi-validator (OpenAPI
// 3.1, JSON Schema 2020-12); every operation of the description must have
// been exercised with a valid request and a valid answer; and the set of
// routes the gateway registers must equal the set of operations described.

// contractNode is an in-process gateway wired as internal/app wires one,
// serving its plain and TLS handlers over real loopback listeners.
type contractNode struct {
	srv         *gateway.Server
	metrics     *gateway.Metrics
	plain, tls  string
	plainClient *http.Client
	tlsClient   *http.Client
}

func startContractNode(t *testing.T, redisURL string, hist *history.Store, mutate func(*gateway.Options)) *contractNode {
	t.Helper()
	o := gateway.Options{RedisMode: "single", MaxBody: 64 << 10}
	if mutate != nil {
		mutate(&o)
	}
	tn := startTestNode(t, redisURL, nodeSetup{opts: o, history: hist})
	n := &contractNode{srv: tn.srv, metrics: tn.metrics, plain: tn.plain.URL, tls: tn.secure.URL, plainClient: tn.plain.Client(), tlsClient: tn.secure.Client()}
	n.plainClient.Timeout = 30 * time.Second
	n.tlsClient.Timeout = 30 * time.Second
	return n
}

// contract validates traffic against the OpenAPI description and records
// which operations were exercised.
type contract struct {
	model  *v3.Document
	v      validator.Validator
	schema schema_validation.SchemaValidator
	opts   *config.ValidationOptions
	mu     sync.Mutex
	hit    map[string]bool // "GET /queue/{id}": a valid request got a valid answer
}

func newContract(t *testing.T) *contract {
	t.Helper()
	doc, err := libopenapi.NewDocument(openapi.JSON)
	if err != nil {
		t.Fatalf("parse openapi.json: %v", err)
	}
	opts := []config.Option{config.WithFormatAssertions()}
	v, errs := validator.NewValidator(doc, opts...)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.json is not a valid OpenAPI document:\n%s", describe(verrs))
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("openapi.json model: %v", err)
	}
	if got := m.Model.Version; !strings.HasPrefix(got, "3.1") {
		t.Fatalf("openapi.json is OpenAPI %q, want 3.1", got)
	}
	return &contract{model: &m.Model, v: v, schema: schema_validation.NewSchemaValidator(opts...),
		opts: config.NewValidationOptions(opts...), hit: map[string]bool{}}
}

func describe(errs []*oaerrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s: %s", e.Message, e.Reason)
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s at %s", s.Reason, s.FieldPath)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// call is one request of the contract test.
type call struct {
	method string
	path   string // with the query
	header http.Header
	body   string
	status int // the status the gateway must answer
	// invalid marks a request that breaks the description on purpose (a
	// missing field, a bad id): the validator must refuse it, and the
	// answer must still be described.
	invalid bool
}

func (c call) String() string { return c.method + " " + c.path }

// validationRequest rebuilds the request of c for the validator (which
// reads its body).
func validationRequest(t *testing.T, base string, c call) *http.Request {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	return req
}

// check validates the request of c and the answer resp (whose body is
// body) and records the operation as exercised when both are valid.
func (ct *contract) check(t *testing.T, base string, c call, resp *http.Response, body []byte) {
	t.Helper()
	req := validationRequest(t, base, c)
	reqOK, reqErrs := ct.v.ValidateHttpRequest(req)
	switch {
	case c.invalid && reqOK:
		t.Errorf("%s: the description accepts this request, which the gateway refuses with %d", c, resp.StatusCode)
	case !c.invalid && !reqOK:
		t.Errorf("%s: request does not match the description:\n%s", c, describe(reqErrs))
	}
	vresp := &http.Response{StatusCode: resp.StatusCode, Status: resp.Status, Header: resp.Header.Clone(),
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}
	respOK, respErrs := ct.v.ValidateHttpResponse(validationRequest(t, base, c), vresp)
	if !respOK {
		t.Errorf("%s: answer %d %q does not match the description:\n%s", c, resp.StatusCode, truncate(body), describe(respErrs))
	}
	if reqOK && respOK && !c.invalid {
		pi, _, tmpl := paths.FindPath(validationRequest(t, base, c), ct.model, ct.opts)
		if pi == nil {
			t.Errorf("%s: no path of the description matches", c)
			return
		}
		ct.mu.Lock()
		ct.hit[c.method+" "+tmpl] = true
		ct.mu.Unlock()
	}
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// do sends c, checks the status and validates both sides.
func (ct *contract) do(t *testing.T, cl *http.Client, base string, c call) []byte {
	t.Helper()
	req := validationRequest(t, base, c)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: read answer: %v", c, err)
	}
	if resp.StatusCode != c.status {
		t.Fatalf("%s: status %d, want %d: %s", c, resp.StatusCode, c.status, truncate(body))
	}
	ct.check(t, base, c, resp, body)
	return body
}

// stream opens a streaming request, reads until frame returns the first
// complete frame(s) to validate, then hangs up and validates what was read
// as the answer's body.
func (ct *contract) stream(t *testing.T, cl *http.Client, base string, c call, frame func(read []byte) []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := validationRequest(t, base, c).WithContext(ctx)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != c.status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: status %d, want %d: %s", c, resp.StatusCode, c.status, truncate(b))
	}
	var read []byte
	buf := make([]byte, 4096)
	for {
		if f := frame(read); f != nil {
			cancel()
			ct.check(t, base, c, resp, f)
			return f
		}
		n, err := resp.Body.Read(buf)
		read = append(read, buf[:n]...)
		if err != nil {
			t.Fatalf("%s: stream ended before a frame (%v): %q", c, err, read)
		}
	}
}

// dialWS opens a WebSocket and validates the upgrade request and answer.
func (ct *contract) dialWS(t *testing.T, cl *http.Client, base string, c call) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + c.path
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: cl, HTTPHeader: c.header})
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	if resp.StatusCode != c.status {
		t.Fatalf("%s: status %d, want %d", c, resp.StatusCode, c.status)
	}
	// The validator sees the upgrade request as the client sent it.
	h := c.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	for _, k := range []string{"Connection", "Upgrade", "Sec-WebSocket-Version", "Sec-WebSocket-Key"} {
		if v := resp.Request.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	c.header = h
	ct.check(t, base, c, resp, nil)
	return conn
}

// frame validates a WebSocket or SSE frame against a schema of the
// description's components.
func (ct *contract) frame(t *testing.T, schema string, data []byte) {
	t.Helper()
	sp, ok := ct.model.Components.Schemas.Get(schema)
	if !ok {
		t.Fatalf("components.schemas.%s is missing", schema)
	}
	if ok, errs := ct.schema.ValidateSchemaString(sp.Schema(), string(data)); !ok {
		t.Errorf("frame %s does not match components.schemas.%s:\n%s", data, schema, describe(errs))
	}
}

func wsRead(t *testing.T, conn *websocket.Conn) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return b
}

func (ct *contract) wsWrite(t *testing.T, conn *websocket.Conn, schema string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	ct.frame(t, schema, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

// operations lists the description's operations as "METHOD /path".
func (ct *contract) operations() []string {
	var out []string
	for p, item := range ct.model.Paths.PathItems.FromOldest() {
		for m := range item.GetOperations().FromOldest() {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(out)
	return out
}

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// routeTemplate writes an echo route path as an OpenAPI path template.
func routeTemplate(p string) string {
	p = echoParam.ReplaceAllString(p, "{$1}")
	if strings.HasSuffix(p, "/*") {
		p = strings.TrimSuffix(p, "*") + "{path}"
	}
	return p
}

// registeredRoutes lists the gateway's routes as "METHOD /path" templates.
func registeredRoutes(t *testing.T, srv *gateway.Server) []string {
	t.Helper()
	routes := srv.Routes()
	if len(routes) == 0 {
		t.Fatal("gateway.Server.Routes listed no route")
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range routes {
		if r.Method == echo.RouteNotFound { // group catch-alls of echo, not routes
			continue
		}
		k := r.Method + " " + routeTemplate(r.Path)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// TestOpenAPIRoutes: the description's operations are exactly the routes
// the gateway registers.
func TestOpenAPIRoutes(t *testing.T) {
	ct := newContract(t)
	srv := gateway.New(gateway.Options{})
	routes := registeredRoutes(t, srv)
	ops := ct.operations()
	if missing := minus(routes, ops); len(missing) > 0 {
		t.Errorf("routes the gateway registers without an entry in gateway/openapi/openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if extra := minus(ops, routes); len(extra) > 0 {
		t.Errorf("operations of gateway/openapi/openapi.json the gateway does not register:\n  %s", strings.Join(extra, "\n  "))
	}
}

// TestOpenAPIOrgMirrorsRoot: every route under /org/{org} is described as
// its twin at the root (the same parameters, bodies and answers), so the
// two copies in the file cannot drift apart.
func TestOpenAPIOrgMirrorsRoot(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	strip := func(raw json.RawMessage) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "operationId")
		delete(m, "summary")
		delete(m, "description")
		return m
	}
	orgs := 0
	for p, item := range doc.Paths {
		root, ok := strings.CutPrefix(p, "/org/{org}")
		if !ok {
			continue
		}
		orgs++
		twin, ok := doc.Paths[root]
		if !ok {
			t.Errorf("%s has no twin %s", p, root)
			continue
		}
		methods := func(item map[string]json.RawMessage) []string {
			var out []string
			for m := range item {
				if m != "parameters" {
					out = append(out, m)
				}
			}
			sort.Strings(out)
			return out
		}
		if !reflect.DeepEqual(methods(item), methods(twin)) {
			t.Errorf("%s and %s differ in their methods", p, root)
		}
		var ps, rs []any
		_ = json.Unmarshal(item["parameters"], &ps)
		_ = json.Unmarshal(twin["parameters"], &rs)
		if len(ps) == 0 || !reflect.DeepEqual(ps[0], map[string]any{"$ref": "#/components/parameters/org"}) ||
			len(ps[1:]) != len(rs) || len(rs) > 0 && !reflect.DeepEqual(ps[1:], rs) {
			t.Errorf("%s: parameters are not {org} followed by those of %s", p, root)
		}
		for m, op := range item {
			if m == "parameters" {
				continue
			}
			if !reflect.DeepEqual(strip(op), strip(twin[m])) {
				t.Errorf("%s %s differs from %s %s", strings.ToUpper(m), p, strings.ToUpper(m), root)
			}
		}
	}
	if orgs == 0 {
		t.Fatal("no /org/{org} path in the description")
	}
}

// TestOpenAPIServed: GET /openapi.json answers the description.
func TestOpenAPIServed(t *testing.T) {
	r := testenv.StartRedis(t)
	n := startContractNode(t, r.URL(), nil, nil)
	resp, err := n.plainClient.Get(n.plain + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !bytes.Equal(b, openapi.JSON) {
		t.Fatalf("GET /openapi.json: %d %s, %d bytes (want the %d bytes of openapi.json)", resp.StatusCode, resp.Header.Get("Content-Type"), len(b), len(openapi.JSON))
	}
}

func jsonHeader() http.Header { return http.Header{"Content-Type": {"application/json"}} }

func provisionBody(q, payload string) string {
	return `{"payload":` + mustJSON(payload) + `,"priority":"H","queue":[{"id":` + mustJSON(q) + `}]}`
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestOpenAPIContract drives every operation of the description against a
// real gateway and validates every request and answer.
func TestOpenAPIContract(t *testing.T) {
	t.Parallel()
	ct := newContract(t)
	r := testenv.StartRedis(t)
	hist := openHistory(t)
	n := startContractNode(t, r.URL(), hist, nil)
	noHist := startContractNode(t, r.URL(), nil, nil)

	for _, prefix := range []string{"", "/org/acme"} {
		t.Run("classic"+strings.ReplaceAll(prefix, "/", "_"), func(t *testing.T) {
			contractClassic(t, ct, n, noHist, prefix)
		})
		t.Run("secure"+strings.ReplaceAll(prefix, "/", "_"), func(t *testing.T) {
			contractSecure(t, ct, n, prefix)
		})
	}
	t.Run("operations", func(t *testing.T) { contractOperations(t, ct, n) })
	t.Run("outage", func(t *testing.T) { contractOutage(t, ct) })
	t.Run("limits", func(t *testing.T) { contractLimits(t, ct, r.URL()) })

	var missed []string
	for _, op := range ct.operations() {
		if !ct.hit[op] {
			missed = append(missed, op)
		}
	}
	if len(missed) > 0 {
		t.Errorf("operations of the description that no valid request exercised with a valid answer:\n  %s", strings.Join(missed, "\n  "))
	}
}

// contractClassic exercises the transaction, queue, stream, WebSocket,
// group and history routes of the plain port under prefix ("" or
// "/org/<org>").
func contractClassic(t *testing.T, ct *contract, n, noHist *contractNode, prefix string) {
	cl, base := n.plainClient, n.plain
	q := "q-" + fmt.Sprint(time.Now().UnixNano())
	provisionTo := func(queue, payload string) string {
		var a struct{ Data string }
		b := ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: provisionBody(queue, payload), status: 200})
		if err := json.Unmarshal(b, &a); err != nil || a.Data == "" {
			t.Fatalf("provision: %s", b)
		}
		return a.Data
	}

	// Provisioning.
	tid := provisionTo(q, "hello")
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), status: 200,
		body: `{"payload":{"a":1},"priority":"L","queue":[{"id":"` + q + `-x"}],"callback":"http://127.0.0.1:1/cb","expirationDelay":60,"note":"kept"}`})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans?delay=3600", header: jsonHeader(), body: provisionBody(q+"-later", "x"), status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans?delay=0", header: jsonHeader(), body: provisionBody(q, "x"), status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: http.Header{"Content-Type": {"text/plain"}}, body: "hi", status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: `{"payload":"p","queue":[{"id":"` + q + `"}]}`, status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: `{"payload":"p","priority":"H","queue":[]}`, status: 400})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: provisionBody(q, strings.Repeat("x", 70<<10)), status: 413})

	// Idempotent provisioning: a repeat answers the first tid, another
	// body with the same key is a 409.
	key := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-" + q}}
	first := ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: key, body: provisionBody(q+"-once", "once"), status: 200})
	again := ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: key, body: provisionBody(q+"-once", "once"), status: 200})
	if !bytes.Equal(first, again) {
		t.Errorf("a repeated Idempotency-Key answered %s, then %s", first, again)
	}
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: key, body: provisionBody(q+"-once", "twice"), status: 409})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"has space"}},
		body: provisionBody(q+"-once", "once"), status: 400, invalid: true})

	// Transactions.
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid, status: 200})
	for _, f := range []string{"All", "Pending", "summary"} {
		ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "?queues=" + f, status: 200})
	}
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "?queues=Nope", status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid, header: http.Header{"Accept": {"text/html"}}, status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/00000000-0000-4000-8000-000000000000", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "/state", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "/state/Pending", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "/state/summary", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "/state/Nope", status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/trans/" + tid, header: jsonHeader(), body: `{"payload":"hello again","expirationDate":2000000000}`, status: 200})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/trans/" + tid, header: jsonHeader(), body: `{"priority":"L"}`, status: 200})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/trans/00000000-0000-4000-8000-000000000000", header: jsonHeader(), body: `{"payload":"x"}`, status: 400})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/trans/" + tid, header: jsonHeader(), body: `{"expirationDate":-1}`, status: 400, invalid: true})
	gone := provisionTo(q+"-gone", "bye")
	ct.do(t, cl, base, call{method: "DELETE", path: prefix + "/trans/" + gone, status: 200})

	// Queues: peek, pop, reliable pop and ack, queue info.
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "/peek?max=10", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + strings.Repeat("x", 300) + "/peek", status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q, status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q, header: http.Header{"Accept": {"text/html"}}, status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "/pop?max=1&timeout=1", status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "/pop?timeout=0", status: 200}) // empty after 1 s
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q, status: 200})                     // with lastPop
	rel := provisionTo(q, "reliable")
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "/poprel?max=5&timeout=1&timeoutACK=60", status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "/ack", header: jsonHeader(),
		body: `{"transactions":["` + rel + `","00000000-0000-4000-8000-000000000000"]}`, status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "/ack", header: jsonHeader(), body: `{}`, status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue", header: jsonHeader(), body: `{"queue":"box","user":"u","password":"p"}`, status: 400})

	// HTTP streaming: one newline-terminated object per message.
	line := func(read []byte) []byte {
		if i := bytes.IndexByte(read, '\n'); i >= 0 {
			return read[:i]
		}
		return nil
	}
	for _, route := range []string{"subscribe", "subscriberel?timeoutACK=30"} {
		provisionTo(q+"-s", "streamed")
		ct.stream(t, cl, base, call{method: "POST", path: prefix + "/queue/" + q + "-s/" + route, status: 200}, line)
	}

	// Server-Sent Events.
	provisionTo(q+"-e", "evented")
	sse := ct.stream(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "-e/events?reliable=0", status: 200}, func(read []byte) []byte {
		if i := bytes.Index(read, []byte("event: message\n")); i >= 0 && bytes.Contains(read[i:], []byte("\n\n")) {
			return read
		}
		return nil
	})
	sc := bufio.NewScanner(bytes.NewReader(sse))
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			ct.frame(t, "EventData", []byte(data))
		}
	}

	// WebSocket, one queue.
	provisionTo(q+"-w", "socket")
	conn := ct.dialWS(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "-w/ws?reliable=1&timeoutACK=30", status: 101})
	msg := wsRead(t, conn)
	ct.frame(t, "EventData", msg)
	var ed struct{ Transaction string }
	_ = json.Unmarshal(msg, &ed)
	ct.wsWrite(t, conn, "QueueWSClientFrame", map[string]any{"ack": []string{ed.Transaction}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = conn.Write(ctx, websocket.MessageText, []byte(`{"hello":1}`))
	cancel()
	ct.frame(t, "WSErrorFrame", wsRead(t, conn))
	conn.Close(websocket.StatusNormalClosure, "")
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "/ws", status: 426})

	// Multiplexed WebSocket.
	provisionTo(q+"-m", "muxed")
	mux := ct.dialWS(t, cl, base, call{method: "GET", path: prefix + "/ws", status: 101})
	ct.wsWrite(t, mux, "MuxClientFrame", map[string]any{"op": "subscribe", "queue": q + "-m", "reliable": true, "timeoutACK": 30})
	var tidM string
	for tidM == "" {
		f := wsRead(t, mux)
		ct.frame(t, "MuxServerFrame", f)
		var mf struct{ Op, Transaction string }
		_ = json.Unmarshal(f, &mf)
		if mf.Op == "message" {
			tidM = mf.Transaction
		}
	}
	ct.wsWrite(t, mux, "MuxClientFrame", map[string]any{"op": "ack", "queue": q + "-m", "transactions": []string{tidM}})
	ct.wsWrite(t, mux, "MuxClientFrame", map[string]any{"op": "ack", "queue": q + "-m", "transactions": []string{"00000000-0000-4000-8000-000000000000"}})
	ct.frame(t, "MuxServerFrame", wsRead(t, mux))
	ct.wsWrite(t, mux, "MuxClientFrame", map[string]any{"op": "auth", "token": "not-a-token"})
	ct.frame(t, "MuxServerFrame", wsRead(t, mux))
	ct.wsWrite(t, mux, "MuxClientFrame", map[string]any{"op": "unsubscribe", "queue": q + "-m"})
	ct.frame(t, "MuxServerFrame", wsRead(t, mux))
	mux.Close(websocket.StatusNormalClosure, "")
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/ws", status: 426})

	// Groups.
	g := "g-" + q
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/group", header: jsonHeader(), body: `{"name":"` + g + `","queues":["` + q + `","` + q + `-2"]}`, status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/group", header: jsonHeader(), body: `{"queues":[]}`, status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/group/" + g, status: 200})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/group/" + g, header: jsonHeader(), body: `{"queuesToAdd":["` + q + `-3"],"queuesToRemove":["` + q + `-2"]}`, status: 200})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/group/" + g, header: jsonHeader(), body: `{}`, status: 400})
	ct.do(t, cl, base, call{method: "PUT", path: prefix + "/group/nosuch-" + g, header: jsonHeader(), body: `{"queuesToAdd":["a"]}`, status: 400})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: `{"payload":"p","priority":"H","groups":["` + g + `"]}`, status: 200})
	ct.do(t, cl, base, call{method: "DELETE", path: prefix + "/group/" + g, status: 200})

	// History: MongoDB on n, none on noHist.
	var page struct{ Data []json.RawMessage }
	deadline := time.Now().Add(20 * time.Second)
	for len(page.Data) == 0 && time.Now().Before(deadline) {
		b := ct.do(t, cl, base, call{method: "GET", path: prefix + "/trans/" + tid + "/history", status: 200})
		_ = json.Unmarshal(b, &page)
	}
	if len(page.Data) == 0 {
		t.Errorf("no history for %s within 20 s", tid)
	}
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "/history?since=2020-01-01T00:00:00Z&limit=100", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + q + "/history?since=yesterday", status: 400, invalid: true})
	ct.do(t, noHist.plainClient, noHist.plain, call{method: "GET", path: prefix + "/trans/" + tid + "/history", status: 503})
	ct.do(t, noHist.plainClient, noHist.plain, call{method: "GET", path: prefix + "/queue/" + q + "/history", status: 503})
}

// contractSecure exercises the secure boxes of the TLS port: creation and
// the plain-text 401 and 500 answers of API.md 1.5.
func contractSecure(t *testing.T, ct *contract, n *contractNode, prefix string) {
	cl, base := n.tlsClient, n.tls
	box := "box-" + fmt.Sprint(time.Now().UnixNano())
	basic := func(u, p string) http.Header {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(u, p)
		return http.Header{"Authorization": req.Header["Authorization"]}
	}
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue", header: jsonHeader(), body: `{"queue":"` + box + `","user":"u","password":"secret"}`, status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue", header: jsonHeader(), body: `{"queue":"` + box + `","user":"u","password":"secret"}`, status: 403})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue", header: jsonHeader(), body: `{"queue":"` + box + `"}`, status: 400, invalid: true})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/trans", header: jsonHeader(), body: provisionBody(box, "secret message"), status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + box + "/peek", status: 401})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + box + "/peek", header: basic("u", "wrong"), status: 401})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + box + "/peek", header: basic("u", "secret"), status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/" + box, header: basic("u", "secret"), status: 200})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + box + "/pop?timeout=1", header: basic("u", "secret"), status: 200})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/nobox-" + box + "/peek", header: basic("u", "secret"), status: 500})
	ct.do(t, cl, base, call{method: "GET", path: prefix + "/queue/nobox-" + box + "/events", header: basic("u", "secret"), status: 500})
	ct.do(t, cl, base, call{method: "POST", path: prefix + "/queue/" + box + "/subscribe", status: 401})
}

// contractOperations exercises the root routes: deploy info, health,
// metrics, the description itself and the dashboard.
func contractOperations(t *testing.T, ct *contract, n *contractNode) {
	cl, base := n.plainClient, n.plain
	noRedirect := *cl
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ct.do(t, cl, base, call{method: "GET", path: "/", status: 200})
	ct.do(t, &noRedirect, base, call{method: "GET", path: "/", header: http.Header{"Accept": {"text/html"}}, status: 302})
	ct.do(t, cl, base, call{method: "GET", path: "/healthz", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: "/readyz", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: "/metrics", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: "/openapi.json", status: 200})

	// GET /node/queues while a long poll waits here.
	stopPoll := holdLongPoll(t, cl, base, "node-listed", "")
	for deadline := time.Now().Add(10 * time.Second); ; {
		var nq struct{ Queues []json.RawMessage }
		_ = json.Unmarshal(ct.do(t, cl, base, call{method: "GET", path: "/node/queues", status: 200}), &nq)
		if len(nq.Queues) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("GET /node/queues never listed the queue of an open long poll")
		}
	}
	stopPoll()
	ct.do(t, &noRedirect, base, call{method: "GET", path: "/ui", status: 301})
	ct.do(t, cl, base, call{method: "GET", path: "/ui/index.html", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: "/ui/app.js", status: 200})
	ct.do(t, cl, base, call{method: "GET", path: "/ui/nothing-here", status: 404})
}

// contractOutage: a gateway whose Redis is gone answers the described 503
// and 500 errors.
func contractOutage(t *testing.T, ct *contract) {
	r := testenv.StartRedis(t, testenv.OwnRedis())
	n := startContractNode(t, r.URL(), nil, nil)
	r.Kill()
	cl, base := n.plainClient, n.plain
	ct.do(t, cl, base, call{method: "GET", path: "/readyz", status: 503})
	ct.do(t, cl, base, call{method: "GET", path: "/queue/q1/peek", status: 500})
	ct.do(t, cl, base, call{method: "POST", path: "/trans", header: jsonHeader(), body: provisionBody("q1", "x"), status: 500})
}

// contractLimits: provisioning auth (401) and the connection limit (503)
// answer as described.
func contractLimits(t *testing.T, ct *contract, redisURL string) {
	n := startContractNode(t, redisURL, nil, func(o *gateway.Options) {
		o.ProvisionAuth = true
		o.Admin = auth.AdminCredentials{User: "admin", Password: "admin-secret"}
		o.MaxConnections = 1
	})
	cl, base := n.plainClient, n.plain
	ct.do(t, cl, base, call{method: "POST", path: "/trans", header: jsonHeader(), body: provisionBody("q1", "x"), status: 401})
	ct.do(t, cl, base, call{method: "DELETE", path: "/group/g1", status: 401})
	ct.do(t, cl, base, call{method: "GET", path: "/node/queues", status: 401})

	// One long poll holds the only slot: other requests get 503 until it ends.
	stopPoll := holdLongPoll(t, cl, base, "held", "")
	// /metrics is exempt from the limit: watch the long poll arrive there.
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, base, `popbox_connections{transport="longpoll"}`) != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the long poll never showed in popbox_connections")
		}
	}
	ct.do(t, cl, base, call{method: "GET", path: "/", status: 503})
	ct.do(t, cl, base, call{method: "GET", path: "/healthz", status: 200}) // exempt
	stopPoll()
}
