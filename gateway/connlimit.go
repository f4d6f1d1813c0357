package gateway

import (
	"container/list"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/auth"
)

// The connection limit (POPBOX_MAX_CONNECTIONS, docs/SECURITY.md).
//
// What is counted are open sockets, on both ports together, from the
// moment a connection is accepted until it is closed: a request in
// progress, an idle keep-alive connection between two requests, and a
// hijacked stream or WebSocket (which has left net/http but still holds
// its socket) all count. The http.Servers report them through ConnContext
// and ConnState (Server.TrackConnections); a hijacked socket is given
// back by the stream that holds it when it ends (connSlot).
//
// A socket holds one of two kinds of place, decided when its first
// request is admitted:
//
//   - an ordinary place: MaxConnections of them, for any request;
//   - a reserved place: reserve = max(16, MaxConnections/8) more, only
//     for the operational routes (/healthz, /readyz, /metrics) and for
//     requests with valid credentials, so that probes, scrapes and
//     authenticated clients still get in while strangers fill the node.
//     The last opsKeep = max(2, reserve/4) of them are for the
//     operational routes alone: authenticated clients cannot take the
//     node's health checks away either. The operational routes go to the
//     reserve first (they never take a client's place while it has
//     room); authenticated requests only when no ordinary place is left.
//
// When no ordinary place is free, the limiter makes room, in this order:
// the socket idle the longest on keep-alive is closed (a client reopens
// one when it needs it), then the /ws socket silent the longest (no
// subscription yet) is closed with 1013 "try again later". Only when there
// is nothing to shed does a request go to the reserve, or, if it has no
// claim on it or it is full, get 503 {"errors": ["too many connections"]}
// with Retry-After: 1 and Connection: close.
//
// Accepting is bounded too: when MaxConnections + reserve sockets are
// open, a new connection first makes an idle one close (or one that sent
// no request for freshGrace), else it is closed at once. So a node never
// holds many more sockets than MaxConnections + reserve (shed sockets
// close as fast as their close handshake allows).
//
// Valid credentials, for the reserve: a bearer token whose signature and
// expiry verify (a few microseconds; its queues are checked later, by the
// route), or Basic credentials that verified on this node within the
// verification cache's TTL (auth.Boxes.Verified: a lookup, never a bcrypt
// run in the admission path). A wrong credential therefore never buys a
// reserved place: a token must be signed by the operator's key, and Basic
// credentials must be right (the first request of a Basic client whose
// credentials are not yet cached competes for an ordinary place). The
// credentials are checked again, in full, by the route.

// freshGrace is how long an accepted connection may go without sending a
// request before a new connection may make it close when the node is
// full.
const freshGrace = time.Second

// Reasons of popbox_shed_connections_total.
const (
	ShedIdle          = "idle"            // an idle keep-alive connection closed to make room
	ShedNoRequest     = "no_request"      // a connection that sent no request, closed to make room
	ShedWSSilent      = "ws_silent"       // a /ws without subscription closed with 1013 to make room
	ShedWSAuthTimeout = "ws_auth_timeout" // a /ws without authentication or subscription in time (1008)
)

// StatusTryAgainLater closes a silent /ws shed at the connection limit.
const StatusTryAgainLater = 1013

// reqClass is the claim a request has on the reserve.
type reqClass uint8

const (
	classOrdinary reqClass = iota
	classCredentialed
	classOps
)

// opsRoutes are the operational routes: always given a reserved place.
var opsRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

type slotKind uint8

const (
	slotNone     slotKind = iota // accepted, no request admitted yet
	slotOrdinary                 // one of the MaxConnections places
	slotReserve                  // one of the reserved places
)

type connPhase uint8

const (
	phaseNew      connPhase = iota // accepted, no request yet
	phaseActive                    // a request in progress
	phaseIdle                      // keep-alive, between requests
	phaseHijacked                  // a stream or WebSocket outside net/http
	phaseShed                      // closed by the limiter, closing
)

// limitConn is one open socket.
type limitConn struct {
	conn  net.Conn
	slot  slotKind
	phase connPhase
	since time.Time     // accepted, or became idle
	elem  *list.Element // in one of the limiter's lists, or nil
	in    *list.List
	// hijacked: the socket left net/http; its stream gives it back
	// (releaseHijacked).
	hijacked bool
	// shed, for a /ws socket without subscription (in l.silent): asks
	// its stream to close with 1013. Must not block.
	shed func()
}

// connLimiter counts the node's open sockets (see above). Its methods
// are safe for concurrent use.
type connLimiter struct {
	limit, reserve, opsKeep int
	m                       *Metrics

	mu         sync.Mutex
	conns      map[net.Conn]*limitConn
	ordinary   int // sockets holding an ordinary place
	reserved   int // sockets holding a reserved place
	unadmitted int // sockets without a place (not shed)
	// Candidates for shedding, oldest first.
	idleOrd, idleRes *list.List // idle keep-alive sockets, by place
	fresh            *list.List // sockets without a place, not in a request
	silent           *list.List // /ws sockets without subscription holding an ordinary place
}

// newConnLimiter returns the limiter of limit sockets (plus the reserve);
// nil when limit <= 0 (no limit).
func newConnLimiter(limit int, m *Metrics) *connLimiter {
	if limit <= 0 {
		return nil
	}
	reserve := max(16, limit/8)
	return &connLimiter{limit: limit, reserve: reserve, opsKeep: max(2, reserve/4), m: m,
		conns: map[net.Conn]*limitConn{}, idleOrd: list.New(), idleRes: list.New(), fresh: list.New(), silent: list.New()}
}

// limitConnKey keys a connection's *limitConn in its context.
type limitConnKey struct{}

// TrackConnections makes hs report its connections to the connection
// limit (ConnContext and ConnState, chained with what hs already has).
// Every http.Server that serves one of the Handlers must be given to it;
// without it (or with MaxConnections 0) there is no limit.
//
// With or without a limit it also counts the connections that closed
// before their first request (popbox_connections_closed_before_request_total).
func (s *Server) TrackConnections(hs *http.Server) {
	s.countUnanswered(hs)
	l := s.sec.limit
	if l == nil {
		return
	}
	prevCtx, prevState := hs.ConnContext, hs.ConnState
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prevCtx != nil {
			ctx = prevCtx(ctx, c)
		}
		if lc := l.accept(c); lc != nil {
			ctx = context.WithValue(ctx, limitConnKey{}, lc)
		}
		return ctx
	}
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		l.state(c, st)
		if prevState != nil {
			prevState(c, st)
		}
	}
}

// limitConnOf returns the request's socket under the limit (nil without a
// limit).
func limitConnOf(c echo.Context) *limitConn {
	lc, _ := c.Request().Context().Value(limitConnKey{}).(*limitConn)
	return lc
}

// closeSocket closes the socket under conn at once (a *tls.Conn's own
// Close would first write a close_notify alert, which can block).
func closeSocket(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	_ = conn.Close()
}

// accept registers a new connection; nil when the node is full and
// nothing could be shed (the connection is then closed).
func (l *connLimiter) accept(c net.Conn) *limitConn {
	now := time.Now()
	l.mu.Lock()
	var victim *limitConn
	if l.ordinary+l.reserved+l.unadmitted >= l.limit+l.reserve {
		victim = l.oldestIdleLocked()
		if victim == nil {
			if e := l.fresh.Front(); e != nil && now.Sub(e.Value.(*limitConn).since) >= freshGrace {
				victim = e.Value.(*limitConn)
			}
		}
		if victim == nil {
			l.mu.Unlock()
			l.m.RejectedConns.Inc()
			closeSocket(c)
			return nil
		}
		l.shedLocked(victim)
	}
	lc := &limitConn{conn: c, phase: phaseNew, since: now}
	l.conns[c] = lc
	l.unadmitted++
	l.pushLocked(l.fresh, lc)
	l.gaugeLocked()
	l.mu.Unlock()
	if victim != nil {
		l.finishShed(victim)
	}
	return lc
}

// state follows net/http's view of a connection.
func (l *connLimiter) state(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lc := l.conns[c]
	if lc == nil {
		return
	}
	switch st {
	case http.StateActive:
		if lc.phase != phaseShed {
			l.unlistLocked(lc)
			lc.phase = phaseActive
		}
	case http.StateIdle:
		if lc.phase != phaseShed {
			lc.phase, lc.since = phaseIdle, time.Now()
			switch lc.slot {
			case slotOrdinary:
				l.pushLocked(l.idleOrd, lc)
			case slotReserve:
				l.pushLocked(l.idleRes, lc)
			default:
				l.pushLocked(l.fresh, lc)
			}
		}
	case http.StateHijacked:
		lc.hijacked = true
		if lc.phase != phaseShed {
			l.unlistLocked(lc)
			lc.phase = phaseHijacked
		}
	case http.StateClosed:
		l.removeLocked(lc)
	}
}

// releaseHijacked gives back the place of a hijacked socket whose stream
// ended (and closes the socket, if its stream did not). A socket still
// served by net/http is left alone.
func (l *connLimiter) releaseHijacked(lc *limitConn) {
	l.mu.Lock()
	hijacked := lc.hijacked
	if hijacked {
		l.removeLocked(lc)
	}
	l.mu.Unlock()
	if hijacked {
		closeSocket(lc.conn)
	}
}

// removeLocked forgets a closed socket.
func (l *connLimiter) removeLocked(lc *limitConn) {
	if l.conns[lc.conn] != lc {
		return
	}
	delete(l.conns, lc.conn)
	l.unlistLocked(lc)
	l.freeLocked(lc)
	l.gaugeLocked()
}

// freeLocked gives back lc's place.
func (l *connLimiter) freeLocked(lc *limitConn) {
	switch {
	case lc.phase == phaseShed:
		// Its place was given back when it was shed.
	case lc.slot == slotOrdinary:
		l.ordinary--
	case lc.slot == slotReserve:
		l.reserved--
	default:
		l.unadmitted--
	}
	lc.slot = slotNone
}

func (l *connLimiter) gaugeLocked() { l.m.ConnLimitUsed.Set(float64(len(l.conns))) }

func (l *connLimiter) pushLocked(to *list.List, lc *limitConn) {
	l.unlistLocked(lc)
	lc.elem, lc.in = to.PushBack(lc), to
}

func (l *connLimiter) unlistLocked(lc *limitConn) {
	if lc.in != nil {
		lc.in.Remove(lc.elem)
		lc.elem, lc.in = nil, nil
	}
}

// oldestIdleLocked is the socket idle on keep-alive the longest.
func (l *connLimiter) oldestIdleLocked() *limitConn {
	var best *limitConn
	for _, ls := range []*list.List{l.idleOrd, l.idleRes, l.fresh} {
		if e := ls.Front(); e != nil {
			lc := e.Value.(*limitConn)
			if lc.phase != phaseIdle {
				continue // fresh: not yet a request; see accept
			}
			if best == nil || lc.since.Before(best.since) {
				best = lc
			}
		}
	}
	return best
}

// shedLocked takes lc's place away (it is free at once) and marks it as
// closing; finishShed closes it, outside the lock.
func (l *connLimiter) shedLocked(lc *limitConn) {
	reason := ShedIdle
	switch {
	case lc.phase == phaseHijacked:
		reason = ShedWSSilent
	case lc.phase == phaseNew:
		reason = ShedNoRequest
	}
	l.unlistLocked(lc)
	l.freeLocked(lc)
	lc.phase = phaseShed
	l.m.ShedConns.WithLabelValues(reason).Inc()
}

// finishShed closes a shed socket: a /ws is asked to close with 1013 by
// its own stream, any other socket is closed at once.
func (l *connLimiter) finishShed(lc *limitConn) {
	if lc.shed != nil {
		lc.shed()
		return
	}
	closeSocket(lc.conn)
}

// takeLocked gives lc a place of kind k (giving back the one it had).
func (l *connLimiter) takeLocked(lc *limitConn, k slotKind) {
	l.freeLocked(lc)
	lc.slot = k
	if k == slotOrdinary {
		l.ordinary++
	} else {
		l.reserved++
	}
}

// shedForOrdinaryLocked sheds one socket holding an ordinary place: the
// oldest idle one, else the oldest silent /ws.
func (l *connLimiter) shedForOrdinaryLocked() *limitConn {
	for _, ls := range []*list.List{l.idleOrd, l.silent} {
		if e := ls.Front(); e != nil {
			lc := e.Value.(*limitConn)
			l.shedLocked(lc)
			return lc
		}
	}
	return nil
}

// admit decides whether the request c, on socket lc, is served: it holds
// or gets a place (shedding another socket if need be). classify is only
// called when the socket's place does not suffice.
func (l *connLimiter) admit(lc *limitConn, classify func() reqClass) bool {
	l.mu.Lock()
	if lc.phase != phaseShed && lc.slot == slotOrdinary {
		l.mu.Unlock()
		return true
	}
	l.mu.Unlock()
	class := classify()
	var victims []*limitConn
	l.mu.Lock()
	ok := l.admitLocked(lc, class, &victims)
	l.mu.Unlock()
	for _, v := range victims {
		l.finishShed(v)
	}
	return ok
}

func (l *connLimiter) admitLocked(lc *limitConn, class reqClass, victims *[]*limitConn) bool {
	if lc.phase == phaseShed {
		return false
	}
	if lc.slot == slotOrdinary || lc.slot == slotReserve && class != classOrdinary {
		return true
	}
	if class == classOps && lc.slot == slotNone && l.reserved < l.reserve {
		// Probes and scrapes never take an ordinary place while the
		// reserve has room: they do not compete with clients.
		l.takeLocked(lc, slotReserve)
		return true
	}
	if l.ordinary < l.limit {
		l.takeLocked(lc, slotOrdinary)
		return true
	}
	if v := l.shedForOrdinaryLocked(); v != nil {
		*victims = append(*victims, v)
		l.takeLocked(lc, slotOrdinary)
		return true
	}
	if class == classOrdinary || lc.slot == slotReserve {
		return false
	}
	room := l.reserve
	if class == classCredentialed {
		room -= l.opsKeep
	}
	for l.reserved >= room {
		e := l.idleRes.Front()
		if e == nil {
			return false
		}
		v := e.Value.(*limitConn)
		l.shedLocked(v)
		*victims = append(*victims, v)
	}
	l.takeLocked(lc, slotReserve)
	return true
}

// silentWS marks lc, a /ws socket, as having no subscription: it may be
// shed (shed asks its stream to close with 1013; it must not block).
// Only a socket holding an ordinary place is a candidate.
func (l *connLimiter) silentWS(lc *limitConn, shed func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.phase != phaseHijacked {
		return
	}
	lc.shed = shed
	if lc.slot == slotOrdinary {
		l.pushLocked(l.silent, lc)
	}
}

// spokeWS marks lc, a /ws socket, as subscribed: it is no longer shed.
func (l *connLimiter) spokeWS(lc *limitConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.in == l.silent {
		l.unlistLocked(lc)
	}
}

// classify tells the claim of request c on the reserve: the operational
// routes, valid credentials (see the comment at the top of this file), or
// none.
func (s *Server) classify(c echo.Context) reqClass {
	if opsRoutes[c.Path()] {
		return classOps
	}
	hdr := c.Request().Header.Get(echo.HeaderAuthorization)
	if user, pass, ok := auth.ParseBasic(hdr); ok {
		if s.sec.boxes != nil && s.sec.boxes.Verified(user, pass) {
			return classCredentialed
		}
		return classOrdinary
	}
	if s.sec.jwt != nil {
		if tok := bearer(c, acceptsQueryToken(c)); tok != "" {
			if _, err := s.sec.jwt.Parse(tok); err == nil {
				return classCredentialed
			}
		}
	}
	return classOrdinary
}

// connLimit admits each request under the connection limit (see the top
// of this file); a request that gets no place is answered 503 {"errors":
// ["too many connections"]} with Retry-After and Connection: close, and
// counted in RejectedConns. The socket of a request that leaves net/http
// (hijack) stays counted until its stream ends (connSlot).
func (s *Server) connLimit(next echo.HandlerFunc) echo.HandlerFunc {
	l := s.sec.limit
	if l == nil {
		return next
	}
	return func(c echo.Context) error {
		lc := limitConnOf(c)
		if lc == nil {
			return next(c) // a server not given to TrackConnections
		}
		if !l.admit(lc, func() reqClass { return s.classify(c) }) {
			s.m.RejectedConns.Inc()
			h := c.Response().Header()
			h.Set("Retry-After", "1")
			h.Set(echo.HeaderConnection, "close")
			return errorsJSON(c, http.StatusServiceUnavailable, "too many connections")
		}
		slot := &connSlot{release: func() { l.releaseHijacked(lc) }}
		c.Set(keyConnSlot, slot)
		defer slot.done()
		return next(c)
	}
}

// countUnanswered makes hs count its connections that close before their
// first request: the read-header timeout (POPBOX_READ_HEADER_TIMEOUT)
// expiring, a failed TLS handshake, a client that connects and leaves.
// net/http does not say in which state a connection closed, so the
// connections between accept and first request are remembered (and only
// those: a connection leaves the set at its first request).
func (s *Server) countUnanswered(hs *http.Server) {
	var fresh sync.Map // net.Conn -> struct{}: accepted, no request yet
	prev := hs.ConnState
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			fresh.Store(c, struct{}{})
		case http.StateActive, http.StateHijacked:
			fresh.Delete(c)
		case http.StateClosed:
			if _, ok := fresh.LoadAndDelete(c); ok {
				s.m.ClosedBeforeRequest.Inc()
			}
		}
		if prev != nil {
			prev(c, st)
		}
	}
}
