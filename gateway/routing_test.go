package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func TestNormalizeRoute(t *testing.T) {
	cases := []struct{ in, want string }{
		{"/trans", "/trans"},
		{"/trans/", "/trans"},
		{"/TRANS/", "/trans"},
		{"/Trans/AbC-1/", "/trans/AbC-1"},
		{"/trans/AbC/STATE/Summary/", "/trans/AbC/state/Summary"},
		{"/trans/AbC/History", "/trans/AbC/history"},
		{"/queue/q1/pop/", "/queue/q1/pop"},
		{"/QUEUE/q1/Pop", "/queue/q1/pop"},
		{"/Queue/Q1/SubscribeRel", "/queue/Q1/subscriberel"},
		{"/queue/POP", "/queue/POP"},             // a queue called POP
		{"/queue/POP/", "/queue/POP"},            // GET on it
		{"/queue/QUEUE/pop", "/queue/QUEUE/pop"}, // pop on queue QUEUE
		{"/queue/pop/POP", "/queue/pop/pop"},
		{"/queue/q/unknownword", "/queue/q/unknownword"},
		{"/group/", "/group"},
		{"/GROUP/G1/", "/group/G1"},
		{"/WS/", "/ws"},
		{"/ORG/Acme/Trans/", "/org/Acme/trans"},
		{"/org/Acme/QUEUE/Trans/PEEK/", "/org/Acme/queue/Trans/peek"},
		{"/org/ORG/queue/ORG", "/org/ORG/queue/ORG"},
		{"/trans//", "/trans/"}, // one trailing slash only
		{"/healthz/", "/healthz"},
		{"/", "/"},
		{"/ui/", "/ui/"},
		{"/ui/app.js", "/ui/app.js"},
		{"/queue/a%2Fb/pop/", "/queue/a%2Fb/pop"},
	}
	for _, c := range cases {
		if got := normalizeRoute(c.in); got != c.want {
			t.Errorf("normalizeRoute(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestForgivingRoutes routes requests spelled as classic clients spell them
// through the real route table of Handler and checks which route and which
// parameters they reach.
func TestForgivingRoutes(t *testing.T) {
	real := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler(false).(*echo.Echo)
	e := echo.New()
	e.Pre(normalizePath)
	for _, r := range real.Routes() {
		e.Add(r.Method, r.Path, func(c echo.Context) error {
			var params []string
			for _, n := range c.ParamNames() {
				v, err := pathParam(c, n)
				if err != nil {
					return err
				}
				params = append(params, n+"="+v)
			}
			return c.String(http.StatusOK, c.Request().Method+" "+c.Path()+" "+strings.Join(params, ","))
		})
	}
	srv := httptest.NewServer(e)
	defer srv.Close()
	cases := []struct{ method, path, want string }{
		{"POST", "/trans/", "POST /trans "},
		{"POST", "/Trans", "POST /trans "},
		{"GET", "/trans/T1d/", "GET /trans/:tid tid=T1d"},
		{"PUT", "/TRANS/T1d/", "PUT /trans/:tid tid=T1d"},
		{"DELETE", "/trans/T1d/", "DELETE /trans/:tid tid=T1d"},
		{"GET", "/trans/T1d/State/", "GET /trans/:tid/state tid=T1d"},
		{"GET", "/trans/T1d/state/Summary/", "GET /trans/:tid/state/:state tid=T1d,state=Summary"},
		{"POST", "/queue/", "POST /queue "},
		{"POST", "/queue/q1/pop/", "POST /queue/:id/pop id=q1"},
		{"POST", "/QUEUE/Q1/Pop", "POST /queue/:id/pop id=Q1"},
		{"POST", "/queue/q1/POPREL/", "POST /queue/:id/poprel id=q1"},
		{"POST", "/queue/q1/Ack/", "POST /queue/:id/ack id=q1"},
		{"GET", "/queue/q1/Peek/", "GET /queue/:id/peek id=q1"},
		{"GET", "/queue/q1/", "GET /queue/:id id=q1"},
		{"GET", "/queue/Pop/", "GET /queue/:id id=Pop"},
		{"POST", "/queue/Pop/pop/", "POST /queue/:id/pop id=Pop"},
		{"POST", "/queue/q1/Subscribe/", "POST /queue/:id/subscribe id=q1"},
		{"GET", "/queue/q1/Events/", "GET /queue/:id/events id=q1"},
		{"POST", "/queue/a%2Fb/pop/", "POST /queue/:id/pop id=a/b"},
		{"POST", "/group/", "POST /group "},
		{"GET", "/Group/G1/", "GET /group/:name name=G1"},
		{"PUT", "/group/G1/", "PUT /group/:name name=G1"},
		{"DELETE", "/group/G1/", "DELETE /group/:name name=G1"},
		{"GET", "/WS/", "GET /ws "},
		{"POST", "/ORG/Acme/Trans/", "POST /org/:org/trans org=Acme"},
		{"POST", "/org/Acme/QUEUE/q1/pop/", "POST /org/:org/queue/:id/pop org=Acme,id=q1"},
		{"GET", "/Org/acme/group/G/", "GET /org/:org/group/:name org=acme,name=G"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != c.want {
			t.Errorf("%s %s: %d %q, want %q", c.method, c.path, resp.StatusCode, b, c.want)
		}
	}
}

// FuzzRouteAsIs: a path routeAsIs keeps is one that the full rewrite keeps
// too.
func FuzzRouteAsIs(f *testing.F) {
	for _, p := range []string{"/trans", "/queue/q1/pop", "/org/o1/queue/q/ack", "/ui/x", "//a//b", "/queue/\u212aey/pop",
		"/trans/abc/state/summary", "/metrics", "/x/", "/Queue/q/pop"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if len(p) < 2 || p[0] != '/' || !routeAsIs(p) {
			return
		}
		if got := normalizeWords(p); got != p {
			t.Fatalf("routeAsIs(%q) but the rewrite gives %q", p, got)
		}
	})
}

// TestPanicBecomes500: a panicking handler answers 500 and the server keeps
// serving; the log names the panic under the answer's request id.
func TestPanicBecomes500(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil))}
	e := echo.New()
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.recoverer(), requestIDs())
	e.GET("/boom", func(echo.Context) error { panic("boom") })
	e.GET("/fine", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	srv := httptest.NewServer(e)
	defer srv.Close()
	for i := 0; i < 3; i++ {
		resp, err := http.Get(srv.URL + "/boom")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError || strings.TrimSpace(string(b)) != `{"errors":["internal error"]}` {
			t.Fatalf("panic answered %d %s", resp.StatusCode, b)
		}
		rid := resp.Header.Get(echo.HeaderXRequestID)
		if rid == "" || !strings.Contains(logs.String(), "id="+rid) || !strings.Contains(logs.String(), "panic=boom") {
			t.Fatalf("panic log %q does not name request id %q and the panic", logs.String(), rid)
		}
	}
	resp, err := http.Get(srv.URL + "/fine")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("server stopped serving after panics: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestRequestIDs: a valid client X-Request-Id is answered back; a missing
// or invalid one (too long, characters outside [A-Za-z0-9._-]) is replaced
// by a fresh id.
func TestRequestIDs(t *testing.T) {
	e := echo.New()
	e.Use(requestIDs())
	e.GET("/", func(c echo.Context) error { return c.String(http.StatusOK, requestID(c)) })
	get := func(id string) string {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if id != "" {
			req.Header.Set(echo.HeaderXRequestID, id)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if got := rec.Header().Get(echo.HeaderXRequestID); got != rec.Body.String() {
			t.Fatalf("header %q, handler saw %q", got, rec.Body.String())
		}
		return rec.Body.String()
	}
	if got := get("abc-1.2_3"); got != "abc-1.2_3" {
		t.Errorf("valid id answered as %q", got)
	}
	for _, bad := range []string{"", strings.Repeat("a", 65), "a b", "x\"y", "é"} {
		got := get(bad)
		if got == bad || !validRequestID(got) {
			t.Errorf("id %q answered as %q, want a fresh valid id", bad, got)
		}
		t.Logf("bad input: X-Request-Id %q -> replaced by %s", bad, got)
	}
}
