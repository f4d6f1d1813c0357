// Package web holds PopBox's browser-facing assets, all embedded in the
// binary with go:embed so that it needs no Node toolchain to build and no
// CDN at run time:
//
//   - server-rendered HTML pages for content negotiation (a browser asking
//     for a queue or a transaction with Accept: text/html): RenderQueue,
//     RenderTrans and RenderError;
//   - the single-page operator dashboard served by UI() under /ui/.
//
// The package is a leaf: it knows the gateway only through the HTTP
// contract (docs/API.md) and the plain view structs below, which the
// gateway fills.
package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

// QueueView is the data of the HTML page for GET /queue/{id}.
type QueueView struct {
	Host    string // Host header of the request, shown for orientation
	Queue   string // queue id as the client named it (without namespace)
	Org     string // tenant from the /org/{org} prefix, "" for none
	Secure  bool   // true on the secure port (SEC: namespace)
	Size    int    // number of entries (high + low)
	LastPop string // unix seconds of the last pop, "" = never popped
	Blocked bool   // at least one consumer is waiting on the queue
	High    []EntryView
	Low     []EntryView
	// Peek, when not nil, lists the first messages of the queue (as
	// GET /queue/{id}/peek would return them). nil hides the section; an
	// empty non-nil slice shows "no messages".
	Peek []MessageView
}

// EntryView is one entry of a queue's high or low list.
type EntryView struct {
	ID   string // transaction id
	Href string // link to the transaction, e.g. http://host/trans/<tid>?queues=All
}

// MessageView is one message of a queue as shown on the queue page.
type MessageView struct {
	Transaction string // transaction id
	Href        string // optional link to the transaction; "" = no link
	Payload     string
	Priority    string // "H" or "L"; "" when unknown
}

// TransView is the data of the HTML page for GET /trans/{tid}.
type TransView struct {
	ID      string            // transaction id
	Found   bool              // false: unknown or expired transaction
	Meta    map[string]string // stored metadata (payload, priority, callback, ...)
	Queues  []QueueStateView  // per-queue delivery state
	Summary map[string]int    // state -> count, "totalNotifications" included
	// History, when not empty, is shown as a timeline (oldest first).
	History []EventView
}

// QueueStateView is the state of a transaction in one queue.
type QueueStateView struct {
	Queue string // queue id
	State string // Pending, Blocked, Delivered, Expired
	Href  string // link to the queue, e.g. http://host/queue/<queue>
}

// EventView is one history event of a transaction (API.md 2.4).
type EventView struct {
	Time   string // RFC 3339
	Kind   string // "state" or "action"
	State  string
	Action string
	Queue  string
	Node   string
}

// errorView is the data of the error page.
type errorView struct {
	Status     int
	StatusText string
	Message    string
}

// UIPath is where the gateway mounts the dashboard; the server-rendered
// pages link to it.
const UIPath = "/ui/"

var (
	queueTmpl = pageTemplate("queue.html")
	transTmpl = pageTemplate("trans.html")
	errorTmpl = pageTemplate("error.html")
)

// pageTemplate parses the shared layout together with one page.
func pageTemplate(page string) *template.Template {
	funcs := template.FuncMap{
		"css":       func() template.CSS { return template.CSS(styleCSS) }, // #nosec: our own embedded file
		"uiPath":    func() string { return UIPath },
		"namespace": namespace,
		"unixTime":  unixTime,
		"notNil":    func(p []MessageView) bool { return p != nil },
	}
	return template.Must(template.New("layout.html").Funcs(funcs).
		ParseFS(templateFS, "templates/layout.html", "templates/"+page))
}

// namespace returns the queue namespace prefix of API.md section 0.
func namespace(org string, secure bool) string {
	ns := "UNSEC:"
	if secure {
		ns = "SEC:"
	}
	if org != "" {
		ns = org + ":" + ns
	}
	return ns
}

// unixTime renders a unix-seconds string as "<s> (<RFC 3339 UTC>)"; other
// strings are returned unchanged.
func unixTime(s string) string {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return s
	}
	return fmt.Sprintf("%s (%s)", s, time.Unix(n, 0).UTC().Format(time.RFC3339))
}

// RenderQueue writes the HTML page of a queue. The page is rendered in full
// before anything is written, so on error nothing reaches w. When w is an
// http.ResponseWriter without a Content-Type yet, the HTML content type is
// set.
func RenderQueue(w io.Writer, v QueueView) error {
	return render(w, queueTmpl, v, 0)
}

// RenderTrans writes the HTML page of a transaction, with the same
// guarantees as RenderQueue.
func RenderTrans(w io.Writer, v TransView) error {
	return render(w, transTmpl, v, 0)
}

// RenderError writes an HTML error page. When w is an http.ResponseWriter
// the content type is set (if not already) and status is written as the
// response code.
func RenderError(w io.Writer, status int, msg string) error {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	return render(w, errorTmpl, errorView{Status: status, StatusText: text, Message: msg}, status)
}

// render executes t into a buffer and copies it to w. status != 0 is
// written as the HTTP status when w is a ResponseWriter.
func render(w io.Writer, t *template.Template, data any, status int) error {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return fmt.Errorf("web: render %s: %w", t.Name(), err)
	}
	if rw, ok := w.(http.ResponseWriter); ok {
		h := rw.Header()
		if h.Get("Content-Type") == "" {
			h.Set("Content-Type", "text/html; charset=utf-8")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		if status != 0 {
			rw.WriteHeader(status)
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}
