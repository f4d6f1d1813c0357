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
