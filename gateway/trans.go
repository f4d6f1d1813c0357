package gateway

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/redisq"
	"github.com/popbox/popbox/request"
	"github.com/popbox/popbox/web"
)

// provision is POST /trans (API.md 1.1).
func (s *Server) provision(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	now := time.Now()
	var delay time.Duration
	if d := c.QueryParam("delay"); d != "" {
		if delay, err = request.ParseDelay(d); err != nil {
			return errorsJSON(c, http.StatusBadRequest, err.Error())
		}
	}
	p, errs := request.ParseProvision(c.Request().Header.Get(echo.HeaderContentType), body, now.Add(delay))
	if len(errs) > 0 {
		return errorsJSON(c, http.StatusBadRequest, errs...)
	}
	ns := namespace(c)
	queues, err := s.targets(c, ns, p)
	if err != nil {
		return err
	}
	tx := &redisq.Transaction{
		ID:        uuid.NewString(),
		NS:        ns,
		Queues:    queues,
		Priority:  p.Priority[0],
		ExpiresAt: p.ExpirationDate,
		Meta:      transMeta(p),
	}
	if delay > 0 {
		if err := s.store.Defer(ctx, tx, now.Add(delay)); err != nil {
			return s.storeError(c, err)
		}
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionProvision, Transaction: tx.ID,
			Namespace: ns, Count: len(queues), Error: "deferred " + delay.String()})
		return c.JSON(http.StatusOK, okData(tx.ID))
	}
	if err := s.store.Provision(ctx, tx); err != nil {
		return s.storeError(c, err)
	}
	s.provisioned(tx)
	return c.JSON(http.StatusOK, okData(tx.ID))
}

// Provisioned records a provisioned transaction in metrics and events
// (also used for deferred provisioning carried out in the background).
func (s *Server) provisioned(tx *redisq.Transaction) {
	s.m.Transactions.Inc()
	s.m.Provisioned.Add(float64(len(tx.Queues)))
	s.emit(events.Event{Kind: events.KindAction, Action: events.ActionProvision, Transaction: tx.ID,
		Namespace: tx.NS, Count: len(tx.Queues)})
	now := time.Now()
	for _, q := range tx.Queues {
		ev := events.Event{Time: now, Kind: events.KindState, State: events.StatePending, Transaction: tx.ID,
			Queue: q, Namespace: tx.NS, Callback: tx.Meta["callback"]}
		if s.opts.HistoryPayloads {
			ev.Payload = tx.Meta["payload"]
		}
		s.emit(ev)
	}
}

// ProvisionDeferred carries out a deferred provisioning (called by the
// background runner on whichever node claimed it).
func (s *Server) ProvisionDeferred(tx *redisq.Transaction) { s.provisioned(tx) }

// targets resolves the queue list and groups of a provisioning into
// deduplicated queue ids. On failure it has written the answer and returns
// errHandled.
func (s *Server) targets(c echo.Context, ns string, p *request.Provision) ([]string, error) {
	seen := make(map[string]struct{}, len(p.Queues))
	out := make([]string, 0, len(p.Queues))
	add := func(q string) {
		if _, ok := seen[q]; !ok {
			seen[q] = struct{}{}
			out = append(out, q)
		}
	}
	for _, q := range p.Queues {
		add(q)
	}
	for _, g := range p.Groups {
		members, err := s.store.Group(c.Request().Context(), ns, g)
		if err != nil {
			_ = s.storeError(c, err)
			return nil, errHandled
		}
		for _, q := range members {
			add(q)
		}
	}
	if len(out) == 0 {
		_ = errorsJSON(c, http.StatusBadRequest, request.MsgUndefinedQueue)
		return nil, errHandled
	}
	if len(out) > request.MaxQueues {
		_ = errorsJSON(c, http.StatusBadRequest, request.MsgTooManyQueues)
		return nil, errHandled
	}
	return out, nil
}

// transMeta is the flat metadata of a transaction as GET /trans returns it.
func transMeta(p *request.Provision) map[string]string {
	m := make(map[string]string, 5+len(p.Extra))
	for k, v := range p.Extra {
		m[k] = v
	}
	m["payload"] = p.Payload
	m["priority"] = p.Priority
	m["expirationDate"] = strconv.FormatInt(p.ExpirationDate, 10)
	if p.Callback != "" {
		m["callback"] = p.Callback
	}
	if p.HasDelay {
		m["expirationDelay"] = p.Delay
	}
	return m
}

func okData(data any) map[string]any { return map[string]any{"ok": true, "data": data} }

// transParam returns the transaction id path parameter.
func transParam(c echo.Context) string {
	tid, err := pathParam(c, "tid")
	if err != nil {
		return ""
	}
	return tid
}

// getTrans is GET /trans/{tid}[?queues=...] (API.md 1.2).
func (s *Server) getTrans(c echo.Context) error {
	ctx := c.Request().Context()
	tid := transParam(c)
	filter := c.QueryParam("queues")
	state, summary, ok := request.ParseStateFilter(filter)
	if filter != "" && !ok {
		return errorsJSON(c, http.StatusBadRequest, "Wrong State:"+filter)
	}
	meta := map[string]string{}
	if request.ValidTransactionID(tid) {
		var err error
		if meta, err = s.store.Meta(ctx, tid); err != nil {
			return s.storeError(c, err)
		}
	}
	if wantsHTML(c) {
		return s.transPage(c, tid, meta)
	}
	if filter == "" || len(meta) == 0 {
		return c.JSON(http.StatusOK, meta)
	}
	states, err := s.store.States(ctx, tid)
	if err != nil {
		return s.storeError(c, err)
	}
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	if summary {
		out["queues"] = summarize(states)
	} else {
		out["queues"] = queueStates(c, states, state, true)
	}
	return c.JSON(http.StatusOK, out)
}

// getTransState is GET /trans/{tid}/state[/{state}].
func (s *Server) getTransState(c echo.Context) error {
	tid := transParam(c)
	raw, _ := pathParam(c, "state")
	state, summary, ok := request.ParseStateFilter(raw)
	if !ok {
		return errorsJSON(c, http.StatusBadRequest, "Wrong State:"+raw)
	}
	states := map[string]string{}
	if request.ValidTransactionID(tid) {
		var err error
		if states, err = s.store.States(c.Request().Context(), tid); err != nil {
			return s.storeError(c, err)
		}
	}
	if summary {
		return c.JSON(http.StatusOK, okData(summarize(states)))
	}
	return c.JSON(http.StatusOK, okData(queueStates(c, states, state, false)))
}

// summarize counts queues per state.
func summarize(states map[string]string) map[string]int {
	out := map[string]int{"totalNotifications": len(states)}
	for _, st := range states {
		out[st]++
	}
	return out
}

// queueStates renders states filtered by state ("All" = every one), keyed
// by queue id: with hrefs ({"state","href"}) or as plain state strings.
func queueStates(c echo.Context, states map[string]string, state string, withHref bool) map[string]any {
	out := map[string]any{}
	for full, st := range states {
		if state != request.StateAll && st != state {
			continue
		}
		org, _, id, ok := redisq.SplitQueue(full)
		if !ok {
			continue
		}
		if withHref {
			out[id] = map[string]string{"state": st, "href": baseURL(c) + orgPrefix(org) + "/queue/" + escapeSegment(id)}
		} else {
			out[id] = st
		}
	}
	return out
}

func (s *Server) transPage(c echo.Context, tid string, meta map[string]string) error {
	v := web.TransView{ID: tid, Found: len(meta) > 0, Meta: meta}
	if v.Found {
		states, err := s.store.States(c.Request().Context(), tid)
		if err != nil {
			return s.storeError(c, err)
		}
		v.Summary = summarize(states)
		ids := make([]string, 0, len(states))
		byID := map[string]web.QueueStateView{}
		for full, st := range states {
			org, _, id, ok := redisq.SplitQueue(full)
			if !ok {
				continue
			}
			key := org + "/" + id
			ids = append(ids, key)
			byID[key] = web.QueueStateView{Queue: id, State: st, Href: orgPrefix(org) + "/queue/" + escapeSegment(id)}
		}
		sort.Strings(ids)
		for _, k := range ids {
			v.Queues = append(v.Queues, byID[k])
		}
	}
	// No WriteHeader here: the renderer sets its headers (content type,
	// nosniff) first, and the first write sends them with 200.
	return web.RenderTrans(c.Response(), v)
}

// updateTrans is PUT /trans/{tid}.
func (s *Server) updateTrans(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	tid := transParam(c)
	u, errs := request.ParseUpdate(c.Request().Header.Get(echo.HeaderContentType), body)
	if len(errs) > 0 {
		return errorsJSON(c, http.StatusBadRequest, errs...)
	}
	if u.Empty() {
		return c.JSON(http.StatusOK, okData("empty data"))
	}
	if !request.ValidTransactionID(tid) {
		return errorsJSON(c, http.StatusBadRequest, tid+" does not exist")
	}
	fields := map[string]string{}
	if u.Payload != nil {
		fields["payload"] = *u.Payload
	}
	if u.Callback != nil {
		fields["callback"] = *u.Callback
	}
	var exp int64 // 0 keeps the expiry
	if u.ExpirationDate != nil {
		fields["expirationDate"] = strconv.FormatInt(*u.ExpirationDate, 10)
		exp = max(*u.ExpirationDate, 1) // a date of 0 expires the transaction now
	}
	err = s.store.UpdateTrans(c.Request().Context(), tid, fields, exp)
	if errors.Is(err, redisq.ErrNotFound) {
		return errorsJSON(c, http.StatusBadRequest, tid+" does not exist")
	}
	if err != nil {
		return s.storeError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]bool{"ok": true})
}

// deleteTrans is DELETE /trans/{tid}.
func (s *Server) deleteTrans(c echo.Context) error {
	tid := transParam(c)
	if request.ValidTransactionID(tid) {
		if err := s.store.DeleteTrans(c.Request().Context(), tid); err != nil {
			return s.storeError(c, err)
		}
		s.emit(events.Event{Kind: events.KindAction, Action: "delete", Transaction: tid})
	}
	return c.JSON(http.StatusOK, map[string]bool{"ok": true})
}

// transHistory is GET /trans/{tid}/history (API.md 2.4).
func (s *Server) transHistory(c echo.Context) error {
	if s.opts.History == nil {
		return errorsJSON(c, http.StatusServiceUnavailable, "history is not enabled on this gateway (set POPBOX_MONGO_URI)")
	}
	evs, err := s.opts.History.Transaction(c.Request().Context(), transParam(c))
	if err != nil {
		return errorsJSON(c, http.StatusServiceUnavailable, "history unavailable: "+err.Error())
	}
	return c.JSON(http.StatusOK, okData(evs))
}
