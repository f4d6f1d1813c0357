package delivery

import (
	"context"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/domain"
)

// Popped is what a long-poll pop took for its client: the caller writes
// what it can and calls Done with how many it wrote.
type Popped struct {
	Messages []Message
	s        *Service
	q        domain.Queue
	w        *hub.Waiter
	start    time.Time
}

// Pop waits up to timeout for up to max messages of q through the hub (a
// long poll). It ends early when ctx ends (what was taken goes back to the
// head of the queue and ctx's error is returned) or the node shuts down.
// An empty answer tells the client the queue is empty, which only Redis
// can tell: during an outage Pop fails with ErrUnavailable, and an empty
// pop records the queue's lastPop.
func (s *Service) Pop(ctx context.Context, q domain.Queue, max int, mode hub.Mode, timeout time.Duration) (*Popped, error) {
	p := &Popped{s: s, q: q, w: hub.NewPop(q.String(), max, mode, TransportLongPoll), start: time.Now()}
	s.hub.Add(p.w)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	unavailable := false
	outage := s.hub.Outage()
	for waiting := true; waiting; {
		waiting = false
		select {
		case p.Messages = <-p.w.Batch():
		case <-timer.C:
		case <-ctx.Done():
		case <-p.w.ShuttingDown():
		case <-outage:
			// The hub sees Redis unreachable; it may just be back (the hub
			// re-checks every outageProbe), so ask once before failing.
			if s.reachable(ctx) {
				outage, waiting = nil, true
			} else {
				unavailable = true
			}
		}
	}
	if !s.hub.Remove(p.w) && p.Messages == nil {
		p.Messages = <-p.w.Batch() // offered while we were leaving: ours to deliver or hand back
	}
	if err := ctx.Err(); err != nil {
		// The client is gone: nothing taken for it may be lost.
		s.HandBack(p.w, TransportLongPoll, p.Messages...)
		return nil, err
	}
	if len(p.Messages) == 0 && unavailable {
		return nil, s.fail(ErrUnavailable)
	}
	if len(p.Messages) == 0 {
		if err := s.store.TouchLastPop(ctx, q.String()); err != nil {
			return nil, s.fail(err)
		}
	}
	return p, nil
}

// Done records that the first n messages were written to the client
// (delivered); the others go back to the head of the queue.
func (p *Popped) Done(n int) {
	n = min(max(n, 0), len(p.Messages))
	p.s.HandBack(p.w, TransportLongPoll, p.Messages[n:]...)
	msgs := p.Messages[:n]
	p.s.m.PopLatency.Observe(time.Since(p.start).Seconds())
	if len(msgs) > 0 {
		ev := queueEvent(events.KindAction, p.q)
		ev.Action, ev.Count, ev.Transport = events.ActionPop, len(msgs), TransportLongPoll
		p.s.emit(ev)
	}
	p.s.Delivered(TransportLongPoll, p.w.Mode().Reliable, msgs...)
}

// reachable tells whether Redis answers a PING within half a second (the
// client's own dial retries would take seconds).
func (s *Service) reachable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	return s.store.Ping(ctx) == nil
}

// Peek returns up to max messages of q without taking them, at most
// maxBytes of payload (one message always), and records the peek.
func (s *Service) Peek(ctx context.Context, q domain.Queue, max int, maxBytes int64) ([]Message, error) {
	msgs, err := s.store.PeekBounded(ctx, q.String(), max, maxBytes)
	return msgs, s.fail(err)
}

// Peeked records that n messages of q were shown to a client.
func (s *Service) Peeked(q domain.Queue, n int) {
	if n > 0 {
		ev := queueEvent(events.KindAction, q)
		ev.Action, ev.Count = events.ActionPeek, n
		s.emit(ev)
	}
}

// QueueInfo describes q.
func (s *Service) QueueInfo(ctx context.Context, q domain.Queue) (QueueInfo, error) {
	info, err := s.store.QueueInfo(ctx, q.String())
	return info, s.fail(err)
}

// Ack acknowledges reliable deliveries of tids on q (from POST /ack or an
// in-band stream ack, named by via) and records them: an ack action and a
// Delivered state per message, which fires its callback.
func (s *Service) Ack(ctx context.Context, q domain.Queue, tids []string, via string) ([]AckResult, error) {
	res, err := s.store.Ack(ctx, q.String(), tids)
	if err != nil {
		return nil, s.fail(err)
	}
	var acked, expired []Message
	for _, r := range res {
		m := Message{TID: r.TID, Queue: q.String(), Callback: r.Callback}
		switch {
		case r.Expired:
			expired = append(expired, m)
		case r.OK:
			acked = append(acked, m)
		}
	}
	s.skipped(expired)
	if n := len(acked) + len(expired); n > 0 {
		ev := queueEvent(events.KindAction, q)
		ev.Action, ev.Count, ev.Transport = events.ActionAck, n, via
		s.emit(ev)
		s.emitStates(append(acked, expired...), domain.StateDelivered, via, "")
	}
	return res, nil
}

// Delivered records messages written to a consumer: Delivered (which fires
// callbacks through the event bus) or Blocked for reliable deliveries.
func (s *Service) Delivered(transport string, reliable bool, msgs ...Message) {
	if len(msgs) == 0 {
		return
	}
	s.m.Delivered.WithLabelValues(transport).Add(float64(len(msgs)))
	state := domain.StateDelivered
	if reliable {
		state = domain.StateBlocked
	}
	s.emitStates(msgs, state, transport, "")
}

// HandBack returns messages taken for w that could not be written to its
// client to the head of their queue, and counts them.
func (s *Service) HandBack(w *hub.Waiter, transport string, msgs ...Message) {
	if len(msgs) == 0 {
		return
	}
	s.hub.HandBack(w, msgs)
	s.m.HandedBack.WithLabelValues(transport).Add(float64(len(msgs)))
}

// Subscribe registers a stream waiter (its outbox fills from Redis as it
// has room).
func (s *Service) Subscribe(w *hub.Waiter) { s.hub.Add(w) }

// Unsubscribe ends a stream waiter; what is still in its outbox goes back
// to the head of the queue.
func (s *Service) Unsubscribe(w *hub.Waiter) { s.hub.Remove(w) }

// Pulled tells the service that a stream wrote messages of w out, so that
// it takes more when the outbox had been full.
func (s *Service) Pulled(w *hub.Waiter) { s.hub.Pulled(w) }

// Settled tells whether reliable delivery tid on q no longer waits for
// its ack: acknowledged (by any route or node), or the transaction is
// gone.
func (s *Service) Settled(ctx context.Context, q domain.Queue, tid string) (bool, error) {
	states, err := s.store.States(ctx, tid)
	if err != nil {
		return false, err
	}
	state, ok := states[q.String()]
	return ok && state == domain.StateDelivered || len(states) == 0, nil
}

// Overdue puts a reliable message whose ack deadline passed on a stream
// back at the head of its queue for the next consumer (unless the reaper
// already did: the hand-back is conditional on the in-flight record of
// this very delivery) and records the re-queue.
func (s *Service) Overdue(w *hub.Waiter, m Message) {
	s.hub.HandBack(w, []Message{m})
	s.requeued(m)
}

// requeued records reliable messages that went back to their queue after
// their ack deadline passed.
func (s *Service) requeued(msgs ...Message) {
	if len(msgs) == 0 {
		return
	}
	s.m.Requeued.Add(float64(len(msgs)))
	s.emitStates(msgs, domain.StatePending, "", "ack deadline passed")
}
