package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// newUIServer mounts UI() the way the gateway does, with the given prefix
// stripped.
func newUIServer(t *testing.T, strip string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ui/", http.StripPrefix(strip, UI()))
	mux.Handle("/ui", http.StripPrefix(strip, UI()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// noRedirect is an http.Client that reports redirects instead of following.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

func get(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestUIServesFiles(t *testing.T) {
	for _, strip := range []string{"/ui", "/ui/"} {
		t.Run("strip "+strip, func(t *testing.T) {
			srv := newUIServer(t, strip)
			for _, c := range []struct {
				path, ctype, body string
			}{
				{"/ui/", "text/html; charset=utf-8", "<title>PopBox dashboard</title>"},
				{"/ui/index.html", "text/html; charset=utf-8", `id="search-input"`},
				{"/ui/app.js", "text/javascript; charset=utf-8", "'use strict';"},
				{"/ui/style.css", "text/css; charset=utf-8", ":root"},
				{"/ui/?x=1", "text/html; charset=utf-8", "<!DOCTYPE html>"},
			} {
				res, body := get(t, http.MethodGet, srv.URL+c.path, nil)
				if res.StatusCode != http.StatusOK {
					t.Errorf("GET %s: status %d", c.path, res.StatusCode)
					continue
				}
				if got := res.Header.Get("Content-Type"); got != c.ctype {
					t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
				}
				if !strings.Contains(body, c.body) {
					t.Errorf("GET %s: body lacks %q", c.path, c.body)
				}
				for _, h := range []string{"ETag", "Content-Security-Policy", "X-Content-Type-Options", "Cache-Control"} {
					if res.Header.Get(h) == "" {
						t.Errorf("GET %s: no %s header", c.path, h)
					}
				}
			}
		})
	}
}

func TestUINotFoundAndMethods(t *testing.T) {
	srv := newUIServer(t, "/ui")
	for _, p := range []string{"/ui/nope", "/ui/app.js/", "/ui/static/app.js", "/ui/render.go",
		"/ui/templates/layout.html", "/ui/APP.JS", "/ui/index.html/x"} {
		if res, _ := get(t, http.MethodGet, srv.URL+p, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.StatusCode)
		}
	}
	res, _ := get(t, http.MethodPost, srv.URL+"/ui/app.js", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: status %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	res, body := get(t, http.MethodHead, srv.URL+"/ui/style.css", nil)
	if res.StatusCode != http.StatusOK || body != "" || res.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("HEAD: status %d, body %d bytes, type %q", res.StatusCode, len(body), res.Header.Get("Content-Type"))
	}
}

func TestUIBarePrefixRedirects(t *testing.T) {
	for _, strip := range []string{"/ui", "/ui/"} {
		srv := newUIServer(t, strip)
		res, _ := get(t, http.MethodGet, srv.URL+"/ui?a=b", nil)
		if strip == "/ui/" {
			// StripPrefix("/ui/") does not match "/ui": ServeMux's own
			// handling is out of our hands; only check it is not served.
			if res.StatusCode == http.StatusOK {
				t.Errorf("strip %s: /ui served directly", strip)
			}
			continue
		}
		if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "./ui/?a=b" {
			t.Errorf("strip %s: GET /ui: %d Location %q", strip, res.StatusCode, res.Header.Get("Location"))
		}
		// The relative Location resolves to /ui/ on the same origin.
		loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
		if err != nil || loc.Path != "/ui/" {
			t.Errorf("Location resolves to %v (%v)", loc, err)
		}
	}
}

func TestUIConditionalGet(t *testing.T) {
	srv := newUIServer(t, "/ui")
	res, _ := get(t, http.MethodGet, srv.URL+"/ui/app.js", nil)
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	res, body := get(t, http.MethodGet, srv.URL+"/ui/app.js", map[string]string{"If-None-Match": etag})
	if res.StatusCode != http.StatusNotModified || body != "" {
		t.Errorf("If-None-Match: status %d, %d bytes", res.StatusCode, len(body))
	}
}

func TestUIWithoutStripPrefix(t *testing.T) {
	// Paths without a leading slash (StripPrefix("/ui/")) and direct calls.
	for _, p := range []string{"app.js", "/app.js"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.URL.Path = p
		UI().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("path %q: %d", p, rec.Code)
		}
	}
}

// --- the contract with the browser tests: element ids ---

func readStatic(t *testing.T, name string) string {
	t.Helper()
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	commentRE   = regexp.MustCompile(`(?s)<!--(.*?)-->`)
	docIDRE     = regexp.MustCompile(`#([A-Za-z][\w-]*)`)
	markupIDRE  = regexp.MustCompile(`\sid="([^"]+)"`)
	jsLookupRE  = regexp.MustCompile(`\$\('([\w-]+)'\)`)
	jsCreatedRE = regexp.MustCompile(`\bid: '([\w-]+)'`)
)

// documentedIDs are the ids listed in the comment at the top of index.html.
func documentedIDs(t *testing.T, index string) []string {
	t.Helper()
	m := commentRE.FindStringSubmatch(index)
	if m == nil {
		t.Fatal("index.html has no leading comment")
	}
	var ids []string
	for _, s := range docIDRE.FindAllStringSubmatch(m[1], -1) {
		ids = append(ids, s[1])
	}
	return ids
}

// markupIDs are the ids present in index.html (outside comments), with the
// number of times each occurs.
func markupIDs(index string) map[string]int {
	ids := map[string]int{}
	for _, s := range markupIDRE.FindAllStringSubmatch(commentRE.ReplaceAllString(index, ""), -1) {
		ids[s[1]]++
	}
	return ids
}

// requiredIDs are the ids the browser tests were promised.
var requiredIDs = []string{
	"search-input", "search-go", "search-org",
	"prov-payload", "prov-priority", "prov-queues", "prov-groups", "prov-expiration-delay", "prov-org",
	"prov-submit", "prov-result",
	"sub-queue", "sub-transport", "sub-start", "sub-stop", "sub-status", "sub-messages",
	"node-uptime", "queue-view", "trans-view",
	"conn-longpoll", "conn-stream", "conn-sse", "conn-ws", "conn-wsmux",
	"msg-in-rate", "msg-out-rate", "redis-mode", "redis-nodes",
	"queue-size", "queue-blocked", "queue-lastpop", "queue-high", "queue-low", "queue-peek", "queue-peek-list",
	"trans-meta", "trans-queues", "trans-summary", "trans-history",
}

func TestDocumentedIDsExist(t *testing.T) {
	index := readStatic(t, "index.html")
	js := readStatic(t, "app.js")
	doc := documentedIDs(t, index)
	if len(doc) < len(requiredIDs) {
		t.Fatalf("only %d ids documented", len(doc))
	}
	inMarkup := markupIDs(index)
	createdByJS := map[string]bool{}
	for _, s := range jsCreatedRE.FindAllStringSubmatch(js, -1) {
		createdByJS[s[1]] = true
	}
	documented := map[string]bool{}
	for _, id := range doc {
		documented[id] = true
		if inMarkup[id] == 0 && !createdByJS[id] {
			t.Errorf("documented id #%s exists neither in index.html nor in app.js", id)
		}
	}
	for _, id := range requiredIDs {
		if !documented[id] {
			t.Errorf("required id #%s is not documented at the top of index.html", id)
		}
	}
	for id, n := range inMarkup {
		if n > 1 {
			t.Errorf("id #%s occurs %d times", id, n)
		}
	}
}

func TestScriptUsesOnlyExistingIDs(t *testing.T) {
	index := readStatic(t, "index.html")
	inMarkup := markupIDs(index)
	var missing []string
	for _, s := range jsLookupRE.FindAllStringSubmatch(readStatic(t, "app.js"), -1) {
		if inMarkup[s[1]] == 0 {
			missing = append(missing, s[1])
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("app.js looks up ids missing from index.html: %v", missing)
	}
	// The dynamic lookups: $('conn-' + k).
	for _, k := range []string{"longpoll", "stream", "sse", "ws", "wsmux"} {
		if inMarkup["conn-"+k] == 0 {
			t.Errorf("missing #conn-%s", k)
		}
	}
}

func TestREADMEListsDocumentedIDs(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, id := range documentedIDs(t, readStatic(t, "index.html")) {
		if !strings.Contains(readme, "#"+id) {
			t.Errorf("README.md does not mention #%s", id)
		}
	}
}

func TestNoHTMLInjectionSinksAndNoCDN(t *testing.T) {
	js := readStatic(t, "app.js")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
	// Relative URLs only, nothing from another origin.
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:|//)|url\(\s*['"]?(https?:|//)|@import|fetch\(\s*['"](/|https?:)`)
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		if m := ext.FindString(readStatic(t, name)); m != "" {
			t.Errorf("%s references an absolute or external URL: %q", name, m)
		}
	}
	// The page must not rely on inline script (the CSP forbids it).
	index := commentRE.ReplaceAllString(readStatic(t, "index.html"), "")
	if regexp.MustCompile(`<script>|\son[a-z]+=`).MatchString(index) {
		t.Error("index.html has inline script or event handler attributes")
	}
	if !strings.Contains(index, `name="viewport"`) {
		t.Error("index.html lacks a viewport meta tag")
	}
}

// TestUIServesTheJSClient: the dashboard serves the JavaScript client's
// modules byte for byte from clients/js/src (embedded there, no copy), and
// the page speaks the streaming protocol only through it: app.js imports
// it and opens no EventSource or WebSocket of its own.
func TestUIServesTheJSClient(t *testing.T) {
	srv := newUIServer(t, "/ui")
	for _, name := range []string{"popbox.js", "protocol.js", "popbox.d.ts"} {
		want, err := os.ReadFile(filepath.Join("..", "clients", "js", "src", name))
		if err != nil {
			t.Fatal(err)
		}
		res, body := get(t, http.MethodGet, srv.URL+"/ui/js/"+name, nil)
		if res.StatusCode != http.StatusOK || body != string(want) {
			t.Errorf("GET /ui/js/%s: %d, %d bytes; want the %d bytes of clients/js/src/%s", name, res.StatusCode, len(body), len(want), name)
		}
		if ct := res.Header.Get("Content-Type"); strings.HasSuffix(name, ".js") && ct != "text/javascript; charset=utf-8" {
			t.Errorf("GET /ui/js/%s: Content-Type %q", name, ct)
		}
	}
	app := readStatic(t, "app.js")
	if !strings.Contains(app, "from './js/popbox.js'") {
		t.Errorf("app.js does not import the client from ./js/popbox.js")
	}
	for _, own := range []string{"new EventSource", "new WebSocket", "EventSource(", "WebSocket("} {
		if strings.Contains(app, own) {
			t.Errorf("app.js has its own %q: the live subscriber must use the client", own)
		}
	}
	if index := readStatic(t, "index.html"); !strings.Contains(index, `<script type="module" src="app.js">`) {
		t.Errorf("index.html does not load app.js as a module")
	}
}
