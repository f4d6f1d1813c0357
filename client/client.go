// Package client is a small Go client for the PopBox HTTP API (docs/API.md):
// provisioning (Push), pop, reliable pop and ack, peek, queue and
// transaction inspection, groups, secure boxes and Server-Sent Events
// subscriptions.
//
//	c, err := client.New("http://127.0.0.1:3001", client.Options{})
//	tid, err := c.Push(ctx, client.Provision{Payload: "hello", Queues: []string{"alice"}})
//	msgs, err := c.Pop(ctx, "alice", client.PopOptions{Timeout: 5 * time.Second})
//
// Every call takes a context; cancelling it aborts the request (a pop or a
// stream that is cancelled leaves its messages in the queue, as the gateway
// hands them back). Credentials are HTTP Basic (secure boxes on the TLS port,
// or the administrator's) or a Bearer token (JWT); Options.Org addresses the
// /org/{org} namespace. Failed calls return an *Error carrying the HTTP
// status and the gateway's error strings.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultServer is the gateway's plain port on this machine.
const DefaultServer = "http://127.0.0.1:3001"

// DefaultRequestTimeout bounds a request that is not a long poll or a
// stream when Options.RequestTimeout is zero.
const DefaultRequestTimeout = 30 * time.Second

// maxResponse bounds the body of a (non-streaming) answer: a pop of 1000
// messages of 1 MiB each would be about 1 GiB, so this is generous but
// finite.
const maxResponse = 2 << 30

// Options configure a Client. The zero value talks to the plain port
// without credentials.
type Options struct {
	// User and Password are sent as HTTP Basic credentials: a secure box's
	// on the TLS port, or the administrator's (provisioning auth).
	User, Password string
	// Token is sent as "Authorization: Bearer <token>" (a JWT). Token and
	// User are exclusive.
	Token string
	// Org addresses the tenant namespace: every path gets the /org/{org}
	// prefix.
	Org string
	// CAFile names a PEM file of CA certificates trusted in addition to the
	// system roots (e.g. the gateway's self-signed certificate).
	CAFile string
	// Insecure skips verification of the server's TLS certificate.
	Insecure bool
	// RequestTimeout bounds each request that is not a long poll or a
	// stream (default DefaultRequestTimeout); a pop gets its wait on top.
	RequestTimeout time.Duration
	// HTTPClient replaces the client built from CAFile and Insecure. It
	// should have no Timeout (streams last as long as their context).
	HTTPClient *http.Client
	// UserAgent is sent with each request (default "popbox-client").
	UserAgent string
}

// Client talks to one PopBox gateway. It is safe for concurrent use.
type Client struct {
	base    *url.URL // scheme, host and path prefix, without the org
	prefix  string   // "/org/<org>" or ""
	opts    Options
	hc      *http.Client
	timeout time.Duration
}

// New returns a client for the gateway at server ("http://host:3001",
// "https://host:3002", or "host:port" for plain http).
func New(server string, opts Options) (*Client, error) {
	if server == "" {
		server = DefaultServer
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("popbox client: server %q: %v", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("popbox client: server %q: scheme must be http or https", server)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("popbox client: server %q: no host", server)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("popbox client: server %q: give credentials as options, and no query or fragment", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if opts.Token != "" && (opts.User != "" || opts.Password != "") {
		return nil, errors.New("popbox client: give either Basic credentials (user/password) or a token, not both")
	}
	if (opts.User == "") != (opts.Password == "") {
		return nil, errors.New("popbox client: Basic credentials need both a user and a password")
	}
	if opts.Org != "" && !validOrg(opts.Org) {
		return nil, fmt.Errorf("popbox client: invalid org %q: 1-64 characters of A-Z a-z 0-9 . _ -", opts.Org)
	}
	c := &Client{base: u, opts: opts, hc: opts.HTTPClient, timeout: opts.RequestTimeout}
	if opts.Org != "" {
		c.prefix = "/org/" + opts.Org
	}
	if c.timeout <= 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if opts.CAFile != "" || opts.Insecure {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.Insecure} //nolint:gosec // asked for (self-signed test servers)
			if opts.CAFile != "" {
				pem, err := os.ReadFile(opts.CAFile)
				if err != nil {
					return nil, fmt.Errorf("popbox client: CA file: %w", err)
				}
				pool, err := x509.SystemCertPool()
				if err != nil || pool == nil {
					pool = x509.NewCertPool()
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("popbox client: CA file %s: no PEM certificate found", opts.CAFile)
				}
				tc.RootCAs = pool
			}
			tr.TLSClientConfig = tc
		}
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// Server returns the gateway URL the client talks to (without the org).
func (c *Client) Server() string { return c.base.String() }

func validOrg(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// Error is a gateway answer other than 2xx.
type Error struct {
	Method     string
	Path       string // the request path, without the query
	StatusCode int
	// Errors holds the strings of a {"errors": [...]} answer.
	Errors []string
	// Body is the answer's text when it was not {"errors": [...]} (e.g. the
	// plain-text "Unauthorized" of the secure port), cut to 512 bytes.
	Body string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	switch {
	case len(e.Errors) > 0:
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Errors, "; "))
	case e.Body != "":
		b.WriteString(": ")
		b.WriteString(e.Body)
	}
	return b.String()
}

// StatusCode returns the HTTP status of err when it is (or wraps) an *Error,
// else 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// ErrNotFound is returned by Trans when the transaction is unknown or
// expired (the gateway answers {}).
var ErrNotFound = errors.New("popbox: not found (unknown or expired)")

// path builds the escaped request path: the server's prefix, the org, then
// the given parts, each escaped as one path segment.
func (c *Client) path(parts ...string) string {
	var b strings.Builder
	b.WriteString(c.base.EscapedPath())
	b.WriteString(c.prefix)
	for _, p := range parts {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(p))
	}
	return b.String()
}

// newRequest builds a request for the escaped path and query.
func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	u := *c.base
	u.Path = ""
	u.RawPath = ""
	u.Opaque = ""
	raw := u.String() + path
	if len(q) > 0 {
		raw += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("popbox client: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, raw, rd)
	if err != nil {
		return nil, fmt.Errorf("popbox client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ua := c.opts.UserAgent
	if ua == "" {
		ua = "popbox-client"
	}
	req.Header.Set("User-Agent", ua)
	switch {
	case c.opts.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	case c.opts.User != "":
		req.SetBasicAuth(c.opts.User, c.opts.Password)
	}
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (when not nil).
// extra lengthens the request's deadline (the wait of a long poll).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any, extra time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+extra)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req, path, 0, maxResponse)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: unexpected answer (%v): %s", method, path, err, clip(data))
	}
	return nil
}

// send sends req for the escaped path and returns the response when its
// status is want (0: any 2xx); the caller closes its body. Another status
// is returned as an *Error made of the answer's first limit bytes.
func (c *Client) send(req *http.Request, path string, want int, limit int64) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, path, unwrapURLError(err))
	}
	if resp.StatusCode == want || (want == 0 && resp.StatusCode >= 200 && resp.StatusCode <= 299) {
		return resp, nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", req.Method, path, err)
	}
	return nil, newError(req.Method, path, resp.StatusCode, data)
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the whole
// URL (the method and path are given already).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func newError(method, path string, status int, body []byte) *Error {
	e := &Error{Method: method, Path: path, StatusCode: status}
	var eb struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
		e.Errors = eb.Errors
	} else {
		e.Body = clip(body)
	}
	return e
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

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
	q := PopOptions{AckTimeout: opts.AckTimeout}.query(opts.Reliable)
	if opts.Reliable {
		q.Set("reliable", "1")
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
