// Package hangup tells when the peer of a TCP connection goes away (it
// closes or resets its end) without a goroutine per connection.
//
// A hijacked HTTP stream (SSE, HTTP streaming) never reads: the client
// sends nothing after its request. The only portable way to see such a
// client go at once, not at the next heartbeat's failed write, is a
// goroutine blocked in Read on each connection, and an idle node holds
// little else: that goroutine is about 5 KiB of stack per stream
// (docs/ARCHITECTURE.md, "Idle connections"). On Linux one epoll instance
// per process watches every such socket for EPOLLRDHUP instead, and one
// goroutine waits on it while anything is watched.
//
// Why our own code: Go's netpoller, which already has these sockets in an
// epoll set, does not expose a hang-up without a read; the event-loop
// libraries that do (gnet, cloudwego/netpoll) replace net/http's serving
// of the connection altogether, which the gateway needs until the stream's
// headers are written. What is needed here is a small part of epoll(7):
// add a socket with EPOLLRDHUP|EPOLLONESHOT, wait, remove it.
package hangup

import (
	"errors"
	"net"
	"syscall"
)

// ErrUnsupported: the connection cannot be watched here (not a socket, or
// not on Linux); the caller falls back to reading it on a goroutine.
var ErrUnsupported = errors.New("hangup: connection cannot be watched on this platform")

// Watch calls gone once, on the watcher's goroutine, when the peer of conn
// closes or resets its end of the connection, or the socket fails. gone
// must not block (it tells the stream, which ends elsewhere). Data the peer
// sends is neither read nor reported: it stays in the socket's receive
// buffer, whose fill stops the sender.
//
// stop ends the watch; call it before closing conn. After stop returns
// gone is not called, unless it had already started (it may run while
// stop runs, so it must be safe to call at any time). A *tls.Conn is
// watched through its underlying connection.
func Watch(conn net.Conn, gone func()) (stop func(), err error) {
	sc, ok := rawConn(conn)
	if !ok {
		return nil, ErrUnsupported
	}
	return watch(sc, gone)
}

// rawConn finds the socket under conn (through a *tls.Conn or any other
// wrapper that offers NetConn).
func rawConn(conn net.Conn) (syscall.RawConn, bool) {
	for range 8 {
		switch c := conn.(type) {
		case syscall.Conn:
			rc, err := c.SyscallConn()
			if err != nil {
				return nil, false
			}
			return rc, true
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
			continue
		}
		return nil, false
	}
	return nil, false
}
