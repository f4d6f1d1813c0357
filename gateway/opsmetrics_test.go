package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/gateway"
	"github.com/popbox/popbox/internal/testenv"
)

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
