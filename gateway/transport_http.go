package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/redisq"
)

// httpStream is the framing shared by HTTP streaming and SSE: a flushed,
// deadline-guarded write of one chunk per message. It keeps no buffer of
// its own between messages (idle connections cost as little as possible).
type httpStream struct {
	label string
	rw    http.ResponseWriter
	rc    *http.ResponseController
	frame func(b []byte, m redisq.Message) ([]byte, error)
	beat  func(b []byte) ([]byte, error)
	ended endReason
}

func newHTTPStream(label string, rw http.ResponseWriter) *httpStream {
	return &httpStream{label: label, rw: rw, rc: http.NewResponseController(rw)}
}

func (h *httpStream) name() string { return h.label }

// write appends one frame to a fresh buffer and writes and flushes it
// before deadline.
func (h *httpStream) write(deadline time.Time, fn func(b []byte) ([]byte, error)) error {
	b, err := fn(make([]byte, 0, 256))
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

func (h *httpStream) send(_ context.Context, m redisq.Message, deadline time.Time) error {
	return h.write(deadline, func(b []byte) ([]byte, error) { return h.frame(b, m) })
}

func (h *httpStream) heartbeat(_ context.Context, deadline time.Time) error {
	if h.beat == nil {
		return nil
	}
	return h.write(deadline, h.beat)
}

func (h *httpStream) end(r endReason) { h.ended = r }

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
	_, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	rw := c.Response()
	rw.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	hs := newHTTPStream(TransportStream, rw)
	if err := hs.write(time.Now().Add(writeTimeout), func(b []byte) ([]byte, error) { return b, nil }); err != nil {
		return nil
	}
	hs.frame = func(b []byte, m redisq.Message) ([]byte, error) {
		out, err := json.Marshal(streamMessage{OK: true, Data: [1]string{m.Payload}, Transactions: [1]string{m.TID}})
		if err != nil {
			return nil, err
		}
		return append(append(b, out...), '\n'), nil
	}
	s.runStream(c.Request().Context(), hs, streamOpts{full: full, mode: modeFrom(reliable, c.QueryParam("timeoutACK"))})
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

func newEventData(m redisq.Message) eventData {
	return eventData{Data: m.Payload, Transaction: m.TID, Queue: queueID(m.Queue), Priority: m.PriorityString()}
}

// events is GET /queue/{id}/events: Server-Sent Events for EventSource.
func (s *Server) events(c echo.Context) error {
	_, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	reliable := c.QueryParam("reliable") == "1" || c.QueryParam("reliable") == "true"
	rw := c.Response()
	rw.Header().Set(echo.HeaderContentType, "text/event-stream")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("Connection", "keep-alive")
	rw.Header().Set("X-Accel-Buffering", "no")
	rw.WriteHeader(http.StatusOK)
	hs := newHTTPStream(TransportSSE, rw)
	// Open the stream at once (EventSource fires "open") and tell the
	// browser how soon to reconnect.
	if err := hs.write(time.Now().Add(writeTimeout), func(b []byte) ([]byte, error) {
		return append(b, "retry: 2000\n: connected\n\n"...), nil
	}); err != nil {
		return nil
	}
	hs.frame = func(b []byte, m redisq.Message) ([]byte, error) {
		out, err := json.Marshal(newEventData(m))
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
	reason := s.runStream(c.Request().Context(), hs, streamOpts{full: full, mode: modeFrom(reliable, c.QueryParam("timeoutACK"))})
	if reason == endShutdown || reason == endAckTimeout {
		_ = hs.write(time.Now().Add(time.Second), func(b []byte) ([]byte, error) {
			return append(b, "event: end\ndata: "+reason.String()+"\n\n"...), nil
		})
	}
	return nil
}
