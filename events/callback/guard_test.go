package callback_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/callback"
	"github.com/popbox/popbox/internal/testenv"
)

func startSink(t *testing.T, o callback.Options) (*callback.Sink, *events.Bus) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testenv.QuietLogger()
	}
	cb := callback.New(o)
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testenv.CloseWithin(b, 5*time.Second) })
	return cb, b
}

// TestRefusedDestinations: link-local, unspecified and multicast
// destinations are never dialled; loopback and private ones only when
// allowed; the check is on the address dialled (a name resolving to
// loopback is refused as the address is); refused callbacks fail at once
// and are logged without credentials or query.
func TestRefusedDestinations(t *testing.T) {
	rec, srv := newRecorder(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	logs := &testenv.SyncBuffer{}
	cb, b := startSink(t, callback.Options{RefusePrivate: true, Retry: fastRetry(),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for _, u := range []string{
		srv.URL + "/direct",
		"http://localhost:" + port + "/by-name",
		"http://user:s3cret@169.254.169.254/latest/meta-data?token=t0ken",
		"http://[fe80::1]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"http://[::]:" + port + "/",
	} {
		b.Publish(delivered("t", u))
	}
	testenv.Eventually(t, 10*time.Second, "six final failures", func() bool { return cb.Stats().Failed == 6 })
	if st := cb.Stats(); st.Retry != 0 || st.OK != 0 {
		t.Errorf("refused destinations were retried or sent: %+v", st)
	}
	if _, total := rec.counts(); total != 0 {
		t.Fatalf("the loopback endpoint got %d requests with private destinations refused", total)
	}
	if l := logs.String(); strings.Contains(l, "s3cret") || strings.Contains(l, "t0ken") {
		t.Fatalf("credentials or query of a callback URL in the log:\n%s", l)
	}

	// Open provisioning: loopback allowed, link-local still refused.
	open, ob := startSink(t, callback.Options{Retry: fastRetry()})
	ob.Publish(delivered("t-open", srv.URL+"/open"))
	ob.Publish(delivered("t-meta", "http://169.254.169.254/latest/meta-data"))
	testenv.Eventually(t, 10*time.Second, "one sent, one refused", func() bool { st := open.Stats(); return st.OK == 1 && st.Failed == 1 })
	if got, _ := rec.counts(); got["t-open/q"] != 1 {
		t.Fatalf("loopback callback with private allowed: %v", got)
	}
}

// TestRedirectsNotFollowed: a 3xx is a final answer, the target is never
// called.
func TestRedirectsNotFollowed(t *testing.T) {
	rec, target := newRecorder(t, nil)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/inside", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	cb, b := startSink(t, callback.Options{Retry: fastRetry()})
	b.Publish(delivered("t", redirect.URL))
	testenv.Eventually(t, 10*time.Second, "a final failure", func() bool { return cb.Stats().Failed == 1 })
	if _, total := rec.counts(); total != 0 {
		t.Fatalf("redirect followed: the target got %d requests", total)
	}
}

// TestDeadDestinationDelaysOnlyItself: 40 callbacks to a host that never
// answers hold at most its share of the workers; another destination's
// callback goes out while they hang (issue 13 item 11: it waited 19 s
// behind them).
func TestDeadDestinationDelaysOnlyItself(t *testing.T) {
	release := make(chan struct{})
	var inflight, maxInflight atomic.Int64
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := maxInflight.Load(); n > m && !maxInflight.CompareAndSwap(m, n); m = maxInflight.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dead.Close)
	rec, healthy := newRecorder(t, nil)
	cb, b := startSink(t, callback.Options{Timeout: time.Minute, Retry: fastRetry()})
	t.Cleanup(func() { close(release) }) // before the sink closes: the dead host answers at last
	for i := range 40 {
		b.Publish(delivered(fmt.Sprint("dead", i), dead.URL))
	}
	testenv.Eventually(t, 10*time.Second, "requests to the dead host in flight", func() bool { return inflight.Load() > 0 })
	b.Publish(delivered("victim", healthy.URL))
	testenv.Eventually(t, 10*time.Second, "the other destination's callback", func() bool { got, _ := rec.counts(); return got["victim/q"] == 1 })
	if m := maxInflight.Load(); m > 4 {
		t.Fatalf("%d requests in flight to one destination, want at most 4 (16 workers / 4)", m)
	}
	// The healthy server records the victim before the sink counts its
	// answer, so Pending reaches 40 a moment after the victim is seen.
	testenv.Eventually(t, 10*time.Second, "only the 40 dead ones pending", func() bool { return cb.Stats().Pending == 40 })
}

// TestBreakerOpens: after BreakerFailures consecutive failures a
// destination gets no more requests until the cooldown passes; its
// callbacks fail their attempts at once.
func TestBreakerOpens(t *testing.T) {
	rec, srv := newRecorder(t, func(callback.Body, int) int { return http.StatusServiceUnavailable })
	cb, b := startSink(t, callback.Options{PerDestination: 1, BreakerFailures: 3, BreakerCooldown: time.Hour, Retry: fastRetry()})
	for i := range 10 {
		b.Publish(delivered(fmt.Sprint("t", i), srv.URL))
	}
	testenv.Eventually(t, 10*time.Second, "all ten failed", func() bool { return cb.Stats().Failed == 10 })
	if _, total := rec.counts(); total != 3 {
		t.Fatalf("the failing destination got %d requests, want 3 (the breaker threshold)", total)
	}
}
