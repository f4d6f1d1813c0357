package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/redisq"
	"github.com/popbox/popbox/request"
)

// A transport frames messages for one kind of consumer connection (HTTP
// stream, SSE, WebSocket). Every streaming transport shares runStream: the
// same hub waiter, the same hand-back rule, the same reliable-ack tracking,
// the same heartbeats, write deadlines and slow-consumer rule.
type transport interface {
	// name is the transport's metric/event label.
	name() string
	// send writes and flushes one message; it must give up by deadline.
	send(ctx context.Context, m redisq.Message, deadline time.Time) error
	// heartbeat keeps the connection (and proxies) alive.
	heartbeat(ctx context.Context, deadline time.Time) error
	// end closes the stream cleanly with a reason (shutdown, ack timeout, ...).
	end(reason endReason)
}

// endReason tells a transport why its stream ends.
type endReason int

const (
	endClientGone endReason = iota
	endShutdown
	endAckTimeout
	endSlow
	endError
)

func (r endReason) String() string {
	switch r {
	case endShutdown:
		return "server shutting down"
	case endAckTimeout:
		return "acknowledgement timed out"
	case endSlow:
		return "slow consumer: write timed out"
	case endError:
		return "internal error"
	default:
		return "client gone"
	}
}

// Stream tuning.
const (
	streamOutbox      = 16               // messages taken from Redis ahead of the writer, per stream
	writeTimeout      = 10 * time.Second // a write that takes longer marks a slow consumer
	heartbeatInterval = 30 * time.Second // base heartbeat interval (jittered ±25 %: 22.5–37.5 s, under the usual 60 s proxy idle timeout)
	ackCheckInterval  = 250 * time.Millisecond
)

// jittered returns d ± 25 %, so that many clients do not beat in lock-step.
func jittered(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2)
}

// streamOpts are the per-stream settings of runStream.
type streamOpts struct {
	full     string
	mode     hub.Mode
	acks     <-chan []string // in-band acks (WebSocket); nil for other transports
	onAckErr func(tid string)
}

// modeFrom reads reliable mode from request parameters: reliable=1 (or the
// reliable route) and timeoutACK.
func modeFrom(reliable bool, timeoutACK string) hub.Mode {
	if !reliable {
		return hub.Mode{}
	}
	return hub.Mode{Reliable: true, AckTimeout: request.AckTimeout(timeoutACK)}
}

// runStream feeds one consumer connection from its queue until the client
// goes away, the node shuts down, a write times out or (reliable mode) an
// acknowledgement does not come in time. Messages taken from Redis and not
// written go back to the head of the queue.
func (s *Server) runStream(ctx context.Context, t transport, o streamOpts) endReason {
	defer s.m.Conn(t.name())()
	w := hub.NewStream(o.full, streamOutbox, o.mode, t.name())
	s.hub.Add(w)
	defer s.hub.Remove(w) // hands back whatever is still in the outbox

	hb := time.NewTimer(jittered(heartbeatInterval))
	defer hb.Stop()
	var ackTick <-chan time.Time
	pending := map[string]time.Time{} // reliable: tid -> ack deadline
	if o.mode.Reliable {
		tk := time.NewTicker(ackCheckInterval)
		defer tk.Stop()
		ackTick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			t.end(endClientGone)
			return endClientGone
		case <-w.ShuttingDown():
			t.end(endShutdown)
			return endShutdown
		case m := <-w.Outbox():
			if ctx.Err() != nil {
				s.handBack(w, t.name(), m)
				return endClientGone
			}
			start := time.Now()
			if err := t.send(ctx, m, start.Add(writeTimeout)); err != nil {
				s.handBack(w, t.name(), m)
				reason := endClientGone
				if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
					reason = endSlow
					s.m.SlowConsumers.WithLabelValues(t.name()).Inc()
					s.log.LogAttrs(ctx, slog.LevelInfo, "slow consumer disconnected", slog.String("transport", t.name()), slog.String("queue", o.full))
				}
				t.end(reason)
				return reason
			}
			s.m.DeliveryLatency.WithLabelValues(t.name()).Observe(time.Since(start).Seconds())
			s.delivered([]redisq.Message{m}, o.mode.Reliable, t.name())
			if o.mode.Reliable {
				pending[m.TID] = start.Add(o.mode.AckTimeout)
			}
			s.hub.Pulled(w)
		case tids := <-o.acks:
			res, err := s.ackOn(ctx, o.full, tids, t.name())
			if err != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "in-band ack", slog.Any("err", err))
				continue
			}
			for _, r := range res {
				if r.OK {
					delete(pending, r.TID)
				} else if o.onAckErr != nil {
					o.onAckErr(r.TID)
				}
			}
		case now := <-ackTick:
			if s.ackOverdue(ctx, o.full, pending, now) {
				t.end(endAckTimeout)
				return endAckTimeout
			}
		case <-hb.C:
			if err := t.heartbeat(ctx, time.Now().Add(writeTimeout)); err != nil {
				t.end(endClientGone)
				return endClientGone
			}
			hb.Reset(jittered(heartbeatInterval))
		}
	}
}

// handBack returns messages that could not be written to the head of
// their queue, and counts them.
func (s *Server) handBack(w *hub.Waiter, transport string, msgs ...redisq.Message) {
	if len(msgs) == 0 {
		return
	}
	s.hub.HandBack(w, msgs)
	s.m.HandedBack.WithLabelValues(transport).Add(float64(len(msgs)))
}

// ackOverdue checks reliable deliveries whose ack deadline passed: acked
// ones (state Delivered, acked through any route or node) are forgotten;
// if one is still unacknowledged the stream must end (API.md 1.3: the
// stream is closed if an ack times out; the reaper re-queues the message).
func (s *Server) ackOverdue(ctx context.Context, full string, pending map[string]time.Time, now time.Time) bool {
	for tid, deadline := range pending {
		if now.Before(deadline) {
			continue
		}
		states, err := s.store.States(ctx, tid)
		if err != nil {
			return false // try again on the next tick
		}
		if st, ok := states[full]; ok && st == redisq.StateDelivered || len(states) == 0 {
			delete(pending, tid)
			continue
		}
		return true
	}
	return false
}

// isTimeout tells whether err is a network timeout.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
