package web

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	xssPayload = `<script>alert(1)</script>`
	xssEscaped = `&lt;script&gt;alert(1)&lt;/script&gt;`
)

// mustContain fails the test for every want missing from got.
func mustContain(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

// mustNotContain fails the test for every bad string present in got.
func mustNotContain(t *testing.T, got string, bads ...string) {
	t.Helper()
	for _, b := range bads {
		if strings.Contains(got, b) {
			t.Errorf("output contains %q", b)
		}
	}
}

// checkPage runs the checks every page must pass.
func checkPage(t *testing.T, out string) {
	t.Helper()
	mustContain(t, out, "<!DOCTYPE html>", `<meta name="viewport"`, `href="/ui/"`, "<style>", ".card")
	// The only <script> is the one of a payload, escaped.
	mustNotContain(t, out, "<script", `rel="stylesheet"`, "https://")
}

// mustRender renders v with render into a buffer and returns the output; a
// render error ends the test.
func mustRender[V any](t *testing.T, render func(io.Writer, V) error, v V) string {
	t.Helper()
	var buf bytes.Buffer
	if err := render(&buf, v); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestRenderQueueEscapesEverything(t *testing.T) {
	v := QueueView{
		Host:    `evil.example"><b>`,
		Queue:   `<b>q"1</b>`,
		Org:     `a<c&me`,
		Size:    3,
		LastPop: "1342775322",
		Blocked: true,
		High:    []EntryView{{ID: `<i>tid</i>`, Href: "http://h/trans/x?queues=All"}},
		Low:     []EntryView{{ID: "tid-2", Href: "javascript:alert(1)"}},
		Peek: []MessageView{
			{Transaction: "t1", Href: "/trans/t1", Payload: xssPayload, Priority: "H"},
			{Transaction: `"><img src=x onerror=alert(1)>`, Payload: `{"a":"</pre><script>x</script>"}`, Priority: `L" onclick="x`},
		},
	}
	out := mustRender(t, RenderQueue, v)
	checkPage(t, out)
	mustContain(t, out,
		xssEscaped,
		`&lt;b&gt;q&#34;1&lt;/b&gt;`, // queue name
		`a&lt;c&amp;me:UNSEC:`,       // namespace
		`evil.example&#34;&gt;&lt;b&gt;`,
		`&lt;i&gt;tid&lt;/i&gt;`,
		`&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`,
		`1342775322 (2012-07-20T09:08:42Z)`,
		`yes: a consumer is waiting`,
		`href="http://h/trans/x?queues=All"`,
		`#ZgotmplZ`, // the javascript: URL was neutralised
		// Deep link into the dashboard, query-escaped.
		`href="/ui/#q=%3cb%3eq%221%3c%2fb%3e&amp;org=a%3cc%26me"`,
	)
	mustNotContain(t, out, "<b>", "<i>", "<img", "javascript:", `onclick="x`)
}

func TestRenderQueueNeverPoppedAndEmpty(t *testing.T) {
	out := mustRender(t, RenderQueue, QueueView{Host: "localhost:3001", Queue: "q1", Secure: true})
	checkPage(t, out)
	mustContain(t, out, ">never<", "No entries.", "SEC:", `<dd id="size">0</dd>`, `<span class="badge">no</span>`)
	mustNotContain(t, out, "UNSEC:", "Next messages", "Org</dt>")
	if n := strings.Count(out, "No entries."); n != 2 {
		t.Errorf("want both lists empty, got %d empty notes", n)
	}

	// A non-nil empty Peek shows the section with a note.
	mustContain(t, mustRender(t, RenderQueue, QueueView{Queue: "q1", Peek: []MessageView{}}), "Next messages", "No messages.")
}

func TestRenderTrans(t *testing.T) {
	v := TransView{
		ID:    "7d0c5a4e-1b2c-4d3e-8f90-0123456789ab",
		Found: true,
		Meta: map[string]string{
			"payload":        xssPayload,
			"priority":       "H",
			"callback":       `http://cb/"><script>`,
			"<x>":            "extra field with <html>",
			"expirationDate": "1342775322",
		},
		Queues: []QueueStateView{
			{Queue: `q<1>`, State: "Pending", Href: "http://h/queue/q%3C1%3E"},
			{Queue: "q2", State: `Delivered"><script>`},
		},
		Summary: map[string]int{"totalNotifications": 2, "Pending": 1, "Delivered": 1},
		History: []EventView{
			{Time: "2024-01-02T03:04:05Z", Kind: "state", State: "Pending", Queue: "<q>", Node: "n1"},
			{Time: "2024-01-02T03:04:06Z", Kind: "action", Action: xssPayload},
		},
	}
	out := mustRender(t, RenderTrans, v)
	checkPage(t, out)
	mustContain(t, out,
		xssEscaped,
		`<pre class="payload">`+xssEscaped+`</pre>`,
		`&lt;x&gt;`, `extra field with &lt;html&gt;`,
		`http://cb/&#34;&gt;&lt;script&gt;`,
		`q&lt;1&gt;`, `href="http://h/queue/q%3C1%3E"`,
		`Delivered&#34;&gt;&lt;script&gt;`,
		`totalNotifications</dt><dd>2</dd>`,
		`&lt;q&gt;`, `on n1`,
		`href="/ui/#t=7d0c5a4e-1b2c-4d3e-8f90-0123456789ab"`,
	)
	// Metadata keys come out sorted.
	if i, j := strings.Index(out, "callback"), strings.Index(out, "priority"); i < 0 || j < 0 || i > j {
		t.Errorf("metadata not sorted: callback at %d, priority at %d", i, j)
	}
}

func TestRenderTransNotFoundAndEmpty(t *testing.T) {
	out := mustRender(t, RenderTrans, TransView{ID: "<nope>"})
	checkPage(t, out)
	mustContain(t, out, "Unknown or expired transaction.", "&lt;nope&gt;")
	mustNotContain(t, out, "<h2>Queues", "History", "Summary")

	out = mustRender(t, RenderTrans, TransView{ID: "t", Found: true})
	mustContain(t, out, "No queues.", "none")
	mustNotContain(t, out, "Unknown or expired", "<h2>History", "<h2>Summary")
}

func TestRenderError(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := RenderError(rec, http.StatusBadRequest, "bad queue id: "+xssPayload); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	out := rec.Body.String()
	checkPage(t, out)
	mustContain(t, out, "400 Bad Request", "bad queue id: "+xssEscaped)

	// A Content-Type already chosen by the caller is kept; unknown codes
	// still render.
	rec = httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/html")
	if err := RenderError(rec, 599, ""); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 599 || rec.Header().Get("Content-Type") != "text/html" {
		t.Errorf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	mustContain(t, rec.Body.String(), "599 Error")
	mustNotContain(t, rec.Body.String(), `id="message"`)
}

func TestRenderSetsHTMLContentType(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := RenderQueue(rec, QueueView{Queue: "q"}); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("missing nosniff")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestRenderReportsWriteErrors(t *testing.T) {
	if err := RenderTrans(failWriter{}, TransView{ID: "t"}); err == nil {
		t.Error("want the writer's error")
	}
}

func TestUnixTime(t *testing.T) {
	for in, want := range map[string]string{
		"0":          "0 (1970-01-01T00:00:00Z)",
		"1342775322": "1342775322 (2012-07-20T09:08:42Z)",
		"soon":       "soon",
	} {
		if got := unixTime(in); got != want {
			t.Errorf("unixTime(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNamespace(t *testing.T) {
	for _, c := range []struct {
		org    string
		secure bool
		want   string
	}{
		{"", false, "UNSEC:"},
		{"", true, "SEC:"},
		{"acme", false, "acme:UNSEC:"},
		{"acme", true, "acme:SEC:"},
	} {
		if got := namespace(c.org, c.secure); got != c.want {
			t.Errorf("namespace(%q, %v) = %q, want %q", c.org, c.secure, got, c.want)
		}
	}
}
