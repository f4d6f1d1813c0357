package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

// promScrape is one parsed scrape of /metrics.
type promScrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, base string) promScrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(metricsText(t, base)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of series (name and labels) on the node's
// /metrics; 0 when it is not there.
func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	return seriesValue(metricsText(t, base), series)
}

// metricsText is the node's /metrics (Prometheus text exposition).
func metricsText(t *testing.T, base string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	status, h, b := send(t, req)
	if status != 200 {
		t.Fatalf("GET /metrics: %d %s", status, b)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics Content-Type %q", ct)
	}
	return string(b)
}

// seriesValue is the value of series (name and labels) in a Prometheus
// text exposition; 0 when it is not there.
func seriesValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// value is the value of a counter or gauge sample, or the sample count of a
// histogram, whose labels include the given name=value pairs (summed over
// the samples that match); ok is false when no sample matches.
func (s promScrape) value(name string, labels ...string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
	}
	return v, ok
}

func (s promScrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no %s%v", name, labels)
	}
	return v
}

// waitMetric scrapes until cond holds for the series (10 s at most).
func waitMetric(t *testing.T, base, what string, cond func(float64) bool, name string, labels ...string) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := scrapeMetrics(t, base).value(name, labels...)
		if ok && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v = %v (present %v)", what, name, labels, v, ok)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func eq(want float64) func(float64) bool   { return func(v float64) bool { return v == want } }
func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }

// TestMetrics: /metrics serves the named series from the start, with the
// right types and labels, and they move when traffic flows: provisioning,
// a long poll (connection while it waits, pop latency, delivery), SSE and
// WebSocket subscribers (connection gauges, deliveries, write latency), a
// delivery callback, HTTP requests by route and status, Redis command
// latency, and Redis errors once the server goes away.
func TestMetrics(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.OwnRedis()) // stopped at the end
	g := testenv.StartGateway(t, r.URL())
	var callbacks atomic.Int64
	cbSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		callbacks.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer cbSrv.Close()

	// --- Every named series is there before any traffic, with its type.
	s0 := scrapeMetrics(t, g.URL)
	types := map[string]dto.MetricType{
		"popbox_connections":                     dto.MetricType_GAUGE,
		"popbox_messages_provisioned_total":      dto.MetricType_COUNTER,
		"popbox_messages_delivered_total":        dto.MetricType_COUNTER,
		"popbox_pop_duration_seconds":            dto.MetricType_HISTOGRAM,
		"popbox_delivery_write_seconds":          dto.MetricType_HISTOGRAM,
		"popbox_redis_errors_total":              dto.MetricType_COUNTER,
		"popbox_redis_command_duration_seconds":  dto.MetricType_HISTOGRAM,
		"popbox_callbacks_total":                 dto.MetricType_COUNTER,
		"popbox_events_dropped_total":            dto.MetricType_COUNTER,
		"popbox_slow_consumer_disconnects_total": dto.MetricType_COUNTER,
		"popbox_http_requests_total":             dto.MetricType_COUNTER,
	}
	var missing []string
	for name, typ := range types {
		f := s0[name]
		switch {
		case f == nil || len(f.GetMetric()) == 0:
			missing = append(missing, name)
		case f.GetType() != typ:
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), typ)
		case f.GetHelp() == "":
			t.Errorf("%s has no HELP", name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("/metrics lacks %v", missing)
	}
	for _, tr := range []string{"longpoll", "stream", "sse", "ws", "wsmux"} {
		if v := s0.must(t, "popbox_connections", "transport", tr); v != 0 {
			t.Errorf(`popbox_connections{transport=%q} = %v before any consumer`, tr, v)
		}
		s0.must(t, "popbox_messages_delivered_total", "transport", tr)
	}
	for _, tr := range []string{"stream", "sse", "ws", "wsmux"} {
		s0.must(t, "popbox_slow_consumer_disconnects_total", "transport", tr)
		s0.must(t, "popbox_delivery_write_seconds", "transport", tr)
	}
	for _, o := range []string{"ok", "retry", "failed", "dropped"} {
		s0.must(t, "popbox_callbacks_total", "outcome", o)
	}
	for _, reason := range []string{"buffer_full", "write_failed", "closed"} {
		s0.must(t, "popbox_events_dropped_total", "sink", "callback", "reason", reason)
	}
	if v := s0.must(t, "popbox_redis_errors_total"); v != 0 {
		t.Errorf("popbox_redis_errors_total = %v with a healthy Redis", v)
	}
	// The test harness waited for /healthz: counted by route and status.
	s0.must(t, "popbox_http_requests_total", "method", "GET", "route", "/healthz", "code", "200")
	redisCmds0 := s0.must(t, "popbox_redis_command_duration_seconds")

	// --- A long poll: counted as a connection while it waits.
	popped := make(chan []string, 1)
	go func() {
		resp, err := http.Post(g.URL+"/queue/m-pop/pop?timeout=10", "application/json", nil)
		if err != nil {
			popped <- []string{err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		popped <- []string{string(b)}
	}()
	waitMetric(t, g.URL, "waiting long poll", eq(1), "popbox_connections", "transport", "longpoll")
	provision(t, g.URL, "m-pop", "H", "for the long poll")
	select {
	case b := <-popped:
		if !strings.Contains(b[0], "for the long poll") {
			t.Fatalf("long poll answered %s", b[0])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not answer")
	}
	waitMetric(t, g.URL, "long poll done", eq(0), "popbox_connections", "transport", "longpoll")
	// And a pop that finds two messages at once.
	provision(t, g.URL, "m-pop", "H", "a")
	provision(t, g.URL, "m-pop", "L", "b")
	if payloads, _ := popHTTP(t, g.URL, "/queue/m-pop/pop?timeout=1"); len(payloads) != 2 {
		t.Fatalf("pop got %v, want 2 messages", payloads)
	}

	// --- SSE: a connected subscriber is counted, its deliveries timed, and
	// the delivery fires the callback.
	sse := subscribe(t, g.URL, "sse", "m-sse", "")
	waitMetric(t, g.URL, "SSE subscriber", eq(1), "popbox_connections", "transport", "sse")
	tid := provision(t, g.URL, "m-sse", "H", "over SSE", fmt.Sprintf(`,"callback":%q`, cbSrv.URL+"/cb"))
	if m := next(t, sse, 5*time.Second); m.TID != tid {
		t.Fatalf("SSE got %+v, want %s", m, tid)
	}
	waitMetric(t, g.URL, "callback outcome", eq(1), "popbox_callbacks_total", "outcome", "ok")
	if n := callbacks.Load(); n != 1 {
		t.Errorf("callback receiver got %d POSTs, want 1", n)
	}

	// --- WebSocket likewise; the SSE subscriber goes away.
	ws := subscribe(t, g.URL, "ws", "m-ws", "")
	waitMetric(t, g.URL, "WebSocket subscriber", eq(1), "popbox_connections", "transport", "ws")
	provision(t, g.URL, "m-ws", "L", "over WebSocket")
	next(t, ws, 5*time.Second)
	sse.close()
	waitMetric(t, g.URL, "SSE subscriber gone", eq(0), "popbox_connections", "transport", "sse")

	// A provisioning the gateway refuses.
	resp, err := http.Post(g.URL+"/trans", "application/json", strings.NewReader(`{"payload":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad provisioning: %d", resp.StatusCode)
	}

	// --- What moved.
	s1 := scrapeMetrics(t, g.URL)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"popbox_messages_provisioned_total", nil, 5},
		{"popbox_messages_delivered_total", []string{"transport", "longpoll"}, 3},
		{"popbox_messages_delivered_total", []string{"transport", "sse"}, 1},
		{"popbox_messages_delivered_total", []string{"transport", "ws"}, 1},
		{"popbox_messages_delivered_total", nil, 5},
		{"popbox_pop_duration_seconds", nil, 2}, // observations
		{"popbox_delivery_write_seconds", []string{"transport", "sse"}, 1},
		{"popbox_delivery_write_seconds", []string{"transport", "ws"}, 1},
		{"popbox_connections", []string{"transport", "ws"}, 1},
		{"popbox_connections", []string{"transport", "sse"}, 0},
		{"popbox_http_requests_total", []string{"method", "POST", "route", "/trans", "code", "200"}, 5},
		{"popbox_http_requests_total", []string{"method", "POST", "route", "/trans", "code", "400"}, 1},
		{"popbox_http_requests_total", []string{"method", "POST", "route", "/queue/:id/pop", "code", "200"}, 2},
		{"popbox_callbacks_total", []string{"outcome", "ok"}, 1},
		{"popbox_callbacks_total", []string{"outcome", "failed"}, 0},
		{"popbox_events_dropped_total", nil, 0},
		{"popbox_slow_consumer_disconnects_total", nil, 0},
		{"popbox_redis_errors_total", nil, 0},
	} {
		if got := s1.must(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Pop latency: the first pop waited for its message, the second did not.
	if h := s1["popbox_pop_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() <= 0 {
		t.Errorf("popbox_pop_duration_seconds sum = %v", h.GetSampleSum())
	}
	if n := s1.must(t, "popbox_redis_command_duration_seconds"); n <= redisCmds0+10 {
		t.Errorf("popbox_redis_command_duration_seconds: %v observations after %v: Redis traffic not timed", n, redisCmds0)
	}

	// --- Redis goes away: commands fail and are counted.
	ws.close()
	r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/readyz", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz with Redis down: %d, want 503", resp.StatusCode)
		}
	}
	waitMetric(t, g.URL, "Redis errors", atLeast(1), "popbox_redis_errors_total")
	waitMetric(t, g.URL, "readyz 503 counted", eq(1), "popbox_http_requests_total", "route", "/readyz", "code", "503")
}

// waitMetricValue polls a series of base's /metrics until it has the value
// want (deadline 30 s).
func waitMetricValue(t *testing.T, base, series string, want float64) {
	t.Helper()
	waitSeries(t, series, want, 50*time.Millisecond, func() float64 { return metricValue(t, base, series) })
}

// waitSeries polls read, every interval (not a settle delay), until the
// series it reads has the value want (deadline 30 s).
func waitSeries(t *testing.T, series string, want float64, every time.Duration, read func() float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := read()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, want %v", series, v, want)
		}
		time.Sleep(every)
	}
}

// TestOperatorMetrics: the series the Grafana dashboard and the alerts of
// deploy/ need beyond the traffic counters: Redis reachability, refused
// credentials by reason, and the use of the connection limit.
func TestOperatorMetrics(t *testing.T) {
	t.Parallel()
	t.Run("redis_up", func(t *testing.T) {
		r := testenv.StartRedis(t, testenv.OwnRedis())
		n := startContractNode(t, r.URL(), nil, nil)
		waitMetricValue(t, n.plain, "popbox_redis_up", 1)
		r.Kill()
		waitMetricValue(t, n.plain, "popbox_redis_up", 0)
		r.Restart(t)
		waitMetricValue(t, n.plain, "popbox_redis_up", 1)
	})

	t.Run("auth_failures", func(t *testing.T) {
		r := testenv.StartRedis(t)
		n := startContractNode(t, r.URL(), nil, nil)
		series := func(reason string) string { return `popbox_auth_failures_total{reason="` + reason + `"}` }
		for _, reason := range []string{gateway.AuthUnauthorized, gateway.AuthNoBox, gateway.AuthInvalidToken} {
			waitMetricValue(t, n.plain, series(reason), 0) // exported before the first failure
		}
		do := func(method, path, user, pass, body string) int {
			req, _ := http.NewRequest(method, n.tls+path, nil)
			if body != "" {
				req, _ = http.NewRequest(method, n.tls+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
			}
			if user != "" {
				req.SetBasicAuth(user, pass)
			}
			resp, err := n.tlsClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if st := do("POST", "/queue", "", "", `{"queue":"metbox","user":"u","password":"p"}`); st != 200 {
			t.Fatalf("create box: %d", st)
		}
		if st := do("GET", "/queue/metbox/peek", "", "", ""); st != 401 {
			t.Fatalf("peek without credentials: %d", st)
		}
		if st := do("GET", "/queue/metbox/peek", "u", "wrong", ""); st != 401 {
			t.Fatalf("peek with a wrong password: %d", st)
		}
		if st := do("GET", "/queue/metbox/peek", "u", "p", ""); st != 200 {
			t.Fatalf("peek with the box's credentials: %d", st)
		}
		if st := do("GET", "/queue/nobox/peek", "u", "p", ""); st != 500 {
			t.Fatalf("peek of a box that does not exist: %d", st)
		}
		waitMetricValue(t, n.plain, series(gateway.AuthUnauthorized), 2)
		waitMetricValue(t, n.plain, series(gateway.AuthNoBox), 1)
	})

	t.Run("connection_limit", func(t *testing.T) {
		r := testenv.StartRedis(t)
		n := startContractNode(t, r.URL(), nil, func(o *gateway.Options) { o.MaxConnections = 3 })
		// Open sockets are counted: the scrape's own connection is one.
		waitMetricValue(t, n.plain, "popbox_connection_limit", 3)
		waitMetricValue(t, n.plain, "popbox_connection_limit_used", 1)
		stopPoll := holdLongPoll(t, n.plainClient, n.plain, "held", "")
		waitMetricValue(t, n.plain, "popbox_connection_limit_used", 2)
		stopPoll()
		waitMetricValue(t, n.plain, "popbox_connection_limit_used", 1)
	})
}
