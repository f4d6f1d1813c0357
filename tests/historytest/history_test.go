package historytest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestHistoryTimeline: provision → poprel → ack on one queue and a plain
// pop on another are recorded in order with the right fields, and the
// history endpoints serve them.
func TestHistoryTimeline(t *testing.T) {
	t.Parallel()
	var callbacks atomic.Int64
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { callbacks.Add(1) }))
	defer cb.Close()
	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t)
	n := startNode(t, r.URL(), mongoEnv(m)...)
	if n.name == "" {
		t.Fatal("no node name in the gateway log")
	}

	start := time.Now().Add(-time.Second) // clock granularity / skew margin
	cbURL := cb.URL + "/delivered"
	body := testenv.Message("hello", "H", "tl-rel", "tl-plain")
	body["callback"] = cbURL
	tid, _, err := n.TryProvision(context.Background(), "/trans", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Pop(t, "/queue/tl-rel/poprel?timeout=1&timeoutACK=60").Transactions; !slices.Equal(got, []string{tid}) {
		t.Fatalf("poprel = %v, want [%s]", got, tid)
	}
	n.Must(t, http.MethodPost, "/queue/tl-rel/ack", fmt.Sprintf(`{"transactions":[%q]}`, tid), http.StatusOK)
	if got := n.Pop(t, "/queue/tl-plain/pop?timeout=1").Transactions; !slices.Equal(got, []string{tid}) {
		t.Fatalf("pop = %v, want [%s]", got, tid)
	}
	// Peek of an empty queue and pops that find nothing record nothing.
	n.Must(t, http.MethodGet, "/queue/tl-plain/peek", nil, http.StatusOK)

	evs := n.transHistory(t, tid, 6)
	end := time.Now().Add(time.Second)
	want := []string{"provision", "Pending@tl-rel", "Pending@tl-plain", "Blocked@tl-rel", "Delivered@tl-rel", "Delivered@tl-plain"}
	if got := whats(evs); !slices.Equal(got, want) {
		t.Fatalf("trans history = %v, want %v", got, want)
	}
	for i, e := range evs {
		where := fmt.Sprintf("event %d (%s): %+v", i, e.what(), e)
		if e.Transaction != tid || e.Node != n.name || e.Namespace != "UNSEC:" {
			t.Errorf("%s: want transaction %s, node %s, namespace UNSEC:", where, tid, n.name)
		}
		if e.Time.Before(start) || e.Time.After(end) {
			t.Errorf("%s: time outside the run [%v, %v]", where, start, end)
		}
		if i > 0 && e.Time.Before(evs[i-1].Time) {
			t.Errorf("%s: earlier than the event before it (%v)", where, evs[i-1].Time)
		}
		if e.Payload != "" {
			t.Errorf("%s: payload recorded without POPBOX_HISTORY_PAYLOADS", where)
		}
		switch {
		case e.Kind == "action":
			if e.Action != "provision" || e.Count != 2 || e.Queue != "" {
				t.Errorf("%s: want the provision action with count 2", where)
			}
		case e.Kind == "state":
			if e.Callback != cbURL {
				t.Errorf("%s: callback %q, want %q", where, e.Callback, cbURL)
			}
			wantTransport := map[string]string{
				"Pending@tl-rel": "", "Pending@tl-plain": "",
				"Blocked@tl-rel": "longpoll", "Delivered@tl-rel": "ack", "Delivered@tl-plain": "longpoll",
			}[e.what()]
			if e.Transport != wantTransport {
				t.Errorf("%s: transport %q, want %q", where, e.Transport, wantTransport)
			}
		default:
			t.Errorf("%s: unknown kind", where)
		}
	}

	// The queue's history holds the actions on it too: pop and ack with
	// their counts (actions carry no transaction: one pop may take many).
	qevs, _ := n.queueHistory(t, "tl-rel", 100)
	wantQ := []string{"Pending@tl-rel", "pop@tl-rel", "Blocked@tl-rel", "ack@tl-rel", "Delivered@tl-rel"}
	if got := whats(qevs); !slices.Equal(got, wantQ) {
		t.Fatalf("queue tl-rel history = %v, want %v", got, wantQ)
	}
	if p := qevs[1]; p.Count != 1 || p.Transport != "longpoll" || p.Node != n.name || p.Namespace != "UNSEC:" {
		t.Errorf("pop action = %+v, want count 1, transport longpoll", p)
	}
	if a := qevs[3]; a.Count != 1 || a.Node != n.name {
		t.Errorf("ack action = %+v, want count 1", a)
	}
	// Namespaces are separate: the same queue name under an org has no
	// history.
	if evs := n.history(t, "/org/acme/queue/tl-rel/history"); len(evs) != 0 {
		t.Errorf("org acme queue tl-rel history = %v, want none", whats(evs))
	}
	// Unknown transaction: an empty list.
	if evs := n.history(t, "/trans/00000000-0000-4000-8000-000000000000/history"); len(evs) != 0 {
		t.Errorf("unknown transaction history = %v", whats(evs))
	}
	// Bad since: 400.
	n.Must(t, http.MethodGet, "/queue/tl-rel/history?since=yesterday", nil, http.StatusBadRequest)

	// A peek that finds messages is recorded with its count; the delivery
	// callbacks fired once per queue.
	tid2 := n.Provision(t, "peeked", "H", "tl-peek")
	n.Must(t, http.MethodGet, "/queue/tl-peek/peek", nil, http.StatusOK)
	testenv.Eventually(t, 20*time.Second, "queue tl-peek history [Pending@tl-peek peek@tl-peek] (tid "+tid2+")", func() bool {
		evs = n.history(t, "/queue/tl-peek/history")
		return slices.Equal(whats(evs), []string{"Pending@tl-peek", "peek@tl-peek"}) && evs[1].Count == 1
	}, func() string { return fmt.Sprint(whats(evs)) })
	testenv.Eventually(t, 20*time.Second, "2 delivery callbacks", func() bool { return callbacks.Load() == 2 },
		func() string { return fmt.Sprint(callbacks.Load()) })
}

// TestHistoryPayloads: POPBOX_HISTORY_PAYLOADS=true records payloads in
// state events.
func TestHistoryPayloads(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t)
	n := startNode(t, r.URL(), append(mongoEnv(m), "POPBOX_HISTORY_PAYLOADS=true")...)
	tid := n.Provision(t, "the payload", "H", "pl")
	n.Pop(t, "/queue/pl/pop?timeout=1")
	evs := n.transHistory(t, tid, 3)
	for _, e := range evs {
		if e.Kind == "state" && e.Payload != "the payload" {
			t.Errorf("%s: payload %q, want %q", e.what(), e.Payload, "the payload")
		}
	}
}

// TestQueueHistoryPaging: GET /queue/{id}/history?since=&limit= pages
// through every event of a queue exactly once, also when one pop puts
// many events in the same millisecond.
func TestQueueHistoryPaging(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	m := testenv.StartMongo(t)
	n := startNode(t, r.URL(), mongoEnv(m)...)

	const msgs = 40
	var tids []string
	for i := range msgs {
		tids = append(tids, n.Provision(t, fmt.Sprint("p", i), "H", "paged"))
	}
	// One pop of 25 (25 Delivered events stamped in one millisecond),
	// then the rest one by one.
	got := n.Pop(t, "/queue/paged/pop?timeout=1&max=25").Transactions
	for len(got) < msgs {
		got = append(got, n.Pop(t, "/queue/paged/pop?timeout=1&max=1").Transactions...)
	}
	if !slices.Equal(got, tids) {
		t.Fatalf("popped %v, want %v", got, tids)
	}
	wantEvents := msgs /* Pending */ + msgs /* Delivered */ + 1 + (msgs - 25) /* pop actions */
	var all []event
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("queue history has %d events", wantEvents), func() bool {
		all = n.history(t, "/queue/paged/history?limit=1000")
		return len(all) == wantEvents
	}, func() string { return fmt.Sprint(len(all), " events") })

	for _, limit := range []int{1, 7, 10, 100} {
		paged, pages := n.queueHistory(t, "paged", limit)
		if !sameEvents(paged, all) {
			t.Fatalf("limit %d: %d pages gave %d events, want the %d of one big page\npaged: %v\nall:   %v",
				limit, pages, len(paged), len(all), whats(paged), whats(all))
		}
		if limit >= 10 && pages > wantEvents/limit+10 {
			t.Errorf("limit %d: %d pages for %d events", limit, pages, wantEvents)
		}
		t.Logf("limit %d: %d pages", limit, pages)
	}
	// Default page size is 100, the largest 1000.
	if evs := n.history(t, "/queue/paged/history"); len(evs) != wantEvents {
		t.Errorf("default page: %d events, want all %d", len(evs), wantEvents)
	}
	// since is exclusive.
	after := n.history(t, "/queue/paged/history?since="+all[0].Time.Format(time.RFC3339Nano))
	for _, e := range after {
		if !e.Time.After(all[0].Time) {
			t.Fatalf("since=%v returned %+v", all[0].Time, e)
		}
	}
}

// sameEvents reports whether a and b hold the same events in the same
// order.
func sameEvents(a, b []event) bool {
	return slices.EqualFunc(a, b, func(x, y event) bool { return x == y })
}

// TestHistoryOff: without POPBOX_MONGO_URI the history routes answer 503
// with a clear error, and everything else works.
func TestHistoryOff(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	n := startNode(t, r.URL())
	tid := n.Provision(t, "x", "H", "off")
	n.Pop(t, "/queue/off/pop?timeout=1")
	for _, path := range []string{
		"/trans/" + tid + "/history",
		"/queue/off/history",
		"/queue/off/history?since=2024-01-01T00:00:00Z&limit=5",
		"/org/acme/queue/off/history",
		"/org/acme/trans/" + tid + "/history",
	} {
		b := n.Must(t, http.MethodGet, path, nil, http.StatusServiceUnavailable).Body
		if !strings.Contains(string(b), `"errors"`) || !strings.Contains(string(b), "history is not enabled") ||
			!strings.Contains(string(b), "POPBOX_MONGO_URI") {
			t.Errorf("GET %s = 503 %s, want a clear {\"errors\": [...]} naming POPBOX_MONGO_URI", path, b)
		}
	}
	if v := n.metric(t, "popbox_events_dropped_total", `sink="history"`); v != 0 {
		t.Errorf("history drops without history: %v", v)
	}
}
