package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// The write path of streaming connections (SSE, HTTP streaming and
// WebSocket) after their handshake. An idle connection is what the node
// holds most of (docs/ARCHITECTURE.md, "Idle connections"), so once the
// headers are out the stream leaves net/http: the connection is hijacked,
// the handler returns (net/http's per-connection bufio reader and writer,
// its response buffer and the handler's deep stack go with it) and the
// stream holds no goroutine while idle (startStream; a WebSocket keeps its
// reader). Frames are built in a pooled buffer and written to the
// net.Conn (a *tls.Conn on the TLS port) in one call, under a write
// deadline; between writes a connection holds no buffer.

// writeBufs are the buffers frames are built in, only while writing.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledBuf: larger buffers (a huge message) are left to the GC rather
// than kept in the pool.
const maxPooledBuf = 64 << 10

func getWriteBuf() *[]byte { return writeBufs.Get().(*[]byte) }

func putWriteBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	writeBufs.Put(b)
}

// writeConn writes b to conn before deadline and clears the deadline.
func writeConn(conn net.Conn, b []byte, deadline time.Time) error {
	if err := conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	return conn.SetWriteDeadline(time.Time{})
}

// chunkRoom is the room kept in front of a chunk's data for its size line
// (up to 16 hex digits and CRLF).
const chunkRoom = 18

// writeChunk builds one frame with fn and writes it as one HTTP/1.1 chunk,
// byte for byte what net/http writes for a Write followed by a Flush
// ("<hex size>\r\n<data>\r\n"); an empty frame writes nothing.
func writeChunk(conn net.Conn, deadline time.Time, fn func(b []byte) ([]byte, error)) error {
	bp := getWriteBuf()
	defer putWriteBuf(bp)
	b, err := fn(append((*bp)[:0], make([]byte, chunkRoom)...))
	if err != nil {
		return err
	}
	*bp = b
	n := len(b) - chunkRoom
	if n == 0 {
		return nil
	}
	var size [chunkRoom]byte
	line := append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
	start := chunkRoom - len(line)
	copy(b[start:], line)
	b = append(b, '\r', '\n')
	*bp = b
	return writeConn(conn, b[start:], deadline)
}

// lastChunk ends a chunked body.
const lastChunk = "0\r\n\r\n"

// drainConn reads (and drops) what the client sends on a hijacked HTTP
// stream until the connection fails or closes: a client that goes away is
// seen at once, not at the next heartbeat. It replaces net/http's
// background read of the connection where internal/hangup cannot watch
// it (not Linux, not a socket).
func drainConn(conn net.Conn) {
	var b [64]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			return
		}
	}
}

// wsWire is the byte path under a coder/websocket connection. The library
// keeps a bufio.Writer and a bufio.Reader for the life of a connection
// (4 KiB each from net/http's hijack); acceptWS gives it small ones (one
// control frame fits) over a wsWire, and the transport builds each of its
// own frames in a pooled buffer (gather, then flush: one write, under a
// deadline). The library's own frames (pongs, close) that come while no
// frame is gathered go straight to the connection.
type wsWire struct {
	conn net.Conn
	mu   sync.Mutex
	buf  *[]byte // non-nil while a frame is gathered
}

// Write is what the library's bufio.Writer writes through.
func (w *wsWire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf != nil {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	return w.conn.Write(p)
}

// gather starts collecting the bytes the library writes.
func (w *wsWire) gather() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf == nil {
		w.buf = getWriteBuf()
	}
}

// flush writes what was gathered in one write before deadline and gives
// the buffer back.
func (w *wsWire) flush(deadline time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	bp := w.buf
	if bp == nil {
		return nil
	}
	w.buf = nil
	defer putWriteBuf(bp)
	if len(*bp) == 0 {
		return nil
	}
	return writeConn(w.conn, *bp, deadline)
}

// writeFrame writes one whole control frame, header byte b0, the
// payload's length and payload p (its first wsMaxControl bytes), in one
// write before deadline. Every write on the wire is a whole frame (the
// library's buffer holds a control frame whole, the transport's frames
// are gathered), so frames never interleave.
func (w *wsWire) writeFrame(deadline time.Time, b0 byte, p []byte) error {
	var f [2 + wsMaxControl]byte
	n := 2 + copy(f[2:], p)
	f[0], f[1] = b0, byte(n-2)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf != nil {
		*w.buf = append(*w.buf, f[:n]...)
		return nil
	}
	return writeConn(w.conn, f[:n], deadline)
}

// Buffers coder/websocket keeps per connection when acceptWS hijacks it:
// room for a control frame (2 + 125 bytes) so that a pong or a close frame
// is one write, and for a typical client frame (an ack) to be read in one.
const (
	wsWriteBuf = 128
	wsReadBuf  = 256
)

// wsHijacker is the http.ResponseWriter acceptWS hands coder/websocket: its
// Hijack gives the library small buffers over a wsWire instead of
// net/http's 4 KiB ones. Bytes the client sent right behind its handshake
// are kept.
type wsHijacker struct {
	http.ResponseWriter
	wire *wsWire
}

// Hijack implements http.Hijacker.
func (h *wsHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The library takes over what its reader has buffered (and resets it
	// onto conn): the early bytes must be in the buffer, not behind it.
	n := brw.Reader.Buffered()
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(wsReadBuf, n))
	if n > 0 {
		if _, err := br.Peek(n); err != nil {
			_ = conn.Close()
			return nil, nil, err
		}
	}
	h.wire = &wsWire{conn: conn}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.wire, wsWriteBuf)), nil
}

// Unwrap gives http.ResponseController the underlying writer.
func (h *wsHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// streamSet counts the streams that run detached from their handler, so
// that Shutdown can wait for them to end cleanly (net/http's Shutdown does
// not wait for hijacked connections).
type streamSet struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (ss *streamSet) add() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.n == 0 {
		ss.idle = make(chan struct{})
	}
	ss.n++
}

func (ss *streamSet) done() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.n--; ss.n == 0 {
		close(ss.idle)
	}
}

// wait returns when no stream runs or ctx ends.
func (ss *streamSet) wait(ctx context.Context) {
	ss.mu.Lock()
	if ss.n == 0 {
		ss.mu.Unlock()
		return
	}
	idle := ss.idle
	ss.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// keyConnSlot holds the request's connSlot (connLimit).
const keyConnSlot = "popbox.connslot"

// connSlot is the place of a request's socket under MaxConnections
// (connlimit.go), as far as the request is concerned: a hijacked socket
// is given back when its stream ends, at the end of the handler or, for a
// stream that outlives its handler, when that stream ends.
type connSlot struct {
	release func()
	taken   atomic.Bool
}

// done releases the slot at the end of the handler (a no-op unless the
// socket was hijacked), unless a detached stream took it over.
func (cs *connSlot) done() {
	if !cs.taken.Load() {
		cs.release()
	}
}

// takeSlot takes over the request's connection slot; the returned func
// releases it.
func takeSlot(c echo.Context) func() {
	cs, _ := c.Get(keyConnSlot).(*connSlot)
	if cs == nil || !cs.taken.CompareAndSwap(false, true) {
		return func() {}
	}
	return cs.release
}

// streamContext is the context of a stream detached from its handler: it
// never ends (the stream ends on its own events, startStream) and holds
// none of the request's context. The streams read no value of it, and
// keeping it (context.WithoutCancel) would keep net/http's per-request
// and per-connection contexts, with their channels and child maps, alive
// for the life of every stream.
func streamContext() context.Context { return context.Background() }

// detachedContext copies what a detached stream's later checks read of
// its request (the multiplexed WebSocket's subscribe and auth frames:
// headers and query for credentials, the client address, the port, the
// organisation, the route), since echo reuses a handler's context once
// the handler returns. The copy's request has the stream's context
// (streamContext: the checks read no value of the request's, which would
// otherwise stay alive with the socket), and it has no response to write
// (the connection is hijacked).
func detachedContext(c echo.Context) echo.Context {
	req := c.Request()
	dc := c.Echo().NewContext(req.WithContext(streamContext()), noResponse{})
	dc.SetPath(c.Path())
	dc.SetParamNames(c.ParamNames()...)
	dc.SetParamValues(c.ParamValues()...)
	for _, k := range detachedKeys {
		if v := c.Get(k); v != nil {
			dc.Set(k, v)
		}
	}
	return dc
}

// detachedKeys are the context values detachedContext carries over.
var detachedKeys = []string{keySecure, keyOrg}

// noResponse is the response of a detached context: nothing can be
// written to a hijacked connection through net/http.
type noResponse struct{}

func (noResponse) Header() http.Header { return http.Header{} }

func (noResponse) Write([]byte) (int, error) { return 0, http.ErrHijacked }

func (noResponse) WriteHeader(int) {}

// detach runs serve on a goroutine of its own, with a context that never
// ends (streamContext), and keeps the request's connection slot until
// serve returns. The handler returns right after.
func (s *Server) detach(c echo.Context, serve func(ctx context.Context)) {
	release := takeSlot(c)
	ctx := streamContext()
	s.streams.add()
	go func() {
		defer s.streams.done()
		defer release()
		serve(ctx)
	}()
}
