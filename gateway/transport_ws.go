package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
)

const (
	wsReadLimit        = 64 << 10 // largest client frame accepted
	wsMaxSubscriptions = 256      // queues per multiplexed connection
	// wsMaxAuthFailures is how many subscriptions a multiplexed connection
	// may have refused for their credentials before it is closed (1008),
	// so one connection cannot be used to guess on and on.
	wsMaxAuthFailures = 3
)

// acceptWS upgrades the request to a WebSocket for t, with the origin
// rules of the configured CORS origins (the request's own host is always
// allowed), and sets t.conn and t.wire. The library gets small buffers
// over the wsWire (see wsHijacker); the transport writes its frames
// through it, control frames included (see writeControl).
func (s *Server) acceptWS(c echo.Context, t *wsTransport) error {
	hj := &wsHijacker{ResponseWriter: c.Response()}
	t.pongC = make(chan struct{}, 1)
	t.done = make(chan struct{})
	conn, err := websocket.Accept(hj, c.Request(), &websocket.AcceptOptions{
		OriginPatterns: s.opts.WSOriginPatterns,
		OnPingReceived: t.answerPing,
		OnPongReceived: t.pongReceived,
	})
	if err != nil {
		return err
	}
	conn.SetReadLimit(wsReadLimit)
	t.conn, t.wire = conn, hj.wire
	return nil
}

// wsTransport frames WebSocket messages: per-queue (API.md 2.2, the SSE
// data JSON) or multiplexed (muxFrame).
type wsTransport struct {
	conn    *websocket.Conn
	wire    *wsWire // the connection under conn: writeJSON gathers each frame and writes it at once
	label   string
	mux     bool        // GET /ws: frames name their queue; a subscription may end alone
	mu      sync.Mutex  // one writer at a time (frames and close)
	pinging atomic.Bool // a ping is waiting for its pong
	pings   sync.WaitGroup
	pong    time.Duration // how long a ping waits for its pong (Options.WSPongTimeout)
	pongC   chan struct{} // a pong came (pongReceived; capacity 1)
	done    chan struct{} // closed by end: a pong is no longer awaited
	endCause
	// authFailures counts the subscriptions refused for their credentials
	// (multiplexed socket; only the stream's serving goroutine touches it).
	authFailures int

	// Multiplexed socket: provenC is closed once it authenticated or
	// subscribed (muxGuard's auth timeout no longer closes it; the
	// connection limit no longer sheds it).
	provenC   chan struct{}
	proveOnce sync.Once
	lc        *limitConn // its socket under the connection limit, or nil
}

// prove records that a multiplexed socket authenticated or subscribed.
func (t *wsTransport) prove(s *Server) {
	t.proveOnce.Do(func() {
		close(t.provenC)
		if l := s.sec.limit; l != nil && t.lc != nil {
			l.spokeWS(t.lc)
		}
	})
}

// defaultPongTimeout is how long a ping may wait for its pong before the
// peer is taken for dead and the connection closed, when
// Options.WSPongTimeout is not set.
const defaultPongTimeout = 30 * time.Second

func (t *wsTransport) name() string { return t.label }

func (t *wsTransport) writeJSON(ctx context.Context, v any, deadline time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", errEncode, err)
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wire.gather()
	err = t.conn.Write(wctx, websocket.MessageText, b)
	if ferr := t.wire.flush(deadline); ferr != nil {
		// Part of a frame may be out: the connection cannot go on (as
		// when the library's own write times out).
		_ = t.conn.CloseNow()
		if err == nil {
			err = ferr
		}
	}
	return err
}

// frame writes a control frame (errors, subscription answers) with the
// usual write deadline; a failure shows up on the next write or read.
func (t *wsTransport) frame(ctx context.Context, v any) {
	_ = t.writeJSON(ctx, v, time.Now().Add(writeTimeout))
}

func (t *wsTransport) send(ctx context.Context, sub *streamSub, m delivery.Message, deadline time.Time) error {
	if t.mux {
		return t.writeJSON(ctx, muxFrame{Op: "message", Queue: sub.q.ID, Data: m.Payload, Transaction: m.TID, Priority: m.Priority.String()}, deadline)
	}
	return t.writeJSON(ctx, newEventData(sub.q.ID, m), deadline)
}

// Control frames (ping, pong) are written by the transport, not by
// coder/websocket: the library gives each of its own control writes a fixed
// 5 s timer that closes the socket when it fires, whether or not the write
// was stuck. On a node starved of CPU (100,000 subscribers over 6
// gateways on 2 cores, a delivery burst queueing every subscriber's
// goroutine at once) a ping's goroutine could wait longer than that to be
// scheduled, and the library closed idle, healthy connections (42 of
// 100,000 in a capacity-100k run: 30 control_timeout, 12 heartbeat_failed).
// Written here, a control frame is one write under the transport's lock
// and a socket write deadline, which fails only when the write itself
// cannot proceed (the client stopped reading), as for every other frame.
//
// wsFramePing and wsFramePong are the first byte of a ping and of a pong
// frame: the WebSocket opcodes (RFC 6455 5.2) with FIN set. A server's
// frames are not masked, and a control payload is at most wsMaxControl
// bytes, so its length fits the second byte.
const (
	wsFramePing  = 0x89
	wsFramePong  = 0x8a
	wsMaxControl = 125
)

// wsPingPayload is what the node's pings carry (a pong echoes it).
var wsPingPayload = []byte("popbox")

// writeControl writes one control frame with payload p (cut to
// wsMaxControl bytes) before deadline.
func (t *wsTransport) writeControl(opcode byte, p []byte, deadline time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wire.writeFrame(deadline, opcode, p)
}

// answerPing is the library's OnPingReceived: it writes the pong itself
// (see above) and tells the library not to.
func (t *wsTransport) answerPing(_ context.Context, p []byte) bool {
	if err := t.writeControl(wsFramePong, p, time.Now().Add(writeTimeout)); err != nil {
		t.set(endHeartbeatFailed)
		_ = t.conn.CloseNow()
	}
	return false
}

// pongReceived is the library's OnPongReceived: any pong shows the peer
// alive (RFC 6455 allows unsolicited ones).
func (t *wsTransport) pongReceived(context.Context, []byte) {
	select {
	case t.pongC <- struct{}{}:
	default:
	}
}

// heartbeat writes a ping (before deadline, as any frame) and awaits its
// pong in the background, without holding up the stream: a peer that does
// not answer within the pong timeout is disconnected, which ends the
// stream through its reader (the cause recorded: no pong in time). A ping
// that cannot be written ends the stream (heartbeat_failed). end waits for
// the pong's goroutine.
func (t *wsTransport) heartbeat(ctx context.Context, deadline time.Time) error {
	if !t.pinging.CompareAndSwap(false, true) {
		return nil // the previous ping is still out
	}
	select {
	case <-t.pongC: // a pong that came since: not this ping's answer
	default:
	}
	if err := t.writeControl(wsFramePing, wsPingPayload, deadline); err != nil {
		t.pinging.Store(false)
		return err
	}
	t.pings.Go(func() {
		defer t.pinging.Store(false)
		timer := time.NewTimer(t.pong)
		defer timer.Stop()
		select {
		case <-t.pongC:
		case <-t.done:
		case <-timer.C:
			t.set(endPongTimeout)
			_ = t.conn.CloseNow()
		}
	})
	return nil
}

// subEnded: on the multiplexed socket an error frame names the queue whose
// subscription ended; a per-queue socket ends as a whole.
func (t *wsTransport) subEnded(ctx context.Context, sub *streamSub, r endReason) bool {
	if !t.mux {
		return false
	}
	t.frame(ctx, muxFrame{Op: "error", Queue: sub.q.ID, Error: r.String() + ": subscription ended"})
	return true
}

// StatusTokenExpired closes a WebSocket whose token expired (docs/API.md
// 2.2; 4000-4999 are the application's codes, 4401 echoes HTTP 401).
const StatusTokenExpired websocket.StatusCode = 4401

// Close codes (docs/API.md 2.2): 1001 shutdown, 1008 ack timeout or slow
// consumer, 1011 storage unavailable or internal error, 4401 token
// expired.
func (t *wsTransport) end(r endReason) {
	switch r {
	case endTokenExpired:
		_ = t.conn.Close(StatusTokenExpired, r.String())
	case endShutdown:
		_ = t.conn.Close(websocket.StatusGoingAway, r.String())
	case endAckTimeout, endSlow:
		_ = t.conn.Close(websocket.StatusPolicyViolation, r.String())
	case endError, endUnavailable:
		_ = t.conn.Close(websocket.StatusInternalError, r.String())
	default:
		_ = t.conn.CloseNow()
	}
	close(t.done)
	t.pings.Wait()
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
	Token        string   `json:"token"`
}

// readFrames runs the connection's reader: each client frame becomes work
// for the stream (parse turns it into a streamCtrl, or nil to ignore it),
// queued on ctrl and posted to st (evCtrl). It returns when the connection
// ends, or when the stream ended (ended is closed) while it waited for
// room on ctrl. ctx never ends: a read with a context that can end costs
// a context.AfterFunc record in coder/websocket for as long as it waits.
//
// Client frames are rate-limited per connection (perSecond frames a
// second, burst perSecond+wsMaxSubscriptions so that a client may
// subscribe to every queue at once; 0: unlimited): a client beyond it is
// closed with 1008 before its frame is parsed.
func (t *wsTransport) readFrames(ctx context.Context, ended <-chan struct{}, st *stream, ctrl chan<- streamCtrl, perSecond int, parse func(data []byte) streamCtrl) {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), perSecond+wsMaxSubscriptions)
	}
	for {
		_, data, err := t.conn.Read(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				// Not the client's doing (when the stream itself
				// closed the socket, its end has read the cause
				// already: this one is never counted). ctx has no
				// deadline, so a deadline is coder/websocket's own:
				// 5 s to read a control frame's payload (the transport
				// writes pings and pongs itself, see writeControl);
				// beyond, it closes the socket itself. A socket closed
				// here (net.ErrClosed, not EOF or a reset from the
				// peer) was closed by that library too: every close of
				// this package records its cause first, and set keeps
				// the first. A client stalled in a control frame, or a
				// node too starved of CPU to read one in time.
				t.set(endControlTimeout)
			}
			return
		}
		if !lim.Allow() {
			t.set(endFrameRate)
			_ = t.conn.Close(websocket.StatusPolicyViolation, "too many frames")
			return
		}
		f := parse(data)
		if f == nil {
			continue
		}
		select {
		case ctrl <- f:
			st.post(evCtrl, false)
		case <-ended:
			return
		}
	}
}

// serveWS runs the stream of a WebSocket connection and, on the calling
// goroutine (the connection's only one while it is idle), its reader; it
// returns when both ended. ctx never ends (detach): the reader's end is
// the client's going away (evGone), and the stream's end closes the
// socket, which ends the reader.
func (s *Server) serveWS(ctx context.Context, t *wsTransport, parse func(data []byte) streamCtrl, subs ...*streamSub) {
	ctrl := make(chan streamCtrl, 8) // a reader ahead of the stream by 8 frames waits
	ended := make(chan struct{})
	st := s.startStream(ctx, t, ctrl, func(endReason) { close(ended) }, subs...)
	t.readFrames(ctx, ended, st, ctrl, s.opts.WSFrameRate, parse)
	st.post(evGone, true)
	<-ended
}

// queueWS is GET /queue/{id}/ws: one queue per connection.
func (s *Server) queueWS(c echo.Context) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	reliable := c.QueryParam("reliable") == "1" || c.QueryParam("reliable") == "true"
	t := &wsTransport{label: delivery.TransportWS, pong: s.opts.WSPongTimeout}
	if s.acceptWS(c, t) != nil {
		return nil // Accept wrote the error answer
	}
	parse := func(data []byte) streamCtrl {
		var f clientFrame
		if json.Unmarshal(data, &f) != nil || (len(f.Ack) == 0 && len(f.Transactions) == 0) {
			return func(st *stream) {
				t.frame(st.ctx, map[string]string{"op": "error", "error": "unknown frame: send {\"ack\": [\"<tid>\", ...]}"})
			}
		}
		tids := append(f.Ack, f.Transactions...)
		return func(st *stream) {
			failed, err := st.ack(q.ID, tids)
			if err != nil {
				s.log.LogAttrs(st.ctx, slog.LevelWarn, "in-band ack", slog.Any("err", err))
				return
			}
			for _, tid := range failed {
				t.frame(st.ctx, map[string]string{"op": "error", "error": tid + "/" + q.ID + " does not exist"})
			}
		}
	}
	sub := newSub(q, modeFrom(reliable, c.QueryParam("timeoutACK")), delivery.TransportWS)
	sub.expires = s.tokenExpiry(c, q)
	// The stream needs nothing more of the request: it leaves the handler
	// (and net/http's buffers of the connection) behind.
	s.detach(c, func(ctx context.Context) { s.serveWS(ctx, t, parse, sub) })
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
	Expires     int64  `json:"expires,omitempty"` // "authenticated": the new deadline, Unix seconds
}

// muxWS is GET /ws: one connection, many queues (client frames subscribe,
// unsubscribe and ack), on the same stream runner as every transport.
//
// With RequireAuth, a token given at the handshake (Authorization: Bearer
// or access_token) is verified before the upgrade (401 when refused), and
// a socket that has neither such a token nor a successful subscription or
// auth frame within WSAuthTimeout is closed with 1008. Under the
// connection limit, a socket without subscription may be shed (1013).
func (s *Server) muxWS(c echo.Context) error {
	proven := false // authenticated at the handshake
	if s.opts.RequireAuth && s.sec.jwt != nil {
		if tok := bearer(c, true); tok != "" {
			if err := s.failureBlocked(c); err != nil {
				s.writeDenied(c, err)
				return errHandled
			}
			if _, err := s.sec.jwt.Parse(tok); err != nil {
				s.authLog(c, "", err.Error())
				s.writeDenied(c, s.failed(c, &denied{tokenBad: true}))
				return errHandled
			}
			proven = true
		}
	}
	t := &wsTransport{label: delivery.TransportWSMux, mux: true, pong: s.opts.WSPongTimeout,
		provenC: make(chan struct{}), lc: limitConnOf(c)}
	if s.acceptWS(c, t) != nil {
		return nil
	}
	g := &muxGuard{s: s, t: t}
	if l := s.sec.limit; l != nil && t.lc != nil {
		l.silentWS(t.lc, g.shed)
	}
	if proven {
		t.prove(s)
	}
	if s.opts.RequireAuth && s.opts.WSAuthTimeout > 0 {
		g.expireAfter(s.opts.WSAuthTimeout)
	}
	ns := namespace(c)
	// The stream leaves the handler (and net/http's buffers of the
	// connection, and its deep stack) behind like every other stream; the
	// client frames' checks get a copy of what they read of the request.
	dc := detachedContext(c)
	parse := func(data []byte) streamCtrl {
		var f clientFrame
		if err := json.Unmarshal(data, &f); err != nil {
			return func(st *stream) { t.frame(st.ctx, muxFrame{Op: "error", Error: "invalid JSON frame"}) }
		}
		return func(st *stream) { s.muxControl(dc, st, t, ns, f) }
	}
	s.detach(c, func(ctx context.Context) {
		defer g.end()
		s.serveWS(ctx, t, parse)
	})
	return nil
}

// muxGuard closes a multiplexed socket that has proven nothing (no
// authentication, no subscription) within the auth timeout (1008), or
// that the connection limit shed (1013). While it waits it holds no
// goroutine (a timer, and the limiter's callback); a close runs on a
// goroutine of the guard's, since it waits for the client's close frame.
type muxGuard struct {
	s       *Server
	t       *wsTransport
	mu      sync.Mutex
	ended   bool        // the stream ended: nothing more is closed
	timer   *time.Timer // the auth timeout, or nil
	closing sync.WaitGroup
}

// expireAfter closes the socket after timeout unless it has proven
// itself by then.
func (g *muxGuard) expireAfter(timeout time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.timer = time.AfterFunc(timeout, func() {
		select {
		case <-g.t.provenC:
			return
		default:
		}
		g.close(func() {
			g.s.m.ShedConns.WithLabelValues(ShedWSAuthTimeout).Inc()
			_ = g.t.conn.Close(websocket.StatusPolicyViolation, "no successful authentication or subscription within "+timeout.String())
		})
	})
}

// shed is the connection limit's callback (called under its lock).
func (g *muxGuard) shed() {
	g.close(func() {
		_ = g.t.conn.Close(StatusTryAgainLater, "server at its connection limit: try again later")
	})
}

// close records the cause and runs closeConn on a goroutine of the
// guard's, unless the stream has ended.
func (g *muxGuard) close(closeConn func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended {
		return
	}
	g.t.set(endShed)
	g.closing.Go(closeConn)
}

// end stops the guard when the stream has ended and waits for a close
// under way.
func (g *muxGuard) end() {
	g.mu.Lock()
	g.ended = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
	g.closing.Wait()
}

// muxControl carries out one client frame of the multiplexed socket, on
// the stream's serving goroutine.
func (s *Server) muxControl(c echo.Context, st *stream, t *wsTransport, ns domain.Namespace, f clientFrame) {
	errFrame := func(msg string) { t.frame(st.ctx, muxFrame{Op: "error", Queue: f.Queue, Error: msg}) }
	switch f.Op {
	case "subscribe":
		if err := validQueue(f.Queue); err != nil {
			errFrame(err.Error())
			return
		}
		if st.sub(f.Queue) != nil {
			return
		}
		if len(st.subs) >= wsMaxSubscriptions {
			errFrame("too many subscriptions on one connection")
			return
		}
		q := ns.Queue(f.Queue)
		if err := s.authorizeMux(c, q); err != nil {
			errFrame(err.Error())
			var d *denied
			if errors.As(err, &d) && (d.credentials || d.limited > 0) {
				if t.authFailures++; t.authFailures >= wsMaxAuthFailures {
					// The reader sees the close, which ends the stream.
					t.set(endAuthFailed)
					_ = t.conn.Close(websocket.StatusPolicyViolation, "too many failed authentications")
				}
			}
			return
		}
		sub := newSub(q, modeFrom(f.Reliable, itoa(int64(f.TimeoutACK))), delivery.TransportWSMux)
		sub.expires = s.tokenExpiry(c, q)
		st.add(sub)
		t.prove(s)
		t.frame(st.ctx, muxFrame{Op: "subscribed", Queue: f.Queue})
	case "auth":
		until, refused := s.refreshToken(c, st, f.Token)
		if refused != "" {
			errFrame(refused)
			return
		}
		t.prove(s)
		fr := muxFrame{Op: "authenticated"}
		if !until.IsZero() {
			fr.Expires = until.Unix()
		}
		t.frame(st.ctx, fr)
	case "unsubscribe":
		if sub := st.sub(f.Queue); sub != nil {
			st.remove(sub)
			t.frame(st.ctx, muxFrame{Op: "unsubscribed", Queue: f.Queue})
		}
	case "ack":
		tids := append(f.Transactions, f.Ack...)
		if len(tids) == 0 {
			errFrame("missing transactions")
			return
		}
		failed, err := st.ack(f.Queue, tids)
		if err != nil {
			s.log.LogAttrs(st.ctx, slog.LevelWarn, "in-band ack", slog.Any("err", err))
			return
		}
		for _, tid := range failed {
			errFrame(tid + " is not in flight on this connection's queues")
		}
	default:
		errFrame("unknown op " + f.Op + ": use subscribe, unsubscribe, ack or auth")
	}
}
