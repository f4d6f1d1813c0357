package uitest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/popbox/popbox/internal/testenv"
)

// TestDashboardEdges drives the dashboard items of issue 15.6 in headless
// Chromium against a real gateway, with the browser in another time zone
// than the gateway (Asia/Kolkata, UTC+5:30): times are shown in the
// browser's local time, human-readable; the node overview lists the queues
// this node serves now with their waiter counts (long polls from outside
// and the page's own multiplexed subscriber); a #q= or #t= deep link fills
// the search box.
func TestDashboardEdges(t *testing.T) {
	bin := chromiumPath(t)
	zone, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	r := testenv.StartRedis(t)
	g := testenv.StartNode(t, r.URL())

	p := openPage(t, bin, "edges", 90*time.Second)

	// A message popped once (lastPop) and one waiting, for the views.
	g.Provision(t, "first", "H", "edge-q")
	tid := g.Provision(t, "second", "H", "edge-q")
	g.Pop(t, "/queue/edge-q/pop?max=1&timeout=1")
	var info struct {
		StartedAt time.Time
	}
	g.GetJSON(t, "/", &info)
	var queue struct{ LastPop string }
	g.GetJSON(t, "/queue/edge-q", &queue)

	// --- A deep link fills the search box (and opens the view).
	p.run("open a deep link in Asia/Kolkata",
		emulation.SetTimezoneOverride("Asia/Kolkata"),
		chromedp.Navigate(g.URL+"/ui/#q=edge-q&org="),
		chromedp.WaitReady("#sub-form", chromedp.ByQuery))
	p.waitJS("the queue view", `document.querySelector('#queue-size').textContent === '1'`)
	var search struct{ Q, Org string }
	p.eval(`({q: document.querySelector('#search-input').value, org: document.querySelector('#search-org').value})`, &search)
	if search.Q != "edge-q" || search.Org != "" {
		t.Errorf("search box after #q=edge-q: %+v", search)
	}
	p.run("follow a transaction deep link", chromedp.Evaluate(fmt.Sprintf(`location.hash = '#t=%s'`, tid), nil))
	p.waitJS("the search box to hold the tid", fmt.Sprintf(`document.querySelector('#search-input').value === %s`, js(tid)))
	p.run("an org deep link", chromedp.Evaluate(`location.hash = '#q=other&org=acme'`, nil))
	p.waitJS("the search box to hold queue and org", `document.querySelector('#search-input').value === 'other' &&
		document.querySelector('#search-org').value === 'acme'`)

	// --- Times in the browser's zone: node start and last pop.
	localFmt := "1/2/2006, 3:04:05 PM" // toLocaleString() of en-US
	p.waitJS("the overview", `document.querySelector('#node-status').dataset.state === 'ok'`)
	started := p.text("#node-started")
	if want := info.StartedAt.In(zone).Format(localFmt); !strings.HasPrefix(started, want+" (") || !strings.HasSuffix(started, " ago)") {
		t.Errorf("#node-started = %q, want %q (local time of %s) and how long ago", started, want, info.StartedAt)
	}
	var dt string
	p.eval(`document.querySelector('#node-started time').getAttribute('datetime')`, &dt)
	if at, err := time.Parse(time.RFC3339Nano, dt); err != nil || !at.Equal(info.StartedAt.Truncate(time.Millisecond)) {
		t.Errorf("#node-started datetime = %q, want %s", dt, info.StartedAt)
	}
	unix, err := strconv.ParseInt(queue.LastPop, 10, 64)
	if err != nil {
		t.Fatalf("lastPop %q: %v", queue.LastPop, err)
	}
	p.run("back to the queue", chromedp.Evaluate(`location.hash = '#q=edge-q'`, nil))
	p.waitJS("the queue view", `document.querySelector('#queue-size').textContent === '1'`)
	if got, want := p.text("#queue-lastpop"), time.Unix(unix, 0).In(zone).Format(localFmt); !strings.HasPrefix(got, want+" (") {
		t.Errorf("#queue-lastpop = %q, want %q (local time of %s)", got, want, time.Unix(unix, 0).UTC())
	}

	// --- The queues this node serves: two long polls from outside and the
	// page's own subscriber.
	pctx, stopPolls := context.WithCancel(context.Background())
	defer stopPolls()
	for range 2 {
		go func() {
			req, _ := http.NewRequestWithContext(pctx, http.MethodPost, g.URL+"/queue/waiting-q/pop?timeout=60", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	p.run("start a multiplexed subscriber",
		chromedp.SetValue("#sub-queue", "live-q", chromedp.ByQuery),
		chromedp.SetValue("#sub-transport", "mux", chromedp.ByQuery),
		chromedp.Click("#sub-start", chromedp.ByQuery))
	p.waitJS("the subscriber", `document.querySelector('#sub-status').dataset.state === 'connected'`)
	p.waitJS("the queues served now", `(() => {
		const n = (q) => document.querySelector('#node-queues tr[data-queue="' + q + '"] td.waiters')?.textContent;
		return n('waiting-q') === '2' && n('live-q') === '1'; })()`)
	var order []string
	p.eval(`[...document.querySelectorAll('#node-queues tr[data-queue]')].map(tr => tr.dataset.queue)`, &order)
	if len(order) != 2 || order[0] != "waiting-q" {
		t.Errorf("#node-queues rows = %v, want waiting-q (2 waiters) first, then live-q", order)
	}
	p.run("open a served queue", chromedp.Click(`#node-queues tr[data-queue="waiting-q"] a`, chromedp.ByQuery))
	p.waitJS("its view", `location.hash === '#q=waiting-q' && document.querySelector('#queue-blocked').textContent.startsWith('yes')`)
	stopPolls()
	p.run("stop the subscriber", chromedp.Click("#sub-stop", chromedp.ByQuery))
	p.waitJS("the list to empty", `document.querySelector('#node-queues').textContent.includes('no consumers waiting')`)

	if errs := p.takeErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n  %s", strings.Join(errs, "\n  "))
	}
}
