package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/redisq"
)

const (
	wsReadLimit        = 64 << 10 // largest client frame accepted
	wsMaxSubscriptions = 256      // queues per multiplexed connection
)

// acceptWS upgrades the request to a WebSocket, with the origin rules of
// the configured CORS origins (the request's own host is always allowed).
func (s *Server) acceptWS(c echo.Context) (*websocket.Conn, error) {
	conn, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{
		OriginPatterns: s.opts.WSOriginPatterns,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(wsReadLimit)
	return conn, nil
}

// wsTransport frames per-queue WebSocket messages.
type wsTransport struct {
	conn    *websocket.Conn
	label   string
	mu      sync.Mutex  // one writer at a time (frames and close)
	pinging atomic.Bool // a ping is waiting for its pong
}

// pongTimeout is how long a ping may wait for its pong before the peer is
// taken for dead and the connection closed.
const pongTimeout = 30 * time.Second

func (t *wsTransport) name() string { return t.label }

func (t *wsTransport) writeJSON(ctx context.Context, v any, deadline time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.Write(wctx, websocket.MessageText, b)
}

func (t *wsTransport) send(ctx context.Context, m redisq.Message, deadline time.Time) error {
	return t.writeJSON(ctx, newEventData(m), deadline)
}

// heartbeat sends a ping without holding up the stream: the pong is awaited
// in the background (up to pongTimeout), and a peer that does not answer
// is disconnected, which ends the stream through its reader.
func (t *wsTransport) heartbeat(ctx context.Context, _ time.Time) error {
	if !t.pinging.CompareAndSwap(false, true) {
		return nil // the previous ping is still out
	}
	go func() {
		defer t.pinging.Store(false)
		pctx, cancel := context.WithTimeout(ctx, pongTimeout)
		defer cancel()
		if err := t.conn.Ping(pctx); err != nil && ctx.Err() == nil {
			_ = t.conn.CloseNow()
		}
	}()
	return nil
}

func (t *wsTransport) end(r endReason) {
	switch r {
	case endShutdown:
		_ = t.conn.Close(websocket.StatusGoingAway, r.String())
	case endAckTimeout:
		_ = t.conn.Close(websocket.StatusPolicyViolation, r.String())
	case endSlow:
		_ = t.conn.Close(websocket.StatusPolicyViolation, r.String())
	case endError:
		_ = t.conn.Close(websocket.StatusInternalError, r.String())
	default:
		_ = t.conn.CloseNow()
	}
}

// clientFrame is what clients send: {"ack": [...]} on per-queue sockets;
// {"op": "subscribe"|"unsubscribe"|"ack", ...} on the multiplexed socket.
type clientFrame struct {
	Op           string   `json:"op"`
	Queue        string   `json:"queue"`
	Transactions []string `json:"transactions"`
	Ack          []string `json:"ack"`
	Reliable     bool     `json:"reliable"`
	TimeoutACK   int      `json:"timeoutACK"`
}

// queueWS is GET /queue/{id}/ws: one queue per connection.
func (s *Server) queueWS(c echo.Context) error {
	id, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	reliable := c.QueryParam("reliable") == "1" || c.QueryParam("reliable") == "true"
	conn, err := s.acceptWS(c)
	if err != nil {
		return nil // Accept wrote the error answer
	}
	t := &wsTransport{conn: conn, label: TransportWS}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	acks := make(chan []string, 8)
	go func() {
		defer cancel() // the reader ends: the stream ends
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var f clientFrame
			if json.Unmarshal(data, &f) != nil || (len(f.Ack) == 0 && len(f.Transactions) == 0) {
				_ = t.writeJSON(ctx, map[string]string{"op": "error", "error": "unknown frame: send {\"ack\": [\"<tid>\", ...]}"}, time.Now().Add(writeTimeout))
				continue
			}
			tids := append(f.Ack, f.Transactions...)
			select {
			case acks <- tids:
			case <-ctx.Done():
				return
			}
		}
	}()
	s.runStream(ctx, t, streamOpts{full: full, mode: modeFrom(reliable, c.QueryParam("timeoutACK")), acks: acks,
		onAckErr: func(tid string) {
			_ = t.writeJSON(ctx, map[string]string{"op": "error", "error": tid + "/" + id + " does not exist"}, time.Now().Add(writeTimeout))
		}})
	return nil
}

// muxFrame is a server frame on the multiplexed socket.
type muxFrame struct {
	Op          string `json:"op"`
	Queue       string `json:"queue,omitempty"`
	Data        string `json:"data,omitempty"`
	Transaction string `json:"transaction,omitempty"`
	Priority    string `json:"priority,omitempty"`
	Error       string `json:"error,omitempty"`
}

// muxSub is one queue subscription of a multiplexed socket.
type muxSub struct {
	id, full string
	w        *hub.Waiter
	stop     context.CancelFunc
	done     chan struct{}
}

// muxItem is a message on its way from a subscription to the writer.
type muxItem struct {
	sub *muxSub
	m   redisq.Message
}

// muxWS is GET /ws: one connection, many queues (client frames subscribe,
// unsubscribe and ack).
func (s *Server) muxWS(c echo.Context) error {
	conn, err := s.acceptWS(c)
	if err != nil {
		return nil
	}
	defer s.m.Conn(TransportWSMux)()
	t := &wsTransport{conn: conn, label: TransportWSMux}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	ns := namespace(c)
	out := make(chan muxItem) // unbuffered: each subscription's outbox is the buffer
	frames := make(chan clientFrame, 8)
	go func() {
		defer cancel()
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var f clientFrame
			if err := json.Unmarshal(data, &f); err != nil {
				_ = t.writeJSON(ctx, muxFrame{Op: "error", Error: "invalid JSON frame"}, time.Now().Add(writeTimeout))
				continue
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()

	subs := map[string]*muxSub{}
	shutdown := s.closing
	unsubscribe := func(sub *muxSub) {
		sub.stop()
		<-sub.done
		s.hub.Remove(sub.w)
		delete(subs, sub.id)
	}
	defer func() {
		for _, sub := range subs {
			unsubscribe(sub)
		}
	}()
	hb := time.NewTimer(jittered(heartbeatInterval))
	defer hb.Stop()
	errFrame := func(queue, msg string) {
		_ = t.writeJSON(ctx, muxFrame{Op: "error", Queue: queue, Error: msg}, time.Now().Add(writeTimeout))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-shutdown:
			t.end(endShutdown)
			return nil
		case <-hb.C:
			if err := t.heartbeat(ctx, time.Now().Add(writeTimeout)); err != nil {
				return nil
			}
			hb.Reset(jittered(heartbeatInterval))
		case it := <-out:
			start := time.Now()
			if err := t.writeJSON(ctx, muxFrame{Op: "message", Queue: it.sub.id, Data: it.m.Payload, Transaction: it.m.TID,
				Priority: it.m.PriorityString()}, time.Now().Add(writeTimeout)); err != nil {
				s.handBack(it.sub.w, TransportWSMux, it.m)
				if errors.Is(err, context.DeadlineExceeded) {
					s.m.SlowConsumers.WithLabelValues(TransportWSMux).Inc()
					t.end(endSlow)
				}
				return nil
			}
			s.m.DeliveryLatency.WithLabelValues(TransportWSMux).Observe(time.Since(start).Seconds())
			s.delivered([]redisq.Message{it.m}, it.sub.w.Mode().Reliable, TransportWSMux)
			s.hub.Pulled(it.sub.w)
		case f := <-frames:
			switch f.Op {
			case "subscribe":
				if err := validQueue(f.Queue); err != nil {
					errFrame(f.Queue, err.Error())
					continue
				}
				if _, ok := subs[f.Queue]; ok {
					continue
				}
				if len(subs) >= wsMaxSubscriptions {
					errFrame(f.Queue, "too many subscriptions on one connection")
					continue
				}
				full := ns + f.Queue
				if err := s.authorizeMux(c, full); err != nil {
					errFrame(f.Queue, err.Error())
					continue
				}
				mode := hub.Mode{}
				if f.Reliable {
					mode = modeFrom(true, itoa(int64(f.TimeoutACK)))
				}
				sctx, stop := context.WithCancel(ctx)
				sub := &muxSub{id: f.Queue, full: full, w: hub.NewStream(full, streamOutbox, mode, TransportWSMux), stop: stop, done: make(chan struct{})}
				subs[f.Queue] = sub
				s.hub.Add(sub.w)
				go s.forward(sctx, sub, out)
				_ = t.writeJSON(ctx, muxFrame{Op: "subscribed", Queue: f.Queue}, time.Now().Add(writeTimeout))
			case "unsubscribe":
				if sub, ok := subs[f.Queue]; ok {
					unsubscribe(sub)
					_ = t.writeJSON(ctx, muxFrame{Op: "unsubscribed", Queue: f.Queue}, time.Now().Add(writeTimeout))
				}
			case "ack":
				s.muxAck(ctx, ns, f, subs, errFrame)
			default:
				errFrame(f.Queue, "unknown op "+f.Op+": use subscribe, unsubscribe or ack")
			}
		}
	}
}

// forward moves one subscription's messages to the connection writer; a
// message it holds when the subscription ends goes back to the queue.
func (s *Server) forward(ctx context.Context, sub *muxSub, out chan<- muxItem) {
	defer close(sub.done)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-sub.w.Outbox():
			select {
			case out <- muxItem{sub: sub, m: m}:
			case <-ctx.Done():
				s.handBack(sub.w, TransportWSMux, m)
				return
			}
		}
	}
}

// muxAck acknowledges reliable deliveries: on the queue named in the frame,
// or else on each subscribed queue in turn.
func (s *Server) muxAck(ctx context.Context, ns string, f clientFrame, subs map[string]*muxSub, errFrame func(q, msg string)) {
	tids := append(f.Transactions, f.Ack...)
	if len(tids) == 0 {
		errFrame(f.Queue, "missing transactions")
		return
	}
	var queues []*muxSub
	if f.Queue != "" {
		if sub, ok := subs[f.Queue]; ok {
			queues = append(queues, sub)
		}
	} else {
		for _, sub := range subs {
			queues = append(queues, sub)
		}
	}
	left := map[string]bool{}
	for _, t := range tids {
		left[t] = true
	}
	for _, sub := range queues {
		var try []string
		for t := range left {
			try = append(try, t)
		}
		if len(try) == 0 {
			break
		}
		res, err := s.ackOn(ctx, sub.full, try, TransportWSMux)
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "in-band ack", slog.Any("err", err))
			return
		}
		for _, r := range res {
			if r.OK {
				delete(left, r.TID)
			}
		}
	}
	for t := range left {
		errFrame(f.Queue, t+" is not in flight on this connection's queues")
	}
}
