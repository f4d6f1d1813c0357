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
