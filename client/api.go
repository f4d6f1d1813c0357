package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// Provision is a transaction to provision (POST /trans).
type Provision struct {
	// Payload is the message (at most 1 MiB).
	Payload string
	// Priority is "H" or "L" ("" = "L").
	Priority string
	// Queues are the target inboxes (at most 10000); Groups add the
	// current members of each group. At least one target is needed.
	Queues []string
	Groups []string
	// Callback is POSTed when the message is delivered to each queue.
	Callback string
	// ExpiresAt is the absolute expiry (unix seconds); ExpiresIn is used
	// when it is zero. Both zero: the gateway's default (one hour).
	ExpiresAt time.Time
	ExpiresIn time.Duration
	// Delay defers the provisioning (?delay=N, whole seconds, at least 1).
	Delay time.Duration
	// Meta holds extra fields kept as transaction metadata.
	Meta map[string]string
}

// body is the JSON of POST /trans.
func (p Provision) body() map[string]any {
	m := make(map[string]any, len(p.Meta)+7)
	for k, v := range p.Meta {
		m[k] = v
	}
	m["payload"] = p.Payload
	pr := p.Priority
	if pr == "" {
		pr = "L"
	}
	m["priority"] = pr
	if len(p.Queues) > 0 || len(p.Groups) == 0 {
		qs := make([]map[string]string, len(p.Queues))
		for i, q := range p.Queues {
			qs[i] = map[string]string{"id": q}
		}
		m["queue"] = qs
	}
	if len(p.Groups) > 0 {
		m["groups"] = p.Groups
	}
	if p.Callback != "" {
		m["callback"] = p.Callback
	}
	if !p.ExpiresAt.IsZero() {
		m["expirationDate"] = p.ExpiresAt.Unix()
	} else if p.ExpiresIn > 0 {
		m["expirationDelay"] = ceilSeconds(p.ExpiresIn)
	}
	return m
}

// ceilSeconds rounds d up to whole seconds (at least 1).
func ceilSeconds(d time.Duration) int64 {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// okData is the {"ok": true, "data": ...} answer.
type okData[T any] struct {
	OK   bool `json:"ok"`
	Data T    `json:"data"`
}

// Push provisions a transaction and returns its id. It returns once the
// message is stored for every target (or, with Delay, once the deferral
// is stored).
func (c *Client) Push(ctx context.Context, p Provision) (string, error) {
	var q url.Values
	if p.Delay > 0 {
		q = url.Values{"delay": {strconv.FormatInt(ceilSeconds(p.Delay), 10)}}
	}
	var out okData[string]
	if err := c.do(ctx, http.MethodPost, c.path("trans"), q, p.body(), &out, 0); err != nil {
		return "", err
	}
	if out.Data == "" {
		return "", errors.New("POST /trans: the answer has no transaction id")
	}
	return out.Data, nil
}

// Message is one message taken from (or seen in) a queue. Its JSON is the
// gateway's SSE/WebSocket event data.
type Message struct {
	Payload     string `json:"data"`
	Transaction string `json:"transaction"`
	Queue       string `json:"queue,omitempty"`
	// Priority is "H" or "L" for streamed messages; pop and peek answers
	// do not carry it (FillPriorities looks it up).
	Priority string `json:"priority,omitempty"`
}

// FillPriorities sets the Priority of popped or peeked messages from their
// transactions' metadata (one GET /trans/{tid} per message without one; the
// classic pop answer has no priority). It is best effort: a message whose
// transaction cannot be read (deleted, expired, no right to read it) keeps
// an empty Priority, since the messages are taken already.
func (c *Client) FillPriorities(ctx context.Context, msgs []Message) {
	for i := range msgs {
		if msgs[i].Priority != "" {
			continue
		}
		if t, err := c.TransWithState(ctx, msgs[i].Transaction, ""); err == nil {
			msgs[i].Priority = t.Priority()
		}
	}
}

// PopOptions tune Pop, PopReliable and Peek.
type PopOptions struct {
	// Max is the most messages to take (0 = the gateway's default, 1000).
	Max int
	// Timeout is how long the gateway waits for a message when the queue
	// is empty (0 = its default, 5 s; whole seconds, at most 300 s).
	Timeout time.Duration
	// AckTimeout (PopReliable only) is how long popped messages stay
	// Blocked waiting for an Ack before they return to the queue (0 = the
	// gateway's default, 20 s).
	AckTimeout time.Duration
}

func (o PopOptions) query(reliable bool) url.Values {
	q := url.Values{}
	if o.Max > 0 {
		q.Set("max", strconv.Itoa(o.Max))
	}
	if o.Timeout > 0 {
		q.Set("timeout", strconv.FormatInt(ceilSeconds(o.Timeout), 10))
	}
	if reliable && o.AckTimeout > 0 {
		q.Set("timeoutACK", strconv.FormatInt(ceilSeconds(o.AckTimeout), 10))
	}
	return q
}

// wait is the longest the gateway may hold a pop.
func (o PopOptions) wait() time.Duration {
	switch {
	case o.Timeout <= 0:
		return 5 * time.Second
	case o.Timeout > 300*time.Second:
		return 300 * time.Second
	}
	return time.Duration(ceilSeconds(o.Timeout)) * time.Second
}

// batch is the classic pop/peek answer (parallel arrays).
type batch struct {
	OK           bool     `json:"ok"`
	Data         []string `json:"data"`
	Transactions []string `json:"transactions"`
}

func (b batch) messages(queue string) ([]Message, error) {
	if len(b.Data) != len(b.Transactions) {
		return nil, fmt.Errorf("unexpected answer: %d payloads but %d transactions", len(b.Data), len(b.Transactions))
	}
	out := make([]Message, len(b.Data))
	for i := range b.Data {
		out[i] = Message{Payload: b.Data[i], Transaction: b.Transactions[i], Queue: queue}
	}
	return out, nil
}

// Pop takes messages from a queue (POST /queue/{id}/pop), waiting up to
// opts.Timeout for one when the queue is empty. No message: an empty slice
// and no error. The messages are Delivered.
func (c *Client) Pop(ctx context.Context, queue string, opts PopOptions) ([]Message, error) {
	return c.pop(ctx, queue, "pop", opts)
}

// PopReliable is Pop through POST /queue/{id}/poprel: the messages stay
// Blocked until acknowledged with Ack, and go back to the queue if they are
// not within opts.AckTimeout.
func (c *Client) PopReliable(ctx context.Context, queue string, opts PopOptions) ([]Message, error) {
	return c.pop(ctx, queue, "poprel", opts)
}

// Peek returns the messages at the head of a queue (H before L) without
// taking them or changing anything (GET /queue/{id}/peek). Only opts.Max
// counts.
func (c *Client) Peek(ctx context.Context, queue string, opts PopOptions) ([]Message, error) {
	q := url.Values{}
	if opts.Max > 0 {
		q.Set("max", strconv.Itoa(opts.Max))
	}
	var b batch
	if err := c.do(ctx, http.MethodGet, c.path("queue", queue, "peek"), q, nil, &b, 0); err != nil {
		return nil, err
	}
	return b.messages(queue)
}

func (c *Client) pop(ctx context.Context, queue, route string, opts PopOptions) ([]Message, error) {
	var b batch
	if err := c.do(ctx, http.MethodPost, c.path("queue", queue, route), opts.query(route == "poprel"), nil, &b, opts.wait()); err != nil {
		return nil, err
	}
	return b.messages(queue)
}

// AckResult is the outcome of acknowledging one transaction.
type AckResult struct {
	Transaction string `json:"transaction"`
	// Err is the gateway's reason when the ack failed (e.g. "<tid>/<queue>
	// does not exist"), "" when it succeeded.
	Err string `json:"error,omitempty"`
}

// Ack acknowledges reliably popped or streamed messages of a queue (POST
// /queue/{id}/ack). The results are in the order of tids; a transaction
// that was not Blocked in that queue has Err set.
func (c *Client) Ack(ctx context.Context, queue string, tids ...string) ([]AckResult, error) {
	if tids == nil {
		tids = []string{}
	}
	var raw []struct {
		Err  *string `json:"err"`
		Data *string `json:"data"`
	}
	if err := c.do(ctx, http.MethodPost, c.path("queue", queue, "ack"), nil, map[string][]string{"transactions": tids}, &raw, 0); err != nil {
		return nil, err
	}
	out := make([]AckResult, len(raw))
	for i, r := range raw {
		if i < len(tids) {
			out[i].Transaction = tids[i]
		}
		if r.Data != nil {
			out[i].Transaction = *r.Data
		}
		if r.Err != nil {
			out[i].Err = *r.Err
		}
	}
	return out, nil
}

// QueueEntry is a transaction waiting in a queue.
type QueueEntry struct {
	ID   string `json:"id"`
	Href string `json:"href"`
}

// QueueInfo is GET /queue/{id}.
type QueueInfo struct {
	Host string `json:"host"`
	// LastPop is the unix time of the last pop ("" = never popped).
	LastPop string `json:"lastPop,omitempty"`
	// Blocked is true while a consumer waits on the queue.
	Blocked bool         `json:"blocked"`
	Size    int          `json:"size"`
	High    []QueueEntry `json:"high"`
	Low     []QueueEntry `json:"low"`
}

// LastPopTime returns LastPop as a time (zero when never popped).
func (q *QueueInfo) LastPopTime() time.Time {
	n, err := strconv.ParseInt(q.LastPop, 10, 64)
	if err != nil || q.LastPop == "" {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// Queue returns the state of a queue (GET /queue/{id}).
func (c *Client) Queue(ctx context.Context, queue string) (*QueueInfo, error) {
	var out QueueInfo
	if err := c.do(ctx, http.MethodGet, c.path("queue", queue), nil, nil, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// QueueState is the state of a transaction in one queue.
type QueueState struct {
	State string `json:"state"`
	Href  string `json:"href,omitempty"`
}

// Transaction is GET /trans/{tid}: the stored metadata (payload, priority,
// callback, expirationDate, ... and any extra provisioned field; every
// value a string, as the gateway returns them) and the per-queue states.
type Transaction struct {
	ID     string                `json:"id"`
	Meta   map[string]string     `json:"meta"`
	Queues map[string]QueueState `json:"queues,omitempty"`
	// Summary is filled by TransWithState(..., "summary"): the count of
	// queues by state, and "totalNotifications".
	Summary map[string]int `json:"summary,omitempty"`
}

// Payload returns the transaction's payload.
func (t *Transaction) Payload() string { return t.Meta["payload"] }

// Priority returns the transaction's priority ("H" or "L").
func (t *Transaction) Priority() string { return t.Meta["priority"] }

// ExpiresAt returns the expiry of the transaction (zero if unknown).
func (t *Transaction) ExpiresAt() time.Time {
	n, err := strconv.ParseInt(t.Meta["expirationDate"], 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// QueueNames returns the queues of the transaction, sorted.
func (t *Transaction) QueueNames() []string {
	out := make([]string, 0, len(t.Queues))
	for q := range t.Queues {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// Trans returns a transaction with the state of every queue (GET
// /trans/{tid}?queues=All). Unknown or expired: ErrNotFound.
func (c *Client) Trans(ctx context.Context, tid string) (*Transaction, error) {
	return c.TransWithState(ctx, tid, "All")
}

// TransWithState returns a transaction with the queues in the given state
// ("All", "Pending", "Blocked", "Delivered"; "summary" fills Summary
// instead; "" gives the metadata only). Unknown or expired: ErrNotFound.
func (c *Client) TransWithState(ctx context.Context, tid, state string) (*Transaction, error) {
	var q url.Values
	if state != "" {
		q = url.Values{"queues": {state}}
	}
	var raw map[string]json.RawMessage
	if err := c.do(ctx, http.MethodGet, c.path("trans", tid), q, nil, &raw, 0); err != nil {
		return nil, err
	}
	t := &Transaction{ID: tid, Meta: make(map[string]string, len(raw))}
	for k, v := range raw {
		if k == "queues" && state != "" {
			var err error
			if state == "summary" {
				err = json.Unmarshal(v, &t.Summary)
			} else {
				t.Queues = map[string]QueueState{}
				err = json.Unmarshal(v, &t.Queues)
			}
			if err != nil {
				return nil, fmt.Errorf("GET /trans/%s: unexpected queues (%v)", tid, err)
			}
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		t.Meta[k] = s
	}
	if len(t.Meta) == 0 {
		return nil, ErrNotFound
	}
	return t, nil
}

// TransState returns the state of a transaction in each queue (GET
// /trans/{tid}/state/{state}; state "" = All). An unknown transaction gives
// an empty map.
func (c *Client) TransState(ctx context.Context, tid, state string) (map[string]string, error) {
	parts := []string{"trans", tid, "state"}
	if state != "" {
		parts = append(parts, state)
	}
	var out okData[map[string]string]
	if err := c.do(ctx, http.MethodGet, c.path(parts...), nil, nil, &out, 0); err != nil {
		return nil, err
	}
	if out.Data == nil {
		out.Data = map[string]string{}
	}
	return out.Data, nil
}

// TransSummary returns how many queues of a transaction are in each state,
// plus "totalNotifications" (GET /trans/{tid}/state/summary).
func (c *Client) TransSummary(ctx context.Context, tid string) (map[string]int, error) {
	var out okData[map[string]int]
	if err := c.do(ctx, http.MethodGet, c.path("trans", tid, "state", "summary"), nil, nil, &out, 0); err != nil {
		return nil, err
	}
	if out.Data == nil {
		out.Data = map[string]int{}
	}
	return out.Data, nil
}

// DeleteTrans deletes a transaction (DELETE /trans/{tid}); its queue
// entries are skipped by later pops.
func (c *Client) DeleteTrans(ctx context.Context, tid string) error {
	return c.do(ctx, http.MethodDelete, c.path("trans", tid), nil, nil, nil, 0)
}

// Group returns the queues of a group, sorted (empty for an unknown group).
func (c *Client) Group(ctx context.Context, name string) ([]string, error) {
	var out struct {
		Name   string   `json:"name"`
		Queues []string `json:"queues"`
	}
	if err := c.do(ctx, http.MethodGet, c.path("group", name), nil, nil, &out, 0); err != nil {
		return nil, err
	}
	if out.Queues == nil {
		out.Queues = []string{}
	}
	return out.Queues, nil
}

// SetGroup adds queues to a group, creating it if needed (POST /group;
// members it already has stay).
func (c *Client) SetGroup(ctx context.Context, name string, queues []string) error {
	if queues == nil {
		queues = []string{}
	}
	return c.do(ctx, http.MethodPost, c.path("group"), nil, map[string]any{"name": name, "queues": queues}, nil, 0)
}

// ModifyGroup adds and removes queues of an existing group (PUT
// /group/{name}).
func (c *Client) ModifyGroup(ctx context.Context, name string, add, remove []string) error {
	if add == nil {
		add = []string{}
	}
	if remove == nil {
		remove = []string{}
	}
	return c.do(ctx, http.MethodPut, c.path("group", name), nil, map[string]any{"queuesToAdd": add, "queuesToRemove": remove}, nil, 0)
}

// DeleteGroup removes a group (DELETE /group/{name}).
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, c.path("group", name), nil, nil, nil, 0)
}

// CreateBox creates a secure box: a queue of the TLS port's namespace that
// only these Basic credentials (or the administrator's) may consume (POST
// /queue). The client must talk to the gateway's TLS port. A box that
// exists already gives an *Error with status 403.
func (c *Client) CreateBox(ctx context.Context, queue, user, password string) error {
	return c.do(ctx, http.MethodPost, c.path("queue"), nil, map[string]string{"queue": queue, "user": user, "password": password}, nil, 0)
}

// Health checks GET /healthz (the process is up).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, c.base.EscapedPath()+"/healthz", nil, nil, nil, 0)
}

// Ready checks GET /readyz (the gateway reaches Redis).
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, c.base.EscapedPath()+"/readyz", nil, nil, nil, 0)
}
