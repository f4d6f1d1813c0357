package gateway

import (
	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/redisq"
)

// Requeued records reliable messages that went back to their queue after
// their ack deadline passed (called by the background reaper).
func (s *Server) Requeued(items []redisq.Requeued) {
	s.m.Requeued.Add(float64(len(items)))
	for _, it := range items {
		s.emit(events.Event{Kind: events.KindState, State: events.StatePending, Transaction: it.TID,
			Queue: queueID(it.Queue), Namespace: nsOf(it.Queue), Error: "ack deadline passed"})
	}
}

// Skipped records a queue entry a pop skipped because its transaction
// expired or was deleted: the Expired state of that (transaction, queue).
func (s *Server) Skipped(queue, tid string) {
	s.m.Expired.Inc()
	s.emit(events.Event{Kind: events.KindState, State: events.StateExpired, Transaction: tid,
		Queue: queueID(queue), Namespace: nsOf(queue), Error: "transaction expired or deleted"})
}
