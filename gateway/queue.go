package gateway

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/redisq"
	"github.com/popbox/popbox/request"
	"github.com/popbox/popbox/web"
)

// popResponse is the classic answer of pop, poprel and peek.
type popResponse struct {
	OK           bool     `json:"ok"`
	Data         []string `json:"data"`
	Transactions []string `json:"transactions"`
}

func newPopResponse(msgs []redisq.Message) popResponse {
	r := popResponse{OK: true, Data: make([]string, len(msgs)), Transactions: make([]string, len(msgs))}
	for i, m := range msgs {
		r.Data[i] = m.Payload
		r.Transactions[i] = m.TID
	}
	return r
}

// pop is POST /queue/{id}/pop (API.md 1.3).
func (s *Server) pop(c echo.Context) error { return s.longPoll(c, false) }

// popReliable is POST /queue/{id}/poprel.
func (s *Server) popReliable(c echo.Context) error { return s.longPoll(c, true) }

// longPoll waits up to the timeout for messages through the hub. Messages
// taken for a client that went away before the answer was written go back
// to the head of the queue.
func (s *Server) longPoll(c echo.Context, reliable bool) error {
	_, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	start := time.Now()
	maxMsgs, timeout := request.PopParams(c.QueryParam("max"), c.QueryParam("timeout"))
	mode := hub.Mode{Reliable: reliable}
	if reliable {
		mode.AckTimeout = request.AckTimeout(c.QueryParam("timeoutACK"))
	}
	defer s.m.Conn(TransportLongPoll)()
	ctx := c.Request().Context()
	w := hub.NewPop(full, maxMsgs, mode, TransportLongPoll)
	s.hub.Add(w)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var msgs []redisq.Message
	select {
	case msgs = <-w.Batch():
	case <-timer.C:
	case <-ctx.Done():
	case <-w.ShuttingDown():
	}
	if !s.hub.Remove(w) && msgs == nil {
		msgs = <-w.Batch() // offered while we were leaving: ours to deliver or hand back
	}
	if ctx.Err() != nil {
		// The client is gone: nothing taken for it may be lost.
		s.handBack(w, TransportLongPoll, msgs...)
		return nil
	}
	if len(msgs) == 0 {
		if err := s.store.TouchLastPop(ctx, full); err != nil {
			s.log.WarnContext(ctx, "touch lastPop", "err", err)
		}
	}
	if err := c.JSON(http.StatusOK, newPopResponse(msgs)); err != nil {
		s.handBack(w, TransportLongPoll, msgs...)
		return nil
	}
	s.m.PopLatency.Observe(time.Since(start).Seconds())
	if len(msgs) > 0 {
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionPop, Count: len(msgs),
			Queue: queueID(full), Namespace: nsOf(full), Transport: TransportLongPoll})
	}
	s.delivered(msgs, reliable, TransportLongPoll)
	return nil
}

// delivered records messages written to a consumer: Delivered (which fires
// callbacks through the event bus) or Blocked for reliable deliveries.
func (s *Server) delivered(msgs []redisq.Message, reliable bool, transport string) {
	if len(msgs) == 0 {
		return
	}
	s.m.Delivered.WithLabelValues(transport).Add(float64(len(msgs)))
	state := events.StateDelivered
	if reliable {
		state = events.StateBlocked
	}
	s.emitStates(msgs, state, transport)
}

// ack is POST /queue/{id}/ack.
func (s *Server) ack(c echo.Context) error {
	id, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	tids, errs := request.ParseAck(body)
	if len(errs) > 0 {
		return errorsJSON(c, http.StatusBadRequest, errs...)
	}
	res, err := s.acknowledge(c, full, tids)
	if err != nil {
		return s.storeError(c, err)
	}
	type item struct {
		Err  *string `json:"err"`
		Data *string `json:"data"`
	}
	out := make([]item, len(res))
	for i, r := range res {
		if r.OK {
			tid := r.TID
			out[i].Data = &tid
		} else {
			msg := r.TID + "/" + id + " does not exist"
			out[i].Err = &msg
		}
	}
	return c.JSON(http.StatusOK, out)
}

// acknowledge acks tids on a queue and records the deliveries.
func (s *Server) acknowledge(c echo.Context, full string, tids []string) ([]redisq.AckResult, error) {
	return s.ackOn(c.Request().Context(), full, tids, "ack")
}

// ackOn acknowledges reliable deliveries on queue full (from POST /ack or an
// in-band WebSocket ack) and records them: an ack action and a Delivered
// state per message, which fires its callback.
func (s *Server) ackOn(ctx context.Context, full string, tids []string, via string) ([]redisq.AckResult, error) {
	res, err := s.store.Ack(ctx, full, tids)
	if err != nil {
		return nil, err
	}
	var acked []redisq.Message
	for _, r := range res {
		if r.OK {
			acked = append(acked, redisq.Message{TID: r.TID, Queue: full, Callback: r.Callback})
		}
	}
	if len(acked) > 0 {
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionAck, Count: len(acked), Queue: queueID(full), Namespace: nsOf(full), Transport: via})
		s.emitStates(acked, events.StateDelivered, via)
	}
	return res, nil
}

// peek is GET /queue/{id}/peek.
func (s *Server) peek(c echo.Context) error {
	_, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	msgs, err := s.store.Peek(c.Request().Context(), full, request.PeekMax(c.QueryParam("max")))
	if err != nil {
		return s.storeError(c, err)
	}
	if len(msgs) > 0 {
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionPeek, Count: len(msgs),
			Queue: queueID(full), Namespace: nsOf(full)})
	}
	return c.JSON(http.StatusOK, newPopResponse(msgs))
}

type entryRef struct {
	ID   string `json:"id"`
	Href string `json:"href"`
}

// getQueue is GET /queue/{id}.
func (s *Server) getQueue(c echo.Context) error {
	id, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	info, err := s.store.QueueInfo(c.Request().Context(), full)
	if err != nil {
		return s.storeError(c, err)
	}
	refs := func(tids []string) []entryRef {
		out := make([]entryRef, len(tids))
		for i, t := range tids {
			out[i] = entryRef{ID: t, Href: baseURL(c) + "/trans/" + t + "?queues=All"}
		}
		return out
	}
	if wantsHTML(c) {
		v := web.QueueView{Host: c.Request().Host, Queue: id, Org: orgOf(c), Secure: isSecure(c),
			Size: int(info.Size), Blocked: info.Blocked}
		if info.LastPop > 0 {
			v.LastPop = strconv.FormatInt(info.LastPop, 10)
		}
		for _, t := range info.High {
			v.High = append(v.High, web.EntryView{ID: t, Href: "/trans/" + t})
		}
		for _, t := range info.Low {
			v.Low = append(v.Low, web.EntryView{ID: t, Href: "/trans/" + t})
		}
		return web.RenderQueue(c.Response(), v)
	}
	out := map[string]any{
		"ok":      true,
		"host":    c.Request().Host,
		"blocked": info.Blocked,
		"size":    info.Size,
		"high":    refs(info.High),
		"low":     refs(info.Low),
	}
	if info.LastPop > 0 {
		out["lastPop"] = strconv.FormatInt(info.LastPop, 10)
	}
	return c.JSON(http.StatusOK, out)
}

// queueHistory is GET /queue/{id}/history?since=&limit=.
func (s *Server) queueHistory(c echo.Context) error {
	id, full, err := queueParam(c)
	if err != nil {
		return err
	}
	if err := s.authorizeQueue(c, full); err != nil {
		return err
	}
	if s.opts.History == nil {
		return errorsJSON(c, http.StatusServiceUnavailable, "history is not enabled on this gateway (set POPBOX_MONGO_URI)")
	}
	var since time.Time
	if v := c.QueryParam("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return errorsJSON(c, http.StatusBadRequest, "invalid since: want an RFC 3339 time")
		}
		since = t
	}
	limit, _ := strconv.Atoi(c.QueryParam("limit"))
	evs, err := s.opts.History.Queue(c.Request().Context(), namespace(c), id, since, limit)
	if err != nil {
		return errorsJSON(c, http.StatusServiceUnavailable, "history unavailable: "+err.Error())
	}
	return c.JSON(http.StatusOK, okData(evs))
}

// queueID is the id part of a full queue name.
func queueID(full string) string {
	_, _, id, _ := redisq.SplitQueue(full)
	return id
}

// nsOf is the namespace part of a full queue name.
func nsOf(full string) string { return full[:len(full)-len(queueID(full))] }

// validQueue checks a queue id from a client frame.
func validQueue(id string) error { return request.ValidQueueID(id) }
