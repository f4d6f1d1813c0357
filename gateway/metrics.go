package gateway

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
)

// Metrics are the gateway's Prometheus series, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	Connections       *prometheus.GaugeVec   // live consumer connections by transport
	Provisioned       prometheus.Counter     // messages provisioned (one per target queue)
	Transactions      prometheus.Counter     // transactions provisioned
	Delivered         *prometheus.CounterVec // messages delivered by transport
	HandedBack        *prometheus.CounterVec // messages taken but handed back (client gone)
	Requeued          prometheus.Counter     // reliable messages re-queued after their ack deadline
	Expired           prometheus.Counter     // queue entries skipped at pop: transaction expired or deleted
	SlowConsumers     *prometheus.CounterVec // consumers cut off for being too slow
	PopLatency        prometheus.Histogram   // long-poll pop: request to answer
	DeliveryLatency   *prometheus.HistogramVec
	RedisErrors       prometheus.Counter
	RedisLatency      prometheus.Histogram
	HTTPRequests      *prometheus.CounterVec
	RejectedConns     prometheus.Counter
	connectionsByName map[string]prometheus.Gauge
}

// Transport names used in metrics and events.
const (
	TransportLongPoll = "longpoll"
	TransportStream   = "stream"
	TransportSSE      = "sse"
	TransportWS       = "ws"
	TransportWSMux    = "wsmux"
)

// Transports lists every transport, in display order.
var Transports = []string{TransportLongPoll, TransportStream, TransportSSE, TransportWS, TransportWSMux}

// NewMetrics creates the series and registers them (plus Go and process
// collectors and any extra collectors) on a new registry.
func NewMetrics(extra ...prometheus.Collector) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "popbox_connections",
			Help: "Live consumer connections by transport."}, []string{"transport"}),
		Provisioned: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_messages_provisioned_total",
			Help: "Messages provisioned (one per target queue)."}),
		Transactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_transactions_provisioned_total",
			Help: "Transactions provisioned."}),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_messages_delivered_total",
			Help: "Messages delivered to consumers, by transport."}, []string{"transport"}),
		HandedBack: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_messages_handed_back_total",
			Help: "Messages taken for a consumer that went away and put back at the head of their queue."}, []string{"transport"}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_messages_expired_total",
			Help: "Queue entries skipped at pop because their transaction expired or was deleted."}),
		Requeued: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_messages_requeued_total",
			Help: "Reliable messages put back after their ack deadline passed."}),
		SlowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_slow_consumer_disconnects_total",
			Help: "Consumers disconnected because they did not keep up."}, []string{"transport"}),
		PopLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "popbox_pop_duration_seconds",
			Help: "Long-poll pops: time from request to answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20)}),
		DeliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "popbox_delivery_write_seconds",
			Help: "Time to write a delivery to the consumer, by transport.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}, []string{"transport"}),
		RedisErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_redis_errors_total",
			Help: "Redis commands that failed (not counting empty answers)."}),
		RedisLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "popbox_redis_command_duration_seconds",
			Help: "Redis command and pipeline round trips.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "popbox_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"method", "route", "code"}),
		RejectedConns: prometheus.NewCounter(prometheus.CounterOpts{Name: "popbox_rejected_connections_total",
			Help: "Connections refused with 503 because the node was at its connection limit."}),
	}
	m.Registry.MustRegister(m.Connections, m.Provisioned, m.Transactions, m.Delivered, m.HandedBack, m.Requeued, m.Expired,
		m.SlowConsumers, m.PopLatency, m.DeliveryLatency, m.RedisErrors, m.RedisLatency, m.HTTPRequests, m.RejectedConns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		m.Registry.MustRegister(c)
	}
	m.connectionsByName = map[string]prometheus.Gauge{}
	// Every labelled series exists from the start (at zero), so scrapes,
	// rate() and alerts see it before its first event.
	for _, t := range Transports {
		m.connectionsByName[t] = m.Connections.WithLabelValues(t)
		m.Delivered.WithLabelValues(t)
		m.HandedBack.WithLabelValues(t)
		if t != TransportLongPoll { // streaming transports: write deadlines
			m.SlowConsumers.WithLabelValues(t)
			m.DeliveryLatency.WithLabelValues(t)
		}
	}
	return m
}

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
		h.m.RedisLatency.Observe(time.Since(start).Seconds())
		if countedError(cmd, err) {
			h.m.RedisErrors.Inc()
		}
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.m.RedisLatency.Observe(time.Since(start).Seconds())
		if pipelineFailed(cmds, err) {
			h.m.RedisErrors.Inc()
		}
		return err
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
