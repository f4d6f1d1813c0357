package gateway

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestPanicBecomes500: a panicking handler answers 500 and the server keeps
// serving.
func TestPanicBecomes500(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e := echo.New()
	e.Use(s.recoverer)
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
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), `"internal error"`) {
			t.Fatalf("panic answered %d %s", resp.StatusCode, b)
		}
	}
	resp, err := http.Get(srv.URL + "/fine")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("server stopped serving after panics: %v %v", resp, err)
	}
	resp.Body.Close()
}
