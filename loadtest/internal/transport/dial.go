// Package transport holds the load tool's clients of the gateway: the
// subscriber side of every consumer transport (SSE, per-queue WebSocket,
// multiplexed WebSocket, HTTP streaming, long-poll pop) and the provisioning
// client (POST /trans).
//
// SSE, streaming and long-poll subscribers speak HTTP/1.1 directly over
// their own TCP connection (one goroutine and two small buffers per
// subscriber, no transport pool), so one process can hold tens of thousands
// of them. WebSockets use github.com/gobwas/ws over the same Dialer (see
// wsConn for why not coder/websocket).
package transport

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/popbox/popbox/loadtest/internal/safety"
)

// Dialer makes TCP connections to loopback targets. With Sources set, the
// local end of each connection is bound to the next source address in turn
// (to get past the ~28K ephemeral ports available towards one destination
// address). Every connection's remote end is checked to be loopback.
type Dialer struct {
	dialers []*net.Dialer
	next    atomic.Uint64
}

// NewDialer returns a Dialer binding to sources round-robin (none: let the
// kernel choose). timeout bounds each connect.
func NewDialer(sources []netip.Addr, timeout time.Duration) *Dialer {
	d := &Dialer{}
	mk := func(local net.Addr) *net.Dialer {
		// KeepAlive -1: no TCP keep-alive probes from the client side, so
		// the idle figures measure the gateway's own heartbeats only.
		return &net.Dialer{Timeout: timeout, KeepAlive: -1, LocalAddr: local}
	}
	for _, s := range sources {
		d.dialers = append(d.dialers, mk(&net.TCPAddr{IP: s.AsSlice()}))
	}
	if len(d.dialers) == 0 {
		d.dialers = append(d.dialers, mk(nil))
	}
	return d
}

// DialContext connects to addr (host:port) over TCP.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := d.dialers[(d.next.Add(1)-1)%uint64(len(d.dialers))]
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if err := safety.CheckConn(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// StatusError is an unexpected HTTP status from the gateway.
type StatusError struct {
	Code int
	Body string // the start of the response body
}

// Error says which status (and the start of the body).
func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("http status %d", e.Code)
	}
	return fmt.Sprintf("http status %d: %s", e.Code, e.Body)
}

// statusError is the *StatusError of an answer with status code and body
// (its start, trimmed).
func statusError(code int, body []byte) *StatusError {
	return &StatusError{Code: code, Body: strings.TrimSpace(truncate(string(body), 200))}
}
