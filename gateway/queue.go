package gateway

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/request"
	"github.com/popbox/popbox/web"
)

// pop is POST /queue/{id}/pop (API.md 1.3).
func (s *Server) pop(c echo.Context) error { return s.longPoll(c, false) }

// popReliable is POST /queue/{id}/poprel.
func (s *Server) popReliable(c echo.Context) error { return s.longPoll(c, true) }

// longPoll waits up to the timeout for messages (delivery.Service.Pop).
// Messages taken for a client that went away before the answer was
// written go back to the head of the queue.
func (s *Server) longPoll(c echo.Context, reliable bool) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	maxMsgs, timeout := request.PopParams(c.QueryParam("max"), c.QueryParam("timeout"))
	mode := hub.Mode{Reliable: reliable}
	if reliable {
		mode.AckTimeout = request.AckTimeout(c.QueryParam("timeoutACK"))
	}
	defer s.m.Conn(delivery.TransportLongPoll)()
	ctx := c.Request().Context()
	p, err := s.svc.Pop(ctx, q, min(maxMsgs, s.opts.Bounds.PeekMax), mode, timeout)
	if ctx.Err() != nil {
		return nil // the client is gone; the service handed back what it took
	}
	if err != nil {
		return s.storeError(c, err)
	}
	n, err := writePopAnswer(c, p.Messages, s.opts.Bounds.MaxAnswerBytes)
	if err != nil {
		n = 0
	}
	// What was not written goes back to the head of the queue.
	p.Done(n)
	return nil
}

// parseBody reads the request body and parses it with parse; when the
// body cannot be read or parse finds problems it has answered (400 listing
// them) and returns errHandled.
func parseBody[T any](s *Server, c echo.Context, parse func([]byte) (T, []string)) (T, error) {
	var zero T
	body, err := s.readBody(c)
	if err != nil {
		return zero, err
	}
	v, errs := parse(body)
	if len(errs) > 0 {
		_ = badBody(c, errs...)
		return zero, errHandled
	}
	return v, nil
}

// ack is POST /queue/{id}/ack.
func (s *Server) ack(c echo.Context) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	tids, err := parseBody(s, c, request.ParseAck)
	if err != nil {
		return err
	}
	res, err := s.svc.Ack(c.Request().Context(), q, tids, "ack")
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
			msg := r.TID + "/" + q.ID + " does not exist"
			out[i].Err = &msg
		}
	}
	return c.JSON(http.StatusOK, out)
}

// peek is GET /queue/{id}/peek.
func (s *Server) peek(c echo.Context) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	b := s.opts.Bounds
	msgs, err := s.svc.Peek(c.Request().Context(), q, min(request.PeekMax(c.QueryParam("max")), b.PeekMax), b.MaxAnswerBytes)
	if err != nil {
		return s.storeError(c, err)
	}
	n, _ := writePopAnswer(c, msgs, b.MaxAnswerBytes)
	s.svc.Peeked(q, n)
	return nil
}

type entryRef struct {
	ID   string `json:"id"`
	Href string `json:"href"`
}

// getQueue is GET /queue/{id}.
func (s *Server) getQueue(c echo.Context) error {
	q, err := s.queueRoute(c)
	if err != nil {
		return err
	}
	info, err := s.svc.QueueInfo(c.Request().Context(), q)
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
		v := web.QueueView{Host: c.Request().Host, Queue: q.ID, Org: orgOf(c), Secure: isSecure(c),
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
	q, err := s.queueRoute(c)
	if err != nil {
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
	evs, err := s.opts.History.Queue(c.Request().Context(), string(q.NS), q.ID, since, limit)
	if err != nil {
		s.log.LogAttrs(c.Request().Context(), slog.LevelError, "history unavailable", slog.String("id", requestID(c)), slog.Any("err", err))
		return errorsJSON(c, http.StatusServiceUnavailable, "history unavailable (request id "+requestID(c)+")")
	}
	return c.JSON(http.StatusOK, okData(evs))
}

// validQueue checks a queue id from a client frame.
func validQueue(id string) error { return request.ValidQueueID(id) }
