package delivery

import "github.com/prometheus/client_golang/prometheus"

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

// Metrics are the delivery series the service emits (the exported names
// are part of the operations contract: deploy/grafana, deploy/prometheus).
type Metrics struct {
	Provisioned  prometheus.Counter     // messages provisioned (one per target queue)
	Transactions prometheus.Counter     // transactions provisioned
	Delivered    *prometheus.CounterVec // messages delivered by transport
	HandedBack   *prometheus.CounterVec // messages taken but handed back (client gone)
	Requeued     prometheus.Counter     // reliable messages re-queued after their ack deadline
	Expired      prometheus.Counter     // queue entries skipped: transaction expired or deleted
	PopLatency   prometheus.Histogram   // long-poll pop: request to answer
}

// NewMetrics makes the series (not registered: see Collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
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
		PopLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "popbox_pop_duration_seconds",
			Help: "Long-poll pops: time from request to answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20)}),
	}
	// Every labelled series exists from the start (at zero), so scrapes,
	// rate() and alerts see it before its first event.
	for _, t := range Transports {
		m.Delivered.WithLabelValues(t)
		m.HandedBack.WithLabelValues(t)
	}
	return m
}

// Collectors are the series to register on the node's registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Provisioned, m.Transactions, m.Delivered, m.HandedBack, m.Requeued, m.Expired, m.PopLatency}
}
