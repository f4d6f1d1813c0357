package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/request"
)

// A transport frames messages for one kind of consumer connection (HTTP
// stream, SSE, per-queue or multiplexed WebSocket). Every streaming
// transport runs on startStream: N queue subscriptions (one per-queue, up to
// wsMaxSubscriptions on the multiplexed WebSocket) feeding one serialized
// writer, so ack deadlines, the slow-consumer cut-off, heartbeats,
// hand-back and shutdown are the same for all of them.
type transport interface {
	// name is the transport's metric/event label.
	name() string
	// send writes and flushes one message of sub; it must give up by
	// deadline.
	send(ctx context.Context, sub *streamSub, m delivery.Message, deadline time.Time) error
	// heartbeat keeps the connection (and proxies) alive.
	heartbeat(ctx context.Context, deadline time.Time) error
	// subEnded tells the client that one subscription ended for reason;
	// it returns false when the transport cannot end a subscription on
	// its own (one queue per connection): the whole stream then ends.
	subEnded(ctx context.Context, sub *streamSub, reason endReason) bool
	// end closes the stream with a reason (shutdown, ack timeout, ...).
	end(reason endReason)
	// cause is why another goroutine closed the connection (a ping
	// without pong, a frame flood, ...), recorded before it closed it;
	// endClientGone when none did: the client went away.
	cause() endReason
}

// endReason tells a transport why its stream (or one subscription) ends.
type endReason int

const (
	endClientGone endReason = iota
	endShutdown
	endAckTimeout
	endSlow
	endError
	endUnavailable
	endTokenExpired
	endPongTimeout     // a WebSocket ping got no pong in time
	endHeartbeatFailed // writing a heartbeat failed or timed out
	endFrameRate       // the client sent frames too fast (1008)
	endShed            // closed by the connection limit or the /ws auth timeout
	endAuthFailed      // a /ws closed for too many refused subscriptions (1008)
	endControlTimeout  // the WebSocket library gave up on a control frame after 5 s
	numEndReasons
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
	case endUnavailable:
		return "storage unavailable: " + delivery.ErrUnavailable.Error()
	case endTokenExpired:
		return "token expired"
	case endPongTimeout:
		return "no pong in time"
	case endHeartbeatFailed:
		return "heartbeat write failed"
	case endFrameRate:
		return "too many frames"
	case endShed:
		return "closed to protect the node"
	case endControlTimeout:
		return "control frame timed out"
	case endAuthFailed:
		return "too many failed authentications"
	default:
		return "client gone"
	}
}

// endCause is the cause a transport records when a goroutine other than
// the stream's writer (its pinger, its reader, the /ws guard) decides to
// close the connection: set before the close, so that the writer, which
// then sees the connection go like a client that went away, reads why.
// The first cause recorded wins.
type endCause struct{ r atomic.Int32 }

// set records r unless a cause was recorded already.
func (c *endCause) set(r endReason) { c.r.CompareAndSwap(int32(endClientGone), int32(r)) }

// cause is the recorded cause, endClientGone when there is none.
func (c *endCause) cause() endReason { return endReason(c.r.Load()) }

// errEncode marks a message the transport could not encode (a bug, not
// the client's doing).
var errEncode = errors.New("encoding a frame")

// Stream tuning.
const (
	streamOutbox = 16 // messages taken from Redis ahead of the writer, per subscription
	// streamOutboxBytes bounds the bytes all subscriptions of one
	// connection hold in their outboxes, taken from Redis and waiting for
	// the writer (one message of any size always passes): a client that stops reading a /ws of 256
	// queues of 1 MiB messages makes the node hold 4 MiB, not 4 GiB.
	streamOutboxBytes = 4 << 20
	writeTimeout      = 10 * time.Second // a write that takes longer marks a slow consumer
	// defaultHeartbeatInterval is the base heartbeat interval when
	// Options.HeartbeatInterval is not set (jittered ±25 %: 22.5–37.5 s,
	// under the usual 60 s proxy idle timeout).
	defaultHeartbeatInterval = 30 * time.Second
	ackCheckInterval         = 250 * time.Millisecond
	// ackGrace is how long after a stream's own ack deadline the reaper
	// would re-queue the message: the stream hands an overdue message back
	// itself (within ackCheckInterval), so the reaper only acts for a node
	// that died, and the two never race.
	ackGrace = 2 * time.Second
)

// jittered returns d ± 25 %, so that many clients do not beat in lock-step.
func jittered(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2)
}

// maxHeartbeatSlot is the widest slot heartbeats are gathered in.
const maxHeartbeatSlot = time.Second

// nextHeartbeat returns how long after now a stream's next heartbeat is
// due: interval ± 25 % (jittered), moved up to the end of its slot (a
// second, or interval/16 when that is shorter) and never past +25 %. The
// heartbeats of a node's idle streams then fall due together, once a
// slot, so the scheduler wakes for a batch of them instead of for each
// one (the per-connection timers stay: a shared wheel would batch the
// same way, with a goroutine and bookkeeping of its own).
func nextHeartbeat(interval time.Duration, now time.Time) time.Duration {
	slot := min(maxHeartbeatSlot, interval/16)
	d := jittered(interval)
	if slot <= 0 {
		return d
	}
	at := now.Add(d)
	if end := at.Truncate(slot); end.Before(at) {
		at = end.Add(slot)
	}
	if d = at.Sub(now); d > interval*5/4 {
		d -= slot
	}
	return d
}

// modeFrom reads reliable mode from request parameters: reliable=1 (or the
// reliable route) and timeoutACK.
func modeFrom(reliable bool, timeoutACK string) hub.Mode {
	if !reliable {
		return hub.Mode{}
	}
	return hub.Mode{Reliable: true, AckTimeout: request.AckTimeout(timeoutACK), Grace: ackGrace}
}

// streamSub is one queue subscription of a stream: its hub waiter and, in
// reliable mode, the messages written on this connection and not yet
// acknowledged.
type streamSub struct {
	q       domain.Queue
	w       *hub.Waiter
	unacked map[string]unacked // tid -> written, waiting for its ack
	expires time.Time          // the token that opened it expires (zero: never)
}

// unacked is a reliable message written to the client, with its deadline.
type unacked struct {
	m        delivery.Message
	deadline time.Time
}

// stream is one consumer connection. It holds no goroutine of its own
// while nothing happens: every event (an outbox got messages, a client
// frame, a heartbeat or ack check or token expiry due, the connection,
// node or Redis gone) is posted to it, and the first event of an idle
// stream starts a goroutine that serves the events posted until none is
// left, then ends (serve). One goroutine at a time serves a stream, so its
// methods need no locks beyond mu, which only guards the posting. An idle
// SSE or HTTP stream thus costs its timers and buffers, not a goroutine
// and its stack (4 KiB each; a parked writer's stack cannot shrink below
// that); a WebSocket keeps only its reader.
type stream struct {
	s        *Server
	t        transport
	ctx      context.Context
	subs     []*streamSub // in round-robin order
	next     int
	bytes    *hub.ByteBudget     // what the subscriptions' outboxes hold, shared
	overdue  map[overdueKey]bool // acks that came too late here: never written again
	ctrl     <-chan streamCtrl   // work from the connection's reader (evCtrl), or nil
	hb       *time.Timer         // the next heartbeat (evHeartbeat)
	ackTimer *time.Timer         // the next ack check (evAcks), while a reliable subscription exists
	expiry   *time.Timer         // fires at expires (evExpiry): a token the stream depends on expires
	expires  time.Time
	stopCtx  func() bool // stops the context.AfterFunc that posts evGone when ctx ends (nil: ctx never ends)
	started  time.Time
	onEnd    func(endReason)
	connDone func() // the open-connections gauge

	liveNext, livePrev *stream // in the server's liveStreams

	mu      sync.Mutex
	events  streamEvent // posted, not yet served
	running bool        // a goroutine serves the events (for good once the stream ended)
}

// streamEvent is what happened to a stream since it was last served: a
// set of bits, so that a burst of the same event is served once.
type streamEvent uint16

const (
	evReady     streamEvent = 1 << iota // a subscription's outbox got messages
	evCtrl                              // the reader handed over work (ctrl)
	evAcks                              // reliable deliveries' ack deadlines to look at
	evExpiry                            // a token the stream depends on may have expired
	evHeartbeat                         // a heartbeat is due
	evGone                              // the client went away (ctx ended, or the transport's watcher saw it)
	evShutdown                          // the node shuts down
	evOutage                            // Redis cannot be reached
)

// overdueKey is a message of a queue whose ack was overdue on a stream.
type overdueKey struct {
	q   domain.Queue
	tid string
}

// streamCtrl is work the connection's reader hands to the stream (subscribe,
// unsubscribe, in-band acks); it runs serialized with the stream's writes
// and may write frames.
type streamCtrl func(st *stream)

// startStream feeds one consumer connection from its queue subscriptions
// (subs; the multiplexed WebSocket adds more through ctrl, posting evCtrl
// for each) until the client goes away, the node shuts down, Redis cannot
// be reached, a write times out or (reliable mode) an acknowledgement does
// not come in time; then it calls onEnd with the reason, on the goroutine
// that served the end. The client going away is ctx ending, or (a ctx
// that never ends) evGone posted by the transport's watcher of the
// connection. Messages taken from Redis and not written go back to the
// head of their queue. Every stream that ends is counted once, by its
// reason (popbox_stream_ends_total), and logged (streamEnded). startStream
// serves what is already due before it returns and holds no goroutine
// after; the node's Shutdown waits for the stream's end.
func (s *Server) startStream(ctx context.Context, t transport, ctrl <-chan streamCtrl, onEnd func(endReason), subs ...*streamSub) *stream {
	st := s.newStream(ctx, t, ctrl, onEnd)
	st.start(subs...)
	return st
}

// newStream makes a stream that serves nothing until start: events posted
// before (the connection's watcher set up first) wait for it.
func (s *Server) newStream(ctx context.Context, t transport, ctrl <-chan streamCtrl, onEnd func(endReason)) *stream {
	return &stream{s: s, t: t, ctx: ctx, ctrl: ctrl, overdue: map[overdueKey]bool{},
		bytes: hub.NewByteBudget(streamOutboxBytes), onEnd: onEnd, running: true}
}

// start subscribes subs, arms the heartbeat, joins the node's live streams
// (shutdown and outage reach it through them) and serves what is due.
func (st *stream) start(subs ...*streamSub) {
	s := st.s
	st.started = time.Now()
	st.connDone = s.m.Conn(st.t.name())
	s.streams.add()
	for _, sub := range subs {
		st.add(sub)
	}
	st.hb = time.AfterFunc(nextHeartbeat(s.opts.HeartbeatInterval, time.Now()), func() { st.post(evHeartbeat, true) })
	if st.ctx.Done() != nil {
		st.stopCtx = context.AfterFunc(st.ctx, func() { st.post(evGone, true) })
	}
	s.live.add(st)
	// Checked after joining: an outage or shutdown that begins now finds
	// the stream in the list, or is seen here.
	if s.svc.ShutdownContext().Err() != nil {
		st.post(evShutdown, false)
	}
	if !s.svc.Reachable() {
		st.post(evOutage, false)
	}
	st.serve()
}

// runStream is startStream for a caller that must stay until the stream
// ends (a stream on the handler's ResponseWriter: HTTP/2); it returns why
// it ended.
func (s *Server) runStream(ctx context.Context, t transport, subs ...*streamSub) endReason {
	ended := make(chan endReason, 1)
	s.startStream(ctx, t, nil, func(r endReason) { ended <- r }, subs...)
	return <-ended
}

// liveStreams is the node's open streams, for the events that reach all
// of them at once (shutdown, Redis outage): one list, rather than a
// context.AfterFunc record per stream and event (~300 bytes each).
type liveStreams struct {
	mu   sync.Mutex
	head *stream
}

func (l *liveStreams) add(st *stream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st.liveNext = l.head
	if l.head != nil {
		l.head.livePrev = st
	}
	l.head = st
}

func (l *liveStreams) remove(st *stream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.livePrev != nil {
		st.livePrev.liveNext = st.liveNext
	} else if l.head == st {
		l.head = st.liveNext
	}
	if st.liveNext != nil {
		st.liveNext.livePrev = st.livePrev
	}
	st.liveNext, st.livePrev = nil, nil
}

// post posts ev to every live stream (each served on a goroutine of its
// own).
func (l *liveStreams) post(ev streamEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for st := l.head; st != nil; st = st.liveNext {
		st.post(ev, false)
	}
}

// post records ev and makes sure a goroutine serves the stream: the one
// serving it now, or else a new one; here (the caller is a goroutine of
// its own that may run the stream, a timer's or a context's callback)
// serves it on the calling goroutine instead. After the end it does
// nothing.
func (st *stream) post(ev streamEvent, here bool) {
	st.mu.Lock()
	st.events |= ev
	idle := !st.running
	st.running = true
	st.mu.Unlock()
	switch {
	case !idle:
	case here:
		st.serve()
	default:
		go st.serve()
	}
}

// serve handles the posted events until none is left (the stream is idle
// again) or the stream ends. The caller has set running.
func (st *stream) serve() {
	for {
		st.mu.Lock()
		ev := st.events
		st.events = 0
		if ev == 0 {
			st.running = false
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
		if reason, done := st.handle(ev); done {
			st.finish(reason)
			return // running stays set: nothing is served after the end
		}
	}
}

// handle serves one set of events; done tells that the stream ends.
func (st *stream) handle(ev streamEvent) (endReason, bool) {
	switch {
	case ev&evGone != 0:
		return endClientGone, true
	case ev&evShutdown != 0:
		return endShutdown, true
	case ev&evOutage != 0:
		return endUnavailable, true
	}
	if ev&evExpiry != 0 && !st.expires.IsZero() {
		if !time.Now().Before(st.expires) {
			return endTokenExpired, true
		}
		// The timer of a deadline since moved, or a wall clock set back
		// (a token's expiry is a wall-clock time): wait for the current
		// deadline.
		st.setExpiry(st.expires)
	}
	if ev&evCtrl != 0 {
		for n := len(st.ctrl); n > 0; n-- {
			(<-st.ctrl)(st)
		}
	}
	if ev&evAcks != 0 {
		if reason, done := st.checkAcks(time.Now()); done {
			return reason, true
		}
		if st.ackTimer != nil {
			st.ackTimer.Reset(ackCheckInterval)
		}
	}
	if ev&evHeartbeat != 0 {
		if err := st.t.heartbeat(st.ctx, time.Now().Add(writeTimeout)); err != nil {
			return endHeartbeatFailed, true
		}
		st.hb.Reset(nextHeartbeat(st.s.opts.HeartbeatInterval, time.Now()))
	}
	if ev&evReady != 0 {
		return st.writeNext()
	}
	return 0, false
}

// finish ends the stream for reason: counted and logged, the transport
// closed, the subscriptions ended (what their outboxes hold goes back),
// the timers and watches stopped, then onEnd.
func (st *stream) finish(reason endReason) {
	s, t := st.s, st.t
	if reason == endClientGone {
		// The connection went away: by the client's doing, or closed by
		// the transport, which then said why.
		reason = t.cause()
	}
	s.streamEnded(st.ctx, t.name(), reason, len(st.subs), time.Since(st.started))
	t.end(reason)
	st.hb.Stop()
	st.closeAll()
	if st.stopCtx != nil {
		st.stopCtx()
	}
	s.live.remove(st)
	st.connDone()
	st.onEnd(reason)
	s.streams.done()
}

// newSub makes a subscription of queue q in mode.
func newSub(q domain.Queue, mode hub.Mode, transport string) *streamSub {
	return &streamSub{q: q, w: hub.NewStream(q.String(), streamOutbox, mode, transport), unacked: map[string]unacked{}}
}

// add starts feeding sub into the stream.
func (st *stream) add(sub *streamSub) {
	sub.w.OnReady(func() { st.post(evReady, false) })
	sub.w.ShareBytes(st.bytes)
	st.subs = append(st.subs, sub)
	st.expireAt(sub.expires)
	if sub.w.Mode().Reliable && st.ackTimer == nil {
		st.ackTimer = time.AfterFunc(ackCheckInterval, func() { st.post(evAcks, true) })
	}
	st.s.svc.Subscribe(sub.w)
}

// sub returns the subscription of queue id, or nil.
func (st *stream) sub(id string) *streamSub {
	for _, sub := range st.subs {
		if sub.q.ID == id {
			return sub
		}
	}
	return nil
}

// remove ends sub: the hub hands back what is still in its outbox.
// Messages written and not acknowledged stay in flight (the client may
// still ack them through POST /ack) until their deadline.
func (st *stream) remove(sub *streamSub) {
	for i, x := range st.subs {
		if x == sub {
			st.subs = append(st.subs[:i], st.subs[i+1:]...)
			break
		}
	}
	st.s.svc.Unsubscribe(sub.w)
}

func (st *stream) closeAll() {
	for len(st.subs) > 0 {
		st.remove(st.subs[0])
	}
	if st.ackTimer != nil {
		st.ackTimer.Stop()
	}
	st.setExpiry(time.Time{})
}

// endSub ends one subscription for reason; done is true when that ends the
// whole stream (transports with one queue per connection).
func (st *stream) endSub(sub *streamSub, reason endReason) (endReason, bool) {
	if !st.t.subEnded(st.ctx, sub, reason) {
		return reason, true
	}
	st.remove(sub)
	return 0, false
}

// take returns the next message of the subscriptions, round-robin.
func (st *stream) take() (*streamSub, delivery.Message, bool) {
	for range st.subs {
		sub := st.subs[st.next%len(st.subs)]
		st.next++
		if m, ok := sub.w.Next(); ok {
			return sub, m, true
		}
	}
	return nil, delivery.Message{}, false
}

// writeNext writes one waiting message, if any, and keeps the stream served
// while messages wait.
func (st *stream) writeNext() (endReason, bool) {
	sub, m, ok := st.take()
	if !ok {
		return 0, false
	}
	st.post(evReady, false) // more may wait: come back after serving the other events
	s, t, name := st.s, st.t, st.t.name()
	if st.ctx.Err() != nil {
		s.svc.HandBack(sub.w, name, m)
		return endClientGone, true
	}
	if _, written := sub.unacked[m.TID]; written || st.overdue[overdueKey{sub.q, m.TID}] {
		// Re-queued while this connection still had it unacknowledged:
		// its ack is overdue, and it is never written twice here.
		st.overdueBack(sub, m)
		return st.endSub(sub, endAckTimeout)
	}
	start := time.Now()
	if err := t.send(st.ctx, sub, m, start.Add(writeTimeout)); err != nil {
		s.svc.HandBack(sub.w, name, m)
		if errors.Is(err, errEncode) {
			s.log.LogAttrs(st.ctx, slog.LevelError, "stream message not encoded", slog.String("transport", name), slog.String("queue", sub.w.Queue()), slog.Any("err", err))
			return endError, true
		}
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			s.m.SlowConsumers.WithLabelValues(name).Inc() // logged with the end of the stream
			return endSlow, true
		}
		return endClientGone, true
	}
	s.m.DeliveryLatency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	reliable := sub.w.Mode().Reliable
	s.svc.Delivered(name, reliable, m)
	if reliable {
		sub.unacked[m.TID] = unacked{m: m, deadline: start.Add(sub.w.Mode().AckTimeout)}
	}
	// Writing freed outbox room and budget bytes: every subscription the
	// shared budget held back pulls again, not only the one written.
	for _, x := range st.subs {
		s.svc.Pulled(x.w)
	}
	return 0, false
}

// ack acknowledges tids in-band: on queue id, or (id empty) on each
// subscription in turn. It returns the ids that were not in flight.
func (st *stream) ack(id string, tids []string) (failed []string, err error) {
	var subs []*streamSub
	if id != "" {
		if sub := st.sub(id); sub != nil {
			subs = append(subs, sub)
		}
	} else {
		subs = st.subs
	}
	left := tids
	for _, sub := range subs {
		if len(left) == 0 {
			break
		}
		res, err := st.s.svc.Ack(st.ctx, sub.q, left, st.t.name())
		if err != nil {
			return nil, err
		}
		left = left[:0:0]
		for _, r := range res {
			if r.OK {
				delete(sub.unacked, r.TID)
			} else {
				left = append(left, r.TID)
			}
		}
	}
	return left, nil
}

// checkAcks looks at reliable deliveries whose ack deadline passed:
// acknowledged ones (through any route or node) are forgotten; for one
// still unacknowledged the message goes back to its queue at once and its
// subscription (on one-queue transports: the stream) ends (API.md 1.3).
func (st *stream) checkAcks(now time.Time) (endReason, bool) {
	for _, sub := range append([]*streamSub(nil), st.subs...) {
		for tid, u := range sub.unacked {
			if now.Before(u.deadline) {
				continue
			}
			settled, err := st.s.svc.Settled(st.ctx, sub.q, tid)
			if err != nil {
				break // try again on the next tick
			}
			if settled {
				delete(sub.unacked, tid)
				continue
			}
			st.overdueBack(sub, u.m)
			if reason, done := st.endSub(sub, endAckTimeout); done {
				return reason, true
			}
			break
		}
	}
	return 0, false
}

// overdueBack puts a message whose ack is overdue back at the head of its
// queue for the next consumer, unless the reaper already did (the hand-back
// is conditional on the in-flight record of this very delivery).
func (st *stream) overdueBack(sub *streamSub, m delivery.Message) {
	delete(sub.unacked, m.TID)
	st.overdue[overdueKey{sub.q, m.TID}] = true
	st.s.svc.Overdue(sub.w, m)
}

// isTimeout tells whether err is a network timeout.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
