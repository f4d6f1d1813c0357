package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Kind names a consumer transport.
type Kind string

// The consumer transports of the gateway.
const (
	SSE      Kind = "sse"      // GET /queue/{id}/events
	WS       Kind = "ws"       // GET /queue/{id}/ws
	WSMux    Kind = "wsmux"    // GET /ws + {"op":"subscribe"} frames
	Stream   Kind = "stream"   // POST /queue/{id}/subscribe
	LongPoll Kind = "longpoll" // POST /queue/{id}/pop?timeout=T in a loop
)

// Kinds lists every transport in a fixed order.
var Kinds = []Kind{SSE, WS, WSMux, Stream, LongPoll}

// ParseKind validates a transport name.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown transport %q (want one of sse, ws, wsmux, stream, longpoll)", s)
}

// Handler receives what one subscriber sees. Every field is optional. The
// calls come from the subscriber's goroutine.
type Handler struct {
	// OnOpen is called once the subscription is established (response
	// headers or WebSocket handshake received; for long-poll, the first
	// pop request written).
	OnOpen func()
	// OnMessage is called for every payload; q indexes the queues given to
	// Subscribe.
	OnMessage func(q int, payload string)
	// OnProblem reports a non-fatal problem (an error frame, an
	// undecodable frame) as a short reason.
	OnProblem func(reason string)
}

func (h *Handler) open() {
	if h.OnOpen != nil {
		h.OnOpen()
	}
}

func (h *Handler) msg(q int, p string) {
	if h.OnMessage != nil {
		h.OnMessage(q, p)
	}
}

func (h *Handler) problem(r string) {
	if h.OnProblem != nil {
		h.OnProblem(r)
	}
}

// Client opens subscriptions against one gateway address.
type Client struct {
	// Base is the gateway URL: http://host:port with an optional path
	// prefix such as /org/acme.
	Base *url.URL
	// Dialer makes every TCP connection.
	Dialer *Dialer
	// PollTimeout is the long-poll timeout in seconds (1..300).
	PollTimeout int
	// PollMax is the max parameter of long-poll pops.
	PollMax int
	// BufSize is the size of each read buffer (default 2048).
	BufSize int
	// HandshakeTimeout bounds connect + response headers (default 30 s).
	HandshakeTimeout time.Duration
}

func (c *Client) bufSize() int {
	if c.BufSize > 0 {
		return c.BufSize
	}
	return 2048
}

func (c *Client) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return 30 * time.Second
}

func (c *Client) path(queue, suffix string) string {
	return c.Base.Path + "/queue/" + url.PathEscape(queue) + suffix
}

// Subscribe runs one subscriber of the given kind until ctx ends (then it
// returns nil) or the subscription fails or drops (then it returns the
// error; whether OnOpen was called tells a failed connect from a drop).
// queues must hold exactly one queue except for WSMux.
func (c *Client) Subscribe(ctx context.Context, kind Kind, queues []string, h Handler) error {
	if len(queues) == 0 || (len(queues) > 1 && kind != WSMux) {
		return fmt.Errorf("transport %s: %d queues given", kind, len(queues))
	}
	if c.centrifugo() && kind != SSE && kind != WS {
		return fmt.Errorf("transport %s: a Centrifugo target offers sse and ws only", kind)
	}
	var err error
	switch kind {
	case SSE:
		err = c.sse(ctx, queues[0], &h)
	case Stream:
		err = c.stream(ctx, queues[0], &h)
	case LongPoll:
		err = c.longPoll(ctx, queues[0], &h)
	case WS:
		err = c.ws(ctx, queues[0], &h)
	case WSMux:
		err = c.wsMux(ctx, queues, &h)
	default:
		err = fmt.Errorf("unknown transport %q", kind)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// rawConn is an HTTP/1.1 connection driven by hand.
type rawConn struct {
	c    *Client
	conn net.Conn
	br   *bufio.Reader
	stop func() bool
	wbuf []byte
}

func (c *Client) dialRaw(ctx context.Context) (*rawConn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.handshakeTimeout())
	defer cancel()
	conn, err := c.Dialer.DialContext(dctx, "tcp", c.Base.Host)
	if err != nil {
		return nil, err
	}
	// Closing the connection is how a blocked read learns that ctx ended.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return &rawConn{c: c, conn: conn, br: bufio.NewReaderSize(conn, c.bufSize()), stop: stop}, nil
}

func (r *rawConn) close() {
	r.stop()
	r.conn.Close()
}

// do writes one request and reads the response headers (within
// readTimeout).
func (r *rawConn) do(method, path, accept string, readTimeout time.Duration) (*http.Response, error) {
	if err := r.write(method, path, accept, readTimeout); err != nil {
		return nil, err
	}
	return r.read(method)
}

// write sends one request and sets the deadline for its response.
func (r *rawConn) write(method, path, accept string, readTimeout time.Duration) error {
	r.wbuf = r.wbuf[:0]
	r.wbuf = append(r.wbuf, method...)
	r.wbuf = append(r.wbuf, ' ')
	r.wbuf = append(r.wbuf, path...)
	r.wbuf = append(r.wbuf, " HTTP/1.1\r\nHost: "...)
	r.wbuf = append(r.wbuf, r.c.Base.Host...)
	r.wbuf = append(r.wbuf, "\r\nUser-Agent: popbox-loadtest\r\nAccept: "...)
	r.wbuf = append(r.wbuf, accept...)
	if method == http.MethodPost {
		r.wbuf = append(r.wbuf, "\r\nContent-Length: 0"...)
	}
	r.wbuf = append(r.wbuf, "\r\n\r\n"...)
	if err := r.conn.SetDeadline(time.Now().Add(readTimeout)); err != nil {
		return err
	}
	_, err := r.conn.Write(r.wbuf)
	return err
}

// read reads the response headers of the request written last and clears
// the deadline; a status other than 200 is a *StatusError.
func (r *rawConn) read(method string) (*http.Response, error) {
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	if err := r.conn.SetDeadline(time.Time{}); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		resp.Body.Close()
		return nil, statusError(resp.StatusCode, b)
	}
	return resp, nil
}

// answersAtOnce reports whether a response starts arriving within d (for
// long-poll: a pop on an empty queue answers only at its timeout, so an
// immediate answer is a message or a refusal). It restores deadline.
func (r *rawConn) answersAtOnce(d time.Duration, deadline time.Time) (bool, error) {
	if err := r.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	_, err := r.br.Peek(1)
	if derr := r.conn.SetReadDeadline(deadline); derr != nil {
		return false, derr
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, nil
	}
	return err == nil, err
}

// readLine reads one line (without the line ending) from br, growing into
// scratch when the line is longer than the buffer.
func readLine(br *bufio.Reader, scratch *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		*scratch = append((*scratch)[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = br.ReadSlice('\n')
			*scratch = append(*scratch, line...)
		}
		line = *scratch
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

func (c *Client) sse(ctx context.Context, queue string, h *Handler) error {
	rc, err := c.dialRaw(ctx)
	if err != nil {
		return err
	}
	defer rc.close()
	path, cf, opened := c.path(queue, "/events"), c.centrifugo(), false
	if cf {
		path = c.centrifugoPath(centrifugoUniSSE, queue)
	}
	resp, err := rc.do(http.MethodGet, path, "text/event-stream", c.handshakeTimeout())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !cf { // Centrifugo: open at its connect push
		h.open()
	}
	body := bufio.NewReaderSize(resp.Body, c.bufSize())
	var scratch, data []byte
	event := ""
	for {
		line, err := readLine(body, &scratch)
		if err != nil {
			return err
		}
		switch {
		case len(line) == 0: // dispatch
			if len(data) > 0 {
				if cf {
					if err := c.centrifugoFrame(data, queue, h, &opened); err != nil {
						return err
					}
				} else if event == "" || event == "message" {
					c.dispatch(data, []string{queue}, h)
				} else {
					h.problem("sse event " + truncate(event, 30))
				}
			}
			data, event = data[:0], ""
		case line[0] == ':': // comment / heartbeat
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(line[5:], []byte(" "))
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, v...)
		case bytes.HasPrefix(line, []byte("event:")):
			event = string(bytes.TrimSpace(line[6:]))
		}
	}
}

func (c *Client) stream(ctx context.Context, queue string, h *Handler) error {
	rc, err := c.dialRaw(ctx)
	if err != nil {
		return err
	}
	defer rc.close()
	resp, err := rc.do(http.MethodPost, c.path(queue, "/subscribe"), "application/json", c.handshakeTimeout())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h.open()
	body := bufio.NewReaderSize(resp.Body, c.bufSize())
	var scratch []byte
	for {
		line, err := readLine(body, &scratch)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // keep-alive newline
		}
		c.dispatch(line, []string{queue}, h)
	}
}

// longPollProbe is how long a long-poll subscriber waits for an immediate
// answer to its first pop before it counts as open.
const longPollProbe = 50 * time.Millisecond

func (c *Client) longPoll(ctx context.Context, queue string, h *Handler) error {
	timeout := c.PollTimeout
	if timeout <= 0 {
		timeout = 25
	}
	max := c.PollMax
	if max <= 0 {
		max = 1000
	}
	path := c.path(queue, "/pop") + "?timeout=" + strconv.Itoa(timeout) + "&max=" + strconv.Itoa(max)
	readTimeout := time.Duration(timeout)*time.Second + c.handshakeTimeout()
	var rc *rawConn
	defer func() {
		if rc != nil {
			rc.close()
		}
	}()
	opened := false
	var body bytes.Buffer
	for {
		fresh := false
		if rc == nil {
			var err error
			if rc, err = c.dialRaw(ctx); err != nil {
				return err
			}
			fresh = true
		}
		err := rc.write(http.MethodPost, path, "application/json", readTimeout)
		if err == nil && !opened {
			var now bool
			if now, err = rc.answersAtOnce(longPollProbe, time.Now().Add(readTimeout)); err == nil && !now {
				opened = true
				h.open()
			}
		}
		var resp *http.Response
		if err == nil {
			resp, err = rc.read(http.MethodPost)
		}
		if err != nil {
			rc.close()
			rc = nil
			var se *StatusError
			if opened && !fresh && !errors.As(err, &se) && ctx.Err() == nil {
				continue // a reused connection the server had closed: redial once
			}
			return err
		}
		if !opened {
			opened = true
			h.open()
		}
		body.Reset()
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		c.dispatch(body.Bytes(), []string{queue}, h)
		if resp.Close {
			rc.close()
			rc = nil
		}
	}
}

func (c *Client) wsURL(path string) string {
	return "ws://" + c.Base.Host + path
}

// wsConn is a client WebSocket over gobwas/ws. The load tool does not use
// coder/websocket here (the gateway does): its reader answers a ping within
// a fixed 5 s or closes the socket itself, and a load-tool worker starved
// of CPU on the gateway's own machine missed that deadline: in a 100K run
// 4,157 of 5,047 dropped subscribers were closed that way by this process,
// not by the gateway. gobwas/ws answers pings on the reading goroutine with
// no deadline of its own, so a starved worker answers late instead.
type wsConn struct {
	conn net.Conn
	src  io.Reader // the handshake's reader (it may hold the first frames), over conn
}

func (c *Client) dialWS(ctx context.Context, path string) (*wsConn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.handshakeTimeout())
	defer cancel()
	d := ws.Dialer{NetDial: c.Dialer.DialContext}
	conn, br, _, err := d.Dial(dctx, c.wsURL(path))
	if err != nil {
		var se ws.StatusError
		if errors.As(err, &se) {
			return nil, &StatusError{Code: int(se)}
		}
		return nil, err
	}
	wc := &wsConn{conn: conn, src: conn}
	if br != nil {
		wc.src = br
	}
	return wc, nil
}

func (c *Client) ws(ctx context.Context, queue string, h *Handler) error {
	path := c.path(queue, "/ws")
	if c.centrifugo() {
		path = c.centrifugoPath(centrifugoUniWS, queue)
	}
	wc, err := c.dialWS(ctx, path)
	if err != nil {
		return err
	}
	defer wc.conn.Close()
	if !c.centrifugo() { // Centrifugo: open at its connect push
		h.open()
	}
	return c.readWS(ctx, wc, []string{queue}, h)
}

func (c *Client) wsMux(ctx context.Context, queues []string, h *Handler) error {
	wc, err := c.dialWS(ctx, c.Base.Path+"/ws")
	if err != nil {
		return err
	}
	defer wc.conn.Close()
	var buf []byte
	_ = wc.conn.SetWriteDeadline(time.Now().Add(c.handshakeTimeout()))
	for _, q := range queues {
		buf = append(buf[:0], `{"op":"subscribe","queue":`...)
		buf = appendJSONString(buf, q)
		buf = append(buf, '}')
		if err := wsutil.WriteClientText(wc.conn, buf); err != nil {
			return err
		}
	}
	_ = wc.conn.SetWriteDeadline(time.Time{})
	h.open()
	return c.readWS(ctx, wc, queues, h)
}

// control answers a control frame of the server: a pong for a ping, the
// close frame's code for a close (then ClosedError), nothing for a pong.
// The answer goes out in one write, header and payload together: wsutil's
// ControlFrameHandler writes them in two, and a starved worker preempted
// between the two left the gateway waiting for the rest of a pong.
func (wc *wsConn) control(h ws.Header, r io.Reader) error {
	p := make([]byte, h.Length) // at most 125 bytes (RFC 6455 5.5)
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	switch h.OpCode {
	case ws.OpPing:
		return wc.writeFrame(ws.NewPongFrame(p))
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		echo := []byte(nil)
		if len(p) >= 2 {
			echo = p[:2]
		}
		_ = wc.writeFrame(ws.NewCloseFrame(echo))
		return wsutil.ClosedError{Code: code, Reason: reason}
	}
	return nil
}

// writeFrame masks f (a client's frames are masked) and writes it at once.
func (wc *wsConn) writeFrame(f ws.Frame) error {
	b, err := ws.CompileFrame(ws.MaskFrameInPlace(f))
	if err != nil {
		return err
	}
	_, err = wc.conn.Write(b)
	return err
}

// readWS reads data frames until the connection or ctx ends, answering
// pings (and a close) as they come.
func (c *Client) readWS(ctx context.Context, wc *wsConn, queues []string, h *Handler) error {
	stop := context.AfterFunc(ctx, func() { wc.conn.Close() })
	defer stop()
	control := wsutil.FrameHandlerFunc(wc.control)
	rd := wsutil.Reader{Source: wc.src, State: ws.StateClientSide, OnIntermediate: control, MaxFrameSize: 4 << 20}
	var buf bytes.Buffer
	cf, opened := c.centrifugo(), false
	fail := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			return fail(err)
		}
		if hdr.OpCode.IsControl() {
			if err := control(hdr, &rd); err != nil {
				return fail(err)
			}
			continue
		}
		if hdr.OpCode&(ws.OpText|ws.OpBinary) == 0 {
			if err := rd.Discard(); err != nil {
				return fail(err)
			}
			continue
		}
		buf.Reset()
		if _, err := buf.ReadFrom(&rd); err != nil {
			return fail(err)
		}
		if !cf {
			c.dispatch(buf.Bytes(), queues, h)
		} else if err := c.centrifugoFrame(buf.Bytes(), queues[0], h, &opened); err != nil {
			return err
		}
	}
}

// dispatch decodes one frame and hands its payloads to h.
func (c *Client) dispatch(b []byte, queues []string, h *Handler) {
	f, err := DecodeFrame(b)
	if err != nil {
		h.problem("undecodable frame")
		return
	}
	switch f.Op {
	case "", "message":
	case "error":
		h.problem(f.ProblemText())
		return
	default:
		return // other control frames (e.g. subscribed) carry no payload
	}
	q := 0
	if len(queues) > 1 {
		q = -1
		for i, name := range queues {
			if name == f.Queue {
				q = i
				break
			}
		}
		if q < 0 {
			h.problem("message for a queue not subscribed")
			return
		}
	}
	for _, p := range f.Data {
		h.msg(q, p)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
