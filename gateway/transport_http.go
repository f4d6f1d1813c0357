package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/hangup"
)

// httpStream is the framing shared by HTTP streaming and SSE: a flushed,
// deadline-guarded write of one chunk per message. Once hijacked (detach)
// it writes the chunks to the connection itself, byte for byte what
// net/http wrote, from a pooled buffer; it keeps no buffer of its own
// between messages (idle connections cost as little as possible).
type httpStream struct {
	label string
	rw    http.ResponseWriter
	rc    *http.ResponseController
	conn  net.Conn // after hijack
	// broken: a write to conn failed (timed out); nothing more is
	// written to it.
	broken bool
	frame  func(b []byte, m delivery.Message) ([]byte, error)
	beat   func(b []byte) ([]byte, error)
	ended  endReason
}

func newHTTPStream(label string, rw http.ResponseWriter) *httpStream {
	return &httpStream{label: label, rw: rw, rc: http.NewResponseController(rw)}
}

func (h *httpStream) name() string { return h.label }

// write builds one frame with fn and writes and flushes it before
// deadline.
func (h *httpStream) write(deadline time.Time, fn func(b []byte) ([]byte, error)) error {
	if h.conn != nil {
		if h.broken {
			return net.ErrClosed
		}
		err := writeChunk(h.conn, deadline, fn)
		h.broken = err != nil
		return err
	}
	bp := getWriteBuf()
	defer putWriteBuf(bp)
	b, err := fn((*bp)[:0])
	*bp = b
	if err != nil {
		return err
	}
	_ = h.rc.SetWriteDeadline(deadline)
	if _, err := h.rw.Write(b); err != nil {
		return err
	}
	if err := h.rc.Flush(); err != nil {
		return err
	}
	return h.rc.SetWriteDeadline(time.Time{})
}

func (h *httpStream) send(_ context.Context, _ *streamSub, m delivery.Message, deadline time.Time) error {
	return h.write(deadline, func(b []byte) ([]byte, error) {
		out, err := h.frame(b, m)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errEncode, err)
		}
		return out, nil
	})
}

func (h *httpStream) heartbeat(_ context.Context, deadline time.Time) error {
	if h.beat == nil {
		return nil
	}
	return h.write(deadline, h.beat)
}

// subEnded: one queue per connection, so the stream ends with it.
func (h *httpStream) subEnded(context.Context, *streamSub, endReason) bool { return false }

func (h *httpStream) end(r endReason) { h.ended = r }

// cause: only the stream's own goroutine ends an HTTP stream, so a
// connection that went away was the client's doing.
func (h *httpStream) cause() endReason { return endClientGone }

// serveHTTPStream runs the stream of sub and, when it ends for reason,
// writes last (if not empty) as the last frame. When the connection can be
// hijacked (HTTP/1.x) the handler returns at once and the stream runs on
// no goroutine of its own while idle (startStream): internal/hangup
// watches for the client going away, and the stream's end writes the end
// of the chunked body, closes the connection and frees its slot.
// Otherwise (HTTP/2) it runs while the handler waits, on the
// ResponseWriter.
func (s *Server) serveHTTPStream(c echo.Context, hs *httpStream, sub *streamSub, last func(reason endReason) string) {
	lastFrame := func(reason endReason) {
		if msg := last(reason); msg != "" {
			_ = hs.write(time.Now().Add(time.Second), func(b []byte) ([]byte, error) { return append(b, msg...), nil })
		}
	}
	conn, _, err := hs.rc.Hijack()
	if err != nil {
		lastFrame(s.runStream(c.Request().Context(), hs, sub))
		return
	}
	hs.conn = conn
	release := takeSlot(c)
	// The client sends nothing after its request; its going away is seen
	// by the process's epoll watcher (no goroutine of its own), or where
	// that cannot watch the socket by a reader, and posted to the stream
	// (evGone). Its context never ends (streamContext).
	var (
		reader    sync.WaitGroup
		stopWatch func()
	)
	st := s.newStream(streamContext(), hs, nil, func(reason endReason) {
		lastFrame(reason)
		stopWatch()
		if reason != endClientGone && !hs.broken {
			_ = writeConn(conn, []byte(lastChunk), time.Now().Add(time.Second))
		}
		_ = conn.Close()
		reader.Wait()
		release()
	})
	gone := func() { st.post(evGone, false) }
	stopWatch, err = hangup.Watch(conn, gone)
	if err != nil {
		stopWatch = func() {}
		reader.Go(func() {
			defer gone()
			drainConn(conn)
		})
	}
	st.start(sub)
}

// closeAfterStream tells an HTTP/1.x client that the connection ends with
// the stream (Connection: close). The stream leaves net/http (hijack,
// serveHTTPStream) and its connection is closed after the last chunk, so
// a client must not put it back into its keep-alive pool: one that did
// would send its next request into a closing socket (a POST then fails
// with EOF, since clients do not retry non-idempotent requests).
func closeAfterStream(c echo.Context) {
	if c.Request().ProtoMajor == 1 {
		c.Response().Header().Set(echo.HeaderConnection, "close")
	}
}

// streamMessage is one message of HTTP streaming (classic subscribe).
type streamMessage struct {
	OK           bool      `json:"ok"`
	Data         [1]string `json:"data"`
	Transactions [1]string `json:"transactions"`
}

// subscribe is POST /queue/{id}/subscribe (and subscriberel): HTTP
// streaming of newline-delimited JSON objects, one message per object.
func (s *Server) subscribe(c echo.Context) error { return s.subscribeStream(c, false) }

// subscribeReliable is POST /queue/{id}/subscriberel.
func (s *Server) subscribeReliable(c echo.Context) error { return s.subscribeStream(c, true) }

func (s *Server) subscribeStream(c echo.Context, reliable bool) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	rw := c.Response()
	rw.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Accel-Buffering", "no")
	closeAfterStream(c)
	rw.WriteHeader(http.StatusOK)
	hs := newHTTPStream(delivery.TransportStream, rw)
	if err := hs.write(time.Now().Add(writeTimeout), func(b []byte) ([]byte, error) { return b, nil }); err != nil {
		return nil
	}
	hs.frame = func(b []byte, m delivery.Message) ([]byte, error) {
		out, err := json.Marshal(streamMessage{OK: true, Data: [1]string{m.Payload}, Transactions: [1]string{m.TID}})
		if err != nil {
			return nil, err
		}
		return append(append(b, out...), '\n'), nil
	}
	sub := newSub(q, modeFrom(reliable, c.QueryParam("timeoutACK")), delivery.TransportStream)
	sub.expires = s.tokenExpiry(c, q)
	s.serveHTTPStream(c, hs, sub, func(reason endReason) string {
		if reason == endUnavailable || reason == endTokenExpired {
			// The classic error shape as the last object, so that a client
			// tells an outage or an expired token from the end of the stream.
			return `{"ok":false,"errors":["` + reason.String() + `"]}` + "\n"
		}
		return ""
	})
	return nil
}

// eventData is the JSON of an SSE event's data and of a per-queue
// WebSocket frame (API.md 2.1, 2.2).
type eventData struct {
	Data        string `json:"data"`
	Transaction string `json:"transaction"`
	Queue       string `json:"queue"`
	Priority    string `json:"priority"`
}

func newEventData(queueID string, m delivery.Message) eventData {
	return eventData{Data: m.Payload, Transaction: m.TID, Queue: queueID, Priority: m.Priority.String()}
}

// events is GET /queue/{id}/events: Server-Sent Events for EventSource.
func (s *Server) events(c echo.Context) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	reliable := c.QueryParam("reliable") == "1" || c.QueryParam("reliable") == "true"
	rw := c.Response()
	rw.Header().Set(echo.HeaderContentType, "text/event-stream")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Accel-Buffering", "no")
	closeAfterStream(c)
	rw.WriteHeader(http.StatusOK)
	if isHead(c) {
		return nil // the headers of the stream, without a consumer
	}
	hs := newHTTPStream(delivery.TransportSSE, rw)
	// Open the stream at once (EventSource fires "open") and tell the
	// browser how soon to reconnect.
	if err := hs.write(time.Now().Add(writeTimeout), func(b []byte) ([]byte, error) {
		return append(b, "retry: 2000\n: connected\n\n"...), nil
	}); err != nil {
		return nil
	}
	hs.frame = func(b []byte, m delivery.Message) ([]byte, error) {
		out, err := json.Marshal(newEventData(q.ID, m))
		if err != nil {
			return nil, err
		}
		b = append(b, "id: "...)
		b = append(b, m.TID...)
		b = append(b, "\nevent: message\ndata: "...)
		b = append(b, out...)
		return append(b, "\n\n"...), nil
	}
	hs.beat = func(b []byte) ([]byte, error) {
		return append(b, ": heartbeat\n\n"...), nil
	}
	sub := newSub(q, modeFrom(reliable, c.QueryParam("timeoutACK")), delivery.TransportSSE)
	sub.expires = s.tokenExpiry(c, q)
	s.serveHTTPStream(c, hs, sub, func(reason endReason) string {
		if reason == endShutdown || reason == endAckTimeout || reason == endUnavailable || reason == endTokenExpired {
			return "event: end\ndata: " + reason.String() + "\n\n"
		}
		return ""
	})
	return nil
}
