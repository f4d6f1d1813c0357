package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxEventLine bounds one line of the event stream: a 1 MiB payload
// JSON-escaped at worst six bytes per byte, plus the envelope.
const maxEventLine = 8 << 20

// SubscribeOptions tune Subscribe.
type SubscribeOptions struct {
	// Reliable asks for reliable delivery: each message stays Blocked
	// until acknowledged (Subscription.Ack or Client.Ack) within
	// AckTimeout, else it goes back to the queue and the gateway ends the
	// stream.
	Reliable   bool
	AckTimeout time.Duration
}

// Subscription is an open Server-Sent Events stream of one queue (GET
// /queue/{id}/events). Next returns the messages as they arrive. It is not
// safe for concurrent use, except Close and Ack.
type Subscription struct {
	c      *Client
	queue  string
	body   io.ReadCloser
	r      *bufio.Reader
	ctx    context.Context
	lastID string
	once   sync.Once
}

// StreamEnd is returned by Next when the gateway ended the stream with an
// "end" event (it shuts down, or a reliable message was not acknowledged
// in time).
type StreamEnd struct{ Reason string }

func (e *StreamEnd) Error() string { return "stream ended by the gateway: " + e.Reason }

// Subscribe opens a Server-Sent Events stream on a queue. The stream lasts
// until ctx is cancelled, Close is called or the gateway ends it; messages
// the gateway took for it but did not write go back to the queue. Messages
// written to a plain (not reliable) stream count as Delivered even if the
// caller never reads them; use Reliable when that matters.
func (c *Client) Subscribe(ctx context.Context, queue string, opts SubscribeOptions) (*Subscription, error) {
	q := url.Values{}
	if opts.Reliable {
		q.Set("reliable", "1")
		if opts.AckTimeout > 0 {
			q.Set("timeoutACK", strconv.FormatInt(ceilSeconds(opts.AckTimeout), 10))
		}
	}
	path := c.path("queue", queue, "events")
	req, err := c.newRequest(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.send(req, path, http.StatusOK, 64<<10)
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: not an event stream (Content-Type %q)", path, ct)
	}
	return &Subscription{c: c, queue: queue, body: resp.Body, r: bufio.NewReaderSize(resp.Body, 64<<10), ctx: ctx}, nil
}

// Next waits for the next message. It returns io.EOF when the gateway
// closed the stream, a *StreamEnd when it ended it with a reason, and the
// context's error once the context is done.
func (s *Subscription) Next() (Message, error) {
	var (
		event string
		data  bytes.Buffer
		id    string
		hasID bool
	)
	for {
		line, err := s.readLine()
		if err != nil {
			if cerr := s.ctx.Err(); cerr != nil {
				return Message{}, cerr
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return Message{}, io.EOF
			}
			return Message{}, err
		}
		if len(line) == 0 { // dispatch
			if hasID {
				s.lastID = id
			}
			if data.Len() == 0 {
				event, hasID = "", false
				continue
			}
			payload := bytes.TrimSuffix(data.Bytes(), []byte("\n"))
			switch event {
			case "", "message":
				var m Message
				if err := json.Unmarshal(payload, &m); err != nil {
					return Message{}, fmt.Errorf("event stream: bad message data (%v): %s", err, clip(payload))
				}
				if m.Queue == "" {
					m.Queue = s.queue
				}
				if m.Transaction == "" && hasID {
					m.Transaction = id
				}
				return m, nil
			case "end":
				return Message{}, &StreamEnd{Reason: string(payload)}
			}
			// Another event type: not ours to handle.
			event, hasID = "", false
			data.Reset()
			continue
		}
		if line[0] == ':' { // comment (connected, heartbeat)
			continue
		}
		field, value := line, ""
		if i := strings.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], strings.TrimPrefix(line[i+1:], " ")
		}
		switch field {
		case "event":
			event = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				id, hasID = value, true
			}
		}
	}
}

// readLine reads one line without its end (LF or CRLF; the gateway ends
// its lines with LF).
func (s *Subscription) readLine() (string, error) {
	var buf []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(buf)+len(chunk) > maxEventLine {
			return "", fmt.Errorf("event stream: line longer than %d bytes", maxEventLine)
		}
		buf = append(buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		return string(buf), nil
	}
}

// LastEventID is the id of the last event received (a transaction id).
func (s *Subscription) LastEventID() string { return s.lastID }

// Ack acknowledges messages of a reliable subscription.
func (s *Subscription) Ack(ctx context.Context, tids ...string) ([]AckResult, error) {
	return s.c.Ack(ctx, s.queue, tids...)
}

// Close ends the stream. Messages the gateway has not written yet go back
// to the queue.
func (s *Subscription) Close() error {
	var err error
	s.once.Do(func() { err = s.body.Close() })
	return err
}
