package events

import "github.com/prometheus/client_golang/prometheus"

var (
	descWritten = prometheus.NewDesc("popbox_events_written_total",
		"Events written successfully by each events sink.", []string{"sink"}, nil)
	descDropped = prometheus.NewDesc("popbox_events_dropped_total",
		"Events an events sink lost, by reason (buffer_full, write_failed, closed).", []string{"sink", "reason"}, nil)
	descFailedBatches = prometheus.NewDesc("popbox_events_failed_batches_total",
		"Batches an events sink gave up on after its retries.", []string{"sink"}, nil)
	descRetries = prometheus.NewDesc("popbox_events_write_retries_total",
		"Write attempts of an events sink that failed and were retried.", []string{"sink"}, nil)
	descQueue = prometheus.NewDesc("popbox_events_queue_length",
		"Events waiting in an events sink's buffer.", []string{"sink"}, nil)
	descCapacity = prometheus.NewDesc("popbox_events_queue_capacity",
		"Size of an events sink's buffer.", []string{"sink"}, nil)
)

// Collectors returns the Prometheus collectors of the Bus (per-sink
// written, dropped, failed-batch and retry counters and buffer gauges),
// read from the Bus at scrape time. Nothing is registered anywhere: the
// caller registers them on its own registry.
func (b *Bus) Collectors() []prometheus.Collector {
	return []prometheus.Collector{busCollector{b}}
}

type busCollector struct{ b *Bus }

func (c busCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range [...]*prometheus.Desc{descWritten, descDropped, descFailedBatches, descRetries, descQueue, descCapacity} {
		ch <- d
	}
}

func (c busCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.mu.RLock()
	runners := c.b.runners
	c.b.mu.RUnlock()
	for _, r := range runners {
		ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(r.written.Load()), r.name)
		for i, reason := range dropReasons {
			ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(r.dropped[i].Load()), r.name, reason)
		}
		ch <- prometheus.MustNewConstMetric(descFailedBatches, prometheus.CounterValue, float64(r.failedBatches.Load()), r.name)
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(r.retries.Load()), r.name)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(r.ch)), r.name)
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(cap(r.ch)), r.name)
	}
}
