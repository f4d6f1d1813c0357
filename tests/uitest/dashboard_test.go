package uitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/popbox/popbox/internal/testenv"
)

// chromiumPath finds the Debian chromium binary (POPBOX_CHROMIUM overrides).
// Without one the test is skipped, or fails when CI is set.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "POPBOX_CHROMIUM", "chromium", "/usr/bin/chromium", "chromium")
}

// artifactDir is where screenshots go: $POPBOX_TEST_ARTIFACTS, else a
// temporary directory of the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("POPBOX_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("POPBOX_TEST_ARTIFACTS: %v", err)
	}
	return dir
}

// profileDir is a fresh Chromium profile directory, removed at cleanup.
// Not t.TempDir: Chromium's helper processes may still write into it for a
// moment after the browser was stopped, and t.TempDir's removal then fails
// the test ("directory not empty"); this one retries for a while.
func profileDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "popbox-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Logf("chromium profile %s not removed: %v", dir, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}

// openPage starts headless Chromium (browser) and returns its first tab
// as a watched page named name, whose context ends after timeout; the
// browser stops when the test ends.
func openPage(t *testing.T, bin, name string, timeout time.Duration) *page {
	t.Helper()
	ctx, stop, _ := browser(t, bin)
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx, dir: artifactDir(t), name: name}
	p.watch()
	return p
}

// browser starts headless Chromium and returns the context of its first tab.
func browser(t *testing.T, bin string) (context.Context, func(), *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, // also hides scrollbars (stable screenshots)
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(profileDir(t)),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(&out),
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(func(string, ...any) {}))
	if err := chromedp.Run(ctx); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start chromium: %v\n%s", err, out.String())
	}
	return ctx, func() { cancelTab(); cancelAlloc() }, &out
}

// page drives one browser tab.
type page struct {
	t    *testing.T
	ctx  context.Context
	dir  string // artifacts
	name string // desktop | phone

	mu   sync.Mutex
	errs []string // JavaScript exceptions, console errors, CSP reports
}

// watch records the page's errors; a dashboard that throws fails the test.
func (p *page) watch() {
	chromedp.ListenTarget(p.ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeWarning {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				msg = "console." + string(e.Type) + ": " + strings.Join(parts, " ")
			}
		case *log.EventEntryAdded:
			// GET trans/{tid}/history answers 503 without MongoDB: the
			// page shows "history not enabled", but Chromium logs the status.
			if e.Entry.Level == log.LevelError && !(e.Entry.Source == log.SourceNetwork &&
				strings.HasSuffix(e.Entry.URL, "/history") && strings.Contains(e.Entry.Text, "503")) {
				msg = "log " + string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL
			}
		}
		if msg != "" {
			p.mu.Lock()
			p.errs = append(p.errs, msg)
			p.mu.Unlock()
		}
	})
}

func (p *page) takeErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.errs
	p.errs = nil
	return e
}

// run runs browser actions; on failure it saves a screenshot and stops the test.
func (p *page) run(what string, actions ...chromedp.Action) {
	p.t.Helper()
	if err := chromedp.Run(p.ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

func (p *page) fail(format string, args ...any) {
	p.t.Helper()
	var shot []byte
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&shot, 100)); err == nil {
		name := filepath.Join(p.dir, "FAILED-"+p.name+".png")
		if os.WriteFile(name, shot, 0o644) == nil {
			p.t.Logf("screenshot of the failure: %s", name)
		}
	}
	if errs := p.takeErrors(); len(errs) > 0 {
		p.t.Logf("page errors:\n  %s", strings.Join(errs, "\n  "))
	}
	p.t.Fatalf(format, args...)
}

// waitJS polls a JavaScript expression until it is truthy and returns its
// value as text.
func (p *page) waitJS(what, expr string) string {
	p.t.Helper()
	var res any
	p.run("waiting for "+what, chromedp.Poll(expr, &res,
		chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	return fmt.Sprint(res)
}

// eval evaluates a JavaScript expression into res.
func (p *page) eval(expr string, res any) {
	p.t.Helper()
	p.run("evaluate "+expr, chromedp.Evaluate(expr, res))
}

// text is the trimmed textContent of the first element matching sel ("" if none).
func (p *page) text(sel string) string {
	p.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`(document.querySelector(%s)?.textContent ?? '').trim()`, js(sel)), &s)
	return s
}

// waitText waits until the text of sel satisfies cond (a JS function body
// over the text t), and returns that text.
func (p *page) waitText(what, sel, cond string) string {
	p.t.Helper()
	return p.waitJS(what, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false;
		const t = e.textContent.trim(); return (%s) ? (t || ' ') : false; })()`, js(sel), cond))
}

// screenshot captures what the viewport shows, or with full the whole
// page: the viewport is made as tall as the document for the shot (a
// capture beyond the viewport would paint the sticky top bar mid-page).
func (p *page) screenshot(v viewport, full bool, files ...string) {
	p.t.Helper()
	var shot []byte
	if full {
		p.run("full-page screenshot", chromedp.ActionFunc(func(ctx context.Context) error {
			var h int64
			if err := chromedp.Evaluate(`Math.ceil(document.documentElement.scrollHeight)`, &h).Do(ctx); err != nil {
				return err
			}
			if err := v.emulate(h).Do(ctx); err != nil {
				return err
			}
			if err := chromedp.Evaluate(`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, nil,
				func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }).Do(ctx); err != nil {
				return err
			}
			if err := chromedp.CaptureScreenshot(&shot).Do(ctx); err != nil {
				return err
			}
			return v.emulate(v.height).Do(ctx)
		}))
	} else {
		p.run("screenshot", chromedp.CaptureScreenshot(&shot))
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			p.t.Fatal(err)
		}
		if err := os.WriteFile(f, shot, 0o644); err != nil {
			p.t.Fatal(err)
		}
		p.t.Logf("screenshot %s (%d bytes)", f, len(shot))
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var durationRE = regexp.MustCompile(`^(\d+[dhm] )*\d+s$`)

type viewport struct {
	name   string
	width  int64
	height int64
	phone  bool
}

// emulate sets the viewport's size (a phone: 2x pixels, mobile, touch).
func (v viewport) emulate(height int64) chromedp.EmulateAction {
	if v.phone {
		return chromedp.EmulateViewport(v.width, height, chromedp.EmulateScale(2), chromedp.EmulateMobile)
	}
	return chromedp.EmulateViewport(v.width, height)
}

// TestDashboard drives the dashboard at /ui/ in headless Chromium against a
// real gateway and redis-server, at desktop and phone widths: the node
// overview fills and refreshes, the live subscriber pane receives what the
// provisioning form sends (over SSE, then WebSocket), and the search box
// opens the queue inspector and the transaction view. Screenshots are saved
// to $POPBOX_TEST_ARTIFACTS (and, with POPBOX_UPDATE_SCREENSHOTS=1, to
// docs/img for the README).
func TestDashboard(t *testing.T) {
	bin := chromiumPath(t)
	start := time.Now()
	r := testenv.StartRedis(t)
	g := testenv.StartNode(t, r.URL())
	t.Logf("redis and gateway up in %v", time.Since(start).Round(time.Millisecond))

	dir := artifactDir(t)
	var docs string
	if os.Getenv("POPBOX_UPDATE_SCREENSHOTS") == "1" {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		docs = filepath.Join(root, "docs", "img")
	}

	ctx, stop, out := browser(t, bin)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	t.Logf("chromium up after %v", time.Since(start).Round(time.Millisecond))
	defer func() {
		if t.Failed() && out.Len() > 0 {
			var keep []string
			for _, l := range strings.Split(out.String(), "\n") {
				if !strings.Contains(l, "dbus") && strings.TrimSpace(l) != "" {
					keep = append(keep, l)
				}
			}
			t.Logf("chromium output (without the D-Bus noise):\n%s", strings.Join(keep, "\n"))
		}
	}()

	counts := &totals{}
	for _, v := range []viewport{
		{name: "desktop", width: 1280, height: 900},
		{name: "phone", width: 375, height: 812, phone: true},
	} {
		ok := t.Run(v.name, func(t *testing.T) {
			began := time.Now()
			p := &page{t: t, ctx: ctx, dir: dir, name: v.name}
			p.watch()
			dashboardFlow(p, g.URL, v, counts, dir, docs)
			t.Logf("%s flow took %v", v.name, time.Since(began).Round(time.Millisecond))
		})
		if !ok {
			break
		}
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// totals is what the gateway has counted so far, across the flows.
type totals struct{ provisioned, delivered int }

func dashboardFlow(p *page, base string, v viewport, counts *totals, dir, docs string) {
	t := p.t
	// A fresh load: the page of the previous flow (and its subscriber) goes away.
	p.run("open /ui/", chromedp.Navigate("about:blank"), v.emulate(v.height), chromedp.Navigate(base+"/ui/"),
		chromedp.WaitReady("#sub-form", chromedp.ByQuery))

	// --- Node overview: filled from GET / and refreshed.
	p.waitJS("node overview", `document.querySelector('#node-status').dataset.state === 'ok'`)
	if s := p.text("#node-name"); s != "popbox" {
		t.Errorf("#node-name = %q", s)
	}
	for _, id := range []string{"#node-id", "#node-version", "#node-started"} {
		if s := p.text(id); s == "" || s == "…" || s == "–" {
			t.Errorf("%s = %q", id, s)
		}
	}
	if s := p.text("#node-uptime"); !durationRE.MatchString(s) {
		t.Errorf("#node-uptime = %q, want a duration like 1m 5s", s)
	}
	if s := p.text("#redis-mode"); s != "single" {
		t.Errorf("#redis-mode = %q, want single", s)
	}
	var redisRows []string
	p.eval(`[...document.querySelectorAll('#redis-nodes tr')].map(tr => tr.textContent.trim())`, &redisRows)
	if len(redisRows) != 1 || !strings.Contains(redisRows[0], "127.0.0.1:") || !strings.Contains(redisRows[0], "yes") {
		t.Errorf("#redis-nodes rows = %q, want one reachable 127.0.0.1 node", redisRows)
	}
	// The uptime moves on by itself (the overview polls every 2 s).
	up := p.text("#node-uptime")
	p.waitText("uptime to move", "#node-uptime", fmt.Sprintf("t !== %s", js(up)))

	live, inbox := "live-"+v.name, "inbox-"+v.name

	// --- Live subscriber over SSE.
	p.run("start SSE subscriber",
		chromedp.SetValue("#sub-queue", live, chromedp.ByQuery),
		chromedp.SetValue("#sub-transport", "sse", chromedp.ByQuery),
		chromedp.Click("#sub-start", chromedp.ByQuery))
	p.waitJS("SSE subscriber connected", `(() => { const s = document.querySelector('#sub-status');
		return s.dataset.state === 'connected' && s.textContent.includes('SSE'); })()`)
	p.waitText("overview to count the SSE connection", "#conn-sse", "t === '1'")

	// --- Provision through the form: one message for the live queue and
	// an inbox nobody reads.
	payload1 := `<b>hello</b> from the dashboard & "` + v.name + `" ✓`
	tid1 := provisionForm(p, payload1, "H", live+", "+inbox)
	counts.provisioned += 2
	got := p.waitText("the message in #sub-messages",
		fmt.Sprintf(`#sub-messages li[data-transaction=%s] pre.payload`, js(tid1)), "true")
	if got != strings.TrimSpace(payload1) {
		t.Errorf("live pane shows %q, want %q", got, payload1)
	}
	var bold int
	p.eval(`document.querySelectorAll('#sub-messages b, #trans-meta b').length`, &bold)
	if bold != 0 {
		t.Errorf("the payload's <b> became markup: the page must use textContent")
	}
	counts.delivered++

	// --- Same pane over WebSocket.
	p.run("stop SSE", chromedp.Click("#sub-stop", chromedp.ByQuery))
	p.waitJS("subscriber stopped", `document.querySelector('#sub-status').dataset.state === 'idle'`)
	p.run("start WebSocket subscriber",
		chromedp.SetValue("#sub-transport", "ws", chromedp.ByQuery),
		chromedp.Click("#sub-start", chromedp.ByQuery))
	p.waitJS("WebSocket subscriber connected", `(() => { const s = document.querySelector('#sub-status');
		return s.dataset.state === 'connected' && s.textContent.includes('WebSocket'); })()`)
	p.waitText("overview to count the WebSocket", "#conn-ws", "t === '1'")
	p.waitText("overview to drop the SSE connection", "#conn-sse", "t === '0'")

	payload2 := "second message, low priority, over WebSocket"
	tid2 := provisionForm(p, payload2, "L", live)
	counts.provisioned++
	p.waitText("the WebSocket message in #sub-messages",
		fmt.Sprintf(`#sub-messages li[data-transaction=%s] pre.payload`, js(tid2)), "t === "+js(payload2))
	counts.delivered++
	var order []string
	p.eval(`[...document.querySelectorAll('#sub-messages > li')].map(li => li.dataset.transaction)`, &order)
	if len(order) != 2 || order[0] != tid2 || order[1] != tid1 {
		t.Errorf("#sub-messages order = %v, want newest first [%s %s]", order, tid2, tid1)
	}
	if s := p.text("#sub-count"); s != "2" {
		t.Errorf("#sub-count = %q, want 2", s)
	}
	var prio string
	p.eval(fmt.Sprintf(`document.querySelector('#sub-messages li[data-transaction=%s] .badge')?.textContent ?? ''`, js(tid2)), &prio)
	if prio != "L" {
		t.Errorf("priority badge of the WebSocket message = %q, want L", prio)
	}
	p.waitText("provisioned counter", "#msg-provisioned", fmt.Sprintf("+t >= %d", counts.provisioned))
	p.waitText("delivered counter", "#msg-delivered", fmt.Sprintf("+t >= %d", counts.delivered))

	// --- Queue inspector, opened from the search box.
	search(p, inbox)
	p.waitJS("queue view", fmt.Sprintf(`!!document.querySelector('#queue-high li[data-transaction=%s]')`, js(tid1)))
	if s := p.text("#queue-size"); s != "1" {
		t.Errorf("#queue-size = %q, want 1", s)
	}
	if s := p.text("#queue-lastpop"); s != "never" {
		t.Errorf("#queue-lastpop = %q, want never", s)
	}
	if s := p.text("#queue-blocked"); s != "no" {
		t.Errorf("#queue-blocked = %q, want no", s)
	}
	if s := p.text("#queue-title"); !strings.Contains(s, inbox) {
		t.Errorf("#queue-title = %q", s)
	}
	var hash string
	p.eval(`location.hash`, &hash)
	if hash != "#q="+inbox {
		t.Errorf("location.hash = %q, want #q=%s", hash, inbox)
	}
	p.run("peek", chromedp.Click("#queue-peek", chromedp.ByQuery))
	p.waitText("peeked message", fmt.Sprintf(`#queue-peek-list li[data-transaction=%s] pre.payload`, js(tid1)),
		"t === "+js(strings.TrimSpace(payload1)))

	// --- Transaction view, opened from the search box with the id.
	search(p, tid1)
	p.waitJS("transaction view", fmt.Sprintf(`!!document.querySelector('#trans-queues tr[data-queue=%s]')`, js(inbox)))
	if s := p.text(fmt.Sprintf(`#trans-queues tr[data-queue=%s]`, js(live))); !strings.Contains(s, "Delivered") {
		t.Errorf("state on %s = %q, want Delivered", live, s)
	}
	if s := p.text(fmt.Sprintf(`#trans-queues tr[data-queue=%s]`, js(inbox))); !strings.Contains(s, "Pending") {
		t.Errorf("state on %s = %q, want Pending", inbox, s)
	}
	meta := map[string]string{}
	p.eval(`Object.fromEntries([...document.querySelectorAll('#trans-meta dt')].map(dt => [dt.textContent, dt.nextElementSibling.textContent]))`, &meta)
	if meta["payload"] != payload1 || meta["priority"] != "H" {
		t.Errorf("#trans-meta = %v, want payload %q and priority H", meta, payload1)
	}
	summary := map[string]string{}
	p.eval(`Object.fromEntries([...document.querySelectorAll('#trans-summary dt')].map(dt => [dt.textContent, dt.nextElementSibling.textContent]))`, &summary)
	if summary["totalNotifications"] != "2" || summary["Delivered"] != "1" || summary["Pending"] != "1" {
		t.Errorf("#trans-summary = %v, want 2 notifications, 1 Delivered, 1 Pending", summary)
	}
	p.waitText("history placeholder", "#trans-history", "t === 'history not enabled'")
	if s := p.text("#trans-title"); !strings.Contains(s, tid1) {
		t.Errorf("#trans-title = %q", s)
	}
	// A link in the transaction view goes back to the queue inspector.
	p.run("follow the queue link", chromedp.Click(fmt.Sprintf(`#trans-queues tr[data-queue=%s] a`, js(inbox)), chromedp.ByQuery))
	p.waitJS("queue view from the link", fmt.Sprintf(`location.hash === %s && document.querySelector('#queue-size').textContent === '1'`, js("#q="+inbox)))

	// --- Usable on a phone: nothing wider than the screen.
	var widths struct{ Doc, Win int }
	p.eval(`({doc: document.documentElement.scrollWidth, win: window.innerWidth})`, &widths)
	if widths.Doc > widths.Win {
		t.Errorf("page is %d px wide in a %d px window: horizontal scrolling", widths.Doc, widths.Win)
	}
	// A top bar that stays on screen while scrolling must stay small (on a
	// phone it wraps to a quarter of the screen, so it scrolls away there).
	var bar float64
	p.eval(`(() => { const b = document.querySelector('.topbar');
		return getComputedStyle(b).position === 'static' ? 0 : b.offsetHeight / innerHeight; })()`, &bar)
	if bar > 0.15 {
		t.Errorf("the sticky top bar covers %.0f%% of the screen", bar*100)
	}

	if errs := p.takeErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n  %s", strings.Join(errs, "\n  "))
	}

	// --- Screenshots: the whole page, scrolled to the top, after a fresh
	// refresh of the overview.
	p.run("scroll to top", chromedp.Evaluate(`window.scrollTo(0, 0)`, nil))
	p.waitText("a fresh overview", "#node-status", "true")
	time.Sleep(300 * time.Millisecond) // let the last refresh paint
	files := []string{filepath.Join(dir, "dashboard-"+v.name+".png")}
	if v.phone {
		// What a phone shows: the top of the page.
		p.screenshot(v, false, append(files, docFile(docs, "dashboard-phone.png")...)...)
		p.screenshot(v, true, filepath.Join(dir, "dashboard-phone-full.png"))
	} else {
		p.screenshot(v, true, append(files, docFile(docs, "dashboard.png")...)...)
	}
}

func docFile(docs, name string) []string {
	if docs == "" {
		return nil
	}
	return []string{filepath.Join(docs, name)}
}

// provisionForm fills and submits the provisioning form and returns the
// transaction id it shows.
func provisionForm(p *page, payload, prio, queues string) string {
	p.t.Helper()
	p.run("fill the provisioning form",
		chromedp.Evaluate(`document.querySelector('#prov-result').replaceChildren()`, nil),
		chromedp.SetValue("#prov-payload", payload, chromedp.ByQuery),
		chromedp.SetValue("#prov-priority", prio, chromedp.ByQuery),
		chromedp.SetValue("#prov-queues", queues, chromedp.ByQuery),
		chromedp.Click("#prov-submit", chromedp.ByQuery))
	tid := p.waitJS("#prov-tid", `(() => { const r = document.querySelector('#prov-result');
		const a = r.querySelector('#prov-tid'); if (a) return a.textContent;
		const e = r.querySelector('ul.errors'); return e ? 'ERROR ' + e.textContent : false; })()`)
	if !testenv.IsTransactionID(tid) {
		p.fail("provisioning form answered %q, want a transaction id", tid)
	}
	var href string
	p.eval(`document.querySelector('#prov-tid').getAttribute('href')`, &href)
	if href != "#t="+tid {
		p.t.Errorf("#prov-tid href = %q, want #t=%s", href, tid)
	}
	return tid
}

// search types into the search box and presses Enter.
func search(p *page, q string) {
	p.t.Helper()
	p.run("search "+q,
		chromedp.Evaluate(`document.querySelector('#search-input').value = ''`, nil),
		chromedp.SendKeys("#search-input", q+kb.Enter, chromedp.ByQuery))
}
