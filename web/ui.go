package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	jsclient "github.com/popbox/popbox/clients/js"
)

//go:embed static/index.html static/app.js static/style.css
var staticFS embed.FS

// styleCSS is the shared stylesheet, also inlined into the server pages.
var styleCSS = mustRead("static/style.css")

// asset is one embedded dashboard file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets maps the request path (after the /ui prefix) to its file: the
// dashboard's own files, and under /js/ the JavaScript client's modules,
// embedded by package clients/js from its source (one copy in the repo; the
// dashboard's live subscriber uses it).
var assets = func() map[string]asset {
	mk := func(b []byte, ct string) asset {
		sum := sha256.Sum256(b)
		return asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	const jsType = "text/javascript; charset=utf-8"
	index := mk(mustRead("static/index.html"), "text/html; charset=utf-8")
	return map[string]asset{
		"/":               index,
		"/index.html":     index,
		"/app.js":         mk(mustRead("static/app.js"), jsType),
		"/style.css":      mk(mustRead("static/style.css"), "text/css; charset=utf-8"),
		"/js/popbox.js":   mk(mustReadFS(jsclient.Source, "src/popbox.js"), jsType),
		"/js/protocol.js": mk(mustReadFS(jsclient.Source, "src/protocol.js"), jsType),
		"/js/popbox.d.ts": mk(mustReadFS(jsclient.Source, "src/popbox.d.ts"), "text/plain; charset=utf-8"),
	}
}()

func mustRead(name string) []byte { return mustReadFS(staticFS, name) }

func mustReadFS(fsys fs.ReadFileFS, name string) []byte {
	b, err := fsys.ReadFile(name)
	if err != nil {
		panic("web: embedded file missing: " + name)
	}
	return b
}

// contentSecurityPolicy keeps the dashboard to its own files: no inline
// script, no third-party origin. connect-src lists ws:/wss: because older
// browsers do not match WebSocket URLs against 'self'.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self' ws: wss:; form-action 'none'; " +
	"base-uri 'none'; frame-ancestors 'none'"

// UI returns the handler of the dashboard's static files. Mount it with
// the /ui prefix stripped, either of
//
//	mux.Handle("/ui/", http.StripPrefix("/ui", web.UI()))
//	e.GET("/ui/*", echo.WrapHandler(http.StripPrefix("/ui", web.UI())))
//
// (stripping "/ui/" instead works too). It serves index.html at "/",
// app.js and style.css, the JavaScript client under /js/ (popbox.js,
// protocol.js, popbox.d.ts), answers 404 for any other path and 405 for methods
// other than GET and HEAD. A request for the bare prefix ("/ui") is
// redirected to "/ui/" so that the page's relative URLs resolve. Responses
// carry an ETag (If-None-Match gives 304), Cache-Control: no-cache and a
// strict Content-Security-Policy.
func UI() http.Handler {
	return http.HandlerFunc(serveUI)
}

func serveUI(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "" {
		// The prefix was stripped to nothing: either "/ui/" with "/ui/"
		// stripped (fine) or "/ui" with "/ui" stripped (needs a slash).
		if orig := requestPath(r); !strings.HasSuffix(orig, "/") {
			// A relative Location ("ui/" from "/ui") keeps any path
			// prefix a reverse proxy added in front of the gateway.
			target := "./"
			if i := strings.LastIndex(orig, "/"); i >= 0 && i+1 < len(orig) {
				target = "./" + orig[i+1:] + "/"
			}
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			w.Header().Set("Location", target)
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		p = "/"
	} else if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	a, ok := assets[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	// ServeContent handles HEAD, If-None-Match and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// requestPath is the path the client asked for, before any StripPrefix.
func requestPath(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" { // a request built in-process
		return r.URL.Path
	}
	if u, err := url.ParseRequestURI(uri); err == nil {
		return u.EscapedPath()
	}
	return r.URL.Path
}
