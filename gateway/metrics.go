package gateway

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/hub/delivery"
)

// Metrics are the gateway's Prometheus series, on a registry of their own:
// the HTTP and transport series here, and the delivery series of the
// delivery service (delivery.Metrics) registered with them.
type Metrics struct {
	Registry *prometheus.Registry

	Connections     *prometheus.GaugeVec   // live consumer connections by transport
	SlowConsumers   *prometheus.CounterVec // consumers cut off for being too slow
	StreamEnds      *prometheus.CounterVec // ended streams by transport and reason (StreamEndReasons)
	DeliveryLatency *prometheus.HistogramVec
	RedisErrors     prometheus.Counter
	RedisLatency    prometheus.Histogram
	HTTPRequests    *prometheus.CounterVec
	RejectedConns   prometheus.Counter
	// ClosedBeforeRequest counts connections closed before their first
	// request (read-header timeout, failed TLS handshake, a client that
	// connected and left).
	ClosedBeforeRequest prometheus.Counter
	ConnLimit           prometheus.Gauge       // POPBOX_MAX_CONNECTIONS (0: no limit)
	ConnLimitUsed       prometheus.Gauge       // open sockets under the connection limit
	ShedConns           *prometheus.CounterVec // sockets the node closed to protect itself, by reason
	AuthFailures        *prometheus.CounterVec // refused credentials, by reason
	connectionsByName   map[string]prometheus.Gauge
	redisReachable      atomic.Pointer[func() bool]
	delivery            *delivery.Metrics // the service's series (set by New)
}

// Reasons of popbox_auth_failures_total.
const (
	AuthUnauthorized = "unauthorized"  // credentials missing or wrong (401)
	AuthInvalidToken = "invalid_token" // a bearer token was presented and refused (401)
	AuthNoBox        = "no_box"        // the secure queue does not exist (500 of API.md 1.5)
)

// NewMetrics creates the series and registers them (plus Go and process
// collectors and any extra collectors) on a new registry.
func NewMetrics(extra ...prometheus.Collector) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "popbox_connections",
			Help: "Live consumer connections by transport."}, []string{"transport"}),
		SlowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_slow_consumer_disconnects_total",
			Help: "Consumers disconnected because they did not keep up."}, []string{"transport"}),
		StreamEnds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_stream_ends_total",
			Help: "Streams (stream, sse, ws, wsmux) that ended, by transport and reason: " +
				"client_closed (the client closed or went away: EOF, close frame, request cancelled), " +
				"pong_timeout (a WebSocket ping got no pong within POPBOX_WS_PONG_TIMEOUT), " +
				"heartbeat_failed (writing a heartbeat failed or timed out), " +
				"slow_consumer (a message write timed out), ack_timeout (a reliable message was not acknowledged in time), " +
				"shutdown (the node shut down), redis_unavailable (Redis could not be reached), " +
				"token_expired (the token that opened it expired), frame_rate (the client sent frames too fast, 1008), " +
				"shed (a /ws without subscription or authentication closed by the connection limit or the auth timeout), " +
				"auth_failed (a /ws closed after too many refused subscriptions, 1008), " +
				"internal_error (the node could not encode a message), " +
				"control_timeout (the WebSocket library closed the socket itself: a control frame's payload was not read within its fixed 5 s)."}, []string{"transport", "reason"}),
		DeliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "popbox_delivery_write_seconds",
			Help: "Time to write a delivery to the consumer, by transport.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}, []string{"transport"}),
		RedisErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_redis_errors_total",
			Help: "Redis commands that failed (not counting empty answers)."}),
		RedisLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "popbox_redis_command_duration_seconds",
			Help: "Redis command and pipeline round trips.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"method", "route", "code"}),
		RejectedConns: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_rejected_connections_total",
			Help: "Requests refused with 503, and connections closed when accepted, because the node was at its connection limit."}),
		ClosedBeforeRequest: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_connections_closed_before_request_total",
			Help: "Connections closed before their first request: the read-header timeout (POPBOX_READ_HEADER_TIMEOUT) expired, the TLS handshake failed, or the client connected and left."}),
		ConnLimit: prometheus.NewGauge(prometheus.GaugeOpts{Name: "popbox_connection_limit",
			Help: "The node's connection limit (POPBOX_MAX_CONNECTIONS); 0 when there is none."}),
		ConnLimitUsed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "popbox_connection_limit_used",
			Help: "Open sockets now, idle keep-alive connections and streams included (only counted when a limit is set; up to the limit plus its reserve)."}),
		ShedConns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_shed_connections_total",
			Help: "Connections the node closed to protect itself, by reason: idle (keep-alive, to make room), no_request (sent no request, to make room), ws_silent (/ws without subscription, 1013, to make room), ws_auth_timeout (/ws without authentication in time, 1008)."}, []string{"reason"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_auth_failures_total",
			Help: "Refused credentials, by reason: unauthorized (missing or wrong), invalid_token (a bearer token refused), no_box (secure queue does not exist)."}, []string{"reason"}),
	}
	redisUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "popbox_redis_up",
		Help: "1 while this node reaches Redis (its heartbeats succeed), 0 during an outage."}, func() float64 {
		if f := m.redisReachable.Load(); f != nil && !(*f)() {
			return 0
		}
		return 1
	})
	m.Registry.MustRegister(m.Connections,
		m.SlowConsumers, m.StreamEnds, m.DeliveryLatency, m.RedisErrors, m.RedisLatency, m.HTTPRequests, m.RejectedConns, m.ClosedBeforeRequest,
		m.ConnLimit, m.ConnLimitUsed, m.ShedConns, m.AuthFailures, redisUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		m.Registry.MustRegister(c)
	}
	for _, r := range []string{AuthUnauthorized, AuthInvalidToken, AuthNoBox} {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, r := range []string{ShedIdle, ShedNoRequest, ShedWSSilent, ShedWSAuthTimeout} {
		m.ShedConns.WithLabelValues(r)
	}
	m.connectionsByName = map[string]prometheus.Gauge{}
	// Every labelled series exists from the start (at zero), so scrapes,
	// rate() and alerts see it before its first event.
	for _, t := range delivery.Transports {
		m.connectionsByName[t] = m.Connections.WithLabelValues(t)
		if t != delivery.TransportLongPoll { // streaming transports: write deadlines
			m.SlowConsumers.WithLabelValues(t)
			m.DeliveryLatency.WithLabelValues(t)
			for _, r := range StreamEndReasons {
				m.StreamEnds.WithLabelValues(t, r)
			}
		}
	}
	return m
}

// addDelivery registers the delivery service's series (once).
func (m *Metrics) addDelivery(d *delivery.Metrics) {
	if m.delivery != nil {
		return
	}
	m.delivery = d
	for _, c := range d.Collectors() {
		m.Registry.MustRegister(c)
	}
}

// SetRedisReachable gives popbox_redis_up its source: a function telling
// whether Redis answers now (the hub's heartbeat state).
func (m *Metrics) SetRedisReachable(f func() bool) { m.redisReachable.Store(&f) }

// Conn counts a consumer connection of a transport until the returned
// function is called.
func (m *Metrics) Conn(transport string) func() {
	g := m.connectionsByName[transport]
	g.Inc()
	return g.Dec
}

// RedisHook returns a go-redis hook that feeds the Redis latency and error
// series.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m} }

type redisHook struct{ m *Metrics }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.m.RedisErrors.Inc()
		}
		return c, err
	}
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.observe(start, countedError(cmd, err))
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.observe(start, pipelineFailed(cmds, err))
		return err
	}
}

// observe records one round trip that began at start, and whether it
// counts as a Redis error.
func (h redisHook) observe(start time.Time, failed bool) {
	h.m.RedisLatency.Observe(time.Since(start).Seconds())
	if failed {
		h.m.RedisErrors.Inc()
	}
}

// countedError reports whether err, the outcome of cmd, is a failure for
// popbox_redis_errors_total: not an empty answer (redis.Nil), not NOSCRIPT
// (the script is loaded again), and not the refused CLIENT SETINFO that
// go-redis sends on every new connection and ignores (servers before Redis
// 7.2 do not know it: counting it made every pooled connection an "error").
func countedError(cmd redis.Cmder, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || isNoScript(err) {
		return false
	}
	if cmd != nil && cmd.Name() == "client" {
		if args := cmd.Args(); len(args) > 1 {
			if sub, ok := args[1].(string); ok && strings.EqualFold(sub, "setinfo") {
				return false
			}
		}
	}
	return true
}

// pipelineFailed: one counted failure per pipeline whose commands failed
// (or that failed as a whole without a command error).
func pipelineFailed(cmds []redis.Cmder, err error) bool {
	if err == nil {
		return false
	}
	cmdErr := false
	for _, c := range cmds {
		if c.Err() != nil {
			cmdErr = true
			if countedError(c, c.Err()) {
				return true
			}
		}
	}
	return !cmdErr && countedError(nil, err)
}

func isNoScript(err error) bool {
	return err != nil && len(err.Error()) >= 8 && err.Error()[:8] == "NOSCRIPT"
}
