package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// callbackSink records the callbacks it receives, by transaction.
type callbackSink struct {
	mu   sync.Mutex
	got  map[string]time.Time // transaction → when its callback arrived
	srv  *httptest.Server
	hits int
}

func newCallbackSink(t *testing.T) *callbackSink {
	s := &callbackSink{got: map[string]time.Time{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct{ Transaction string }
		_ = json.NewDecoder(r.Body).Decode(&b)
		s.mu.Lock()
		s.got[b.Transaction] = time.Now()
		s.hits++
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *callbackSink) arrived(tid string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.got[tid]
	return at, ok
}

func (s *callbackSink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// callbackOutcomes reads popbox_callbacks_total{outcome} from /metrics.
func (n *node) callbackOutcomes(t *testing.T) map[string]int {
	t.Helper()
	r := n.get(t, "/metrics")
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, `popbox_callbacks_total{outcome="`) {
			continue
		}
		rest := strings.TrimPrefix(line, `popbox_callbacks_total{outcome="`)
		name, val, _ := strings.Cut(rest, `"} `)
		v, _ := strconv.ParseFloat(val, 64)
		out[name] = int(v)
	}
	return out
}

// deliverWithCallback provisions one message with a callback to queue q,
// with admin Basic credentials when user is not empty, and pops it.
func (n *node) deliverWithCallback(t *testing.T, q, callback, user, pass string) string {
	t.Helper()
	var header http.Header
	if user != "" {
		header = http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
	}
	tid := n.provisionWith(t, "/trans", msg{"payload": "p", "priority": "H", "queue": target(q), "callback": callback}, header)
	if p := n.pop(t, "", q, "timeout=5"); len(p.Transactions) != 1 || p.Transactions[0] != tid {
		t.Fatalf("pop: %+v", p)
	}
	return tid
}

// TestCallbacksCannotReachInside (issue 13 item 11): link-local (cloud
// metadata) destinations are never called; loopback/private ones are
// called with open provisioning and refused with provisioning auth unless
// POPBOX_CALLBACK_ALLOW_PRIVATE=true; redirects are not followed; 40
// callbacks to a host that never answers do not delay another
// destination's callback (it waited 19 s).
func TestCallbacksCannotReachInside(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	open := startNode(t, r.URL())
	const admin, adminPass = "admin", "callback-admin-password"
	authEnv := []string{"POPBOX_PROVISION_AUTH=true", "POPBOX_ADMIN_USER=" + admin, "POPBOX_ADMIN_PASSWORD=" + adminPass}
	strict := startNode(t, r.URL(), testenv.WithEnv(authEnv...))
	allowed := startNode(t, r.URL(), testenv.WithEnv(append(authEnv, "POPBOX_CALLBACK_ALLOW_PRIVATE=true")...))
	sink := newCallbackSink(t)

	// Open provisioning: loopback called; link-local refused at once.
	tid := open.deliverWithCallback(t, qn(t, "open"), sink.srv.URL+"/cb", "", "")
	eventually(t, 20*time.Second, "loopback callback with open provisioning", func() bool { _, ok := sink.arrived(tid); return ok })
	open.deliverWithCallback(t, qn(t, "meta"), "http://169.254.169.254/latest/meta-data/?token=x", "", "")
	eventually(t, 20*time.Second, "the metadata callback refused", func() bool { return open.callbackOutcomes(t)["failed"] == 1 })
	if o := open.callbackOutcomes(t); o["retry"] != 0 {
		t.Fatalf("a refused destination was retried: %v", o)
	}
	if strings.Contains(open.g.Log(), "token=x") {
		t.Fatalf("callback URL logged with its query:\n%s", open.g.Log())
	}

	// A redirect is an answer, not an order.
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, sink.srv.URL+"/inside", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	before := sink.total()
	open.deliverWithCallback(t, qn(t, "redirect"), redirect.URL, "", "")
	eventually(t, 20*time.Second, "the redirected callback failed", func() bool { return open.callbackOutcomes(t)["failed"] == 2 })
	if sink.total() != before {
		t.Fatalf("the redirect was followed")
	}

	// Provisioning auth: tenants are strangers, loopback refused...
	tid = strict.deliverWithCallback(t, qn(t, "strict"), sink.srv.URL+"/strict", admin, adminPass)
	eventually(t, 20*time.Second, "loopback refused with provisioning auth", func() bool { return strict.callbackOutcomes(t)["failed"] == 1 })
	if _, ok := sink.arrived(tid); ok {
		t.Fatalf("loopback callback sent with provisioning auth on")
	}
	// ...unless POPBOX_CALLBACK_ALLOW_PRIVATE=true.
	tid = allowed.deliverWithCallback(t, qn(t, "allowed"), sink.srv.URL+"/allowed", admin, adminPass)
	eventually(t, 20*time.Second, "loopback callback allowed explicitly", func() bool { _, ok := sink.arrived(tid); return ok })

	// A host that never answers delays only itself.
	dead := testenv.HangingServer(t)
	qd := qn(t, "dead")
	for i := range 40 {
		open.provision(t, "", msg{"payload": fmt.Sprint(i), "priority": "H", "queue": target(qd), "callback": dead.URL + "/never"})
	}
	if p := open.pop(t, "", qd, "max=40"); len(p.Data) != 40 {
		t.Fatalf("popped %d of 40", len(p.Data))
	}
	start := time.Now()
	tid = open.deliverWithCallback(t, qn(t, "victim"), sink.srv.URL+"/victim", "", "")
	eventually(t, 30*time.Second, "the other destination's callback", func() bool { _, ok := sink.arrived(tid); return ok })
	took := time.Since(start)
	t.Logf("callback to a healthy destination behind 40 to a dead one: %v", took)
	if took > 8*time.Second {
		t.Fatalf("a healthy destination's callback waited %v behind a dead host (request timeout 10 s)", took)
	}
}
