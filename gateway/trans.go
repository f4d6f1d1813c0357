package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
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
	// No query string (the usual request) needs no parse of one.
	if d := queryParam(c, "delay"); d != "" {
		if delay, err = request.ParseDelay(d); err != nil {
			return errorsJSON(c, http.StatusBadRequest, err.Error())
		}
	}
	p, errs := request.ParseProvisionLimited(c.Request().Header.Get(echo.HeaderContentType), body, now.Add(delay), s.opts.Bounds.MaxMetaBytes)
	if len(errs) > 0 {
		return badBody(c, errs...)
	}
	key, msg := request.IdempotencyKey(c.Request().Header.Values(headerIdempotencyKey))
	if msg != "" {
		return errorsJSON(c, http.StatusBadRequest, msg)
	}
	ns := namespace(c)
	queues, err := s.targets(c, ns, p)
	if err != nil {
		return err
	}
	tx := &delivery.Transaction{
		ID:        uuid.NewString(),
		NS:        string(ns),
		Queues:    queues,
		Priority:  p.Priority,
		ExpiresAt: p.ExpirationDate,
		Meta:      transMeta(p),
	}
	pr := delivery.Provisioning{Tx: tx, Delay: delay}
	if key != "" {
		pr.Once = &delivery.Once{NS: string(ns), Key: key, Hash: request.CanonicalHash(body, c.QueryParam("delay")),
			Window: s.opts.IdempotencyWindow}
	}
	tid, err := s.svc.Provision(ctx, pr)
	switch {
	case errors.Is(err, delivery.ErrIdempotencyConflict):
		return errorsJSON(c, http.StatusConflict, request.MsgIdempotencyConflict)
	case err != nil:
		return s.storeError(c, err)
	case key != "":
		return c.JSON(http.StatusOK, okData(tid))
	}
	return okTIDAnswer(c, http.StatusOK, tid)
}

// queryParam is c.QueryParam(name) without parsing an empty query string
// (echo builds a map of it).
func queryParam(c echo.Context, name string) string {
	if c.Request().URL.RawQuery == "" {
		return ""
	}
	return c.QueryParam(name)
}

// headerIdempotencyKey makes a POST /trans idempotent (API.md 1.1).
const headerIdempotencyKey = "Idempotency-Key"

// targets resolves the queue list and groups of a provisioning into
// deduplicated queue ids. On failure it has written the answer and returns
// errHandled.
func (s *Server) targets(c echo.Context, ns domain.Namespace, p *request.Provision) ([]string, error) {
	if len(p.Groups) == 0 && len(p.Queues) > 0 && len(p.Queues) <= request.MaxQueues {
		return p.Queues, nil // the parser deduplicated them already
	}
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
		members, err := s.svc.Group(c.Request().Context(), ns, g)
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
	m["priority"] = p.Priority.String()
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

// readTrans reads transaction tid for the request: one of another org (or
// a tid that is no UUID) is unknown (API.md 0: info.Found is false). On a
// storage failure it has written the answer and returns errHandled.
func (s *Server) readTrans(c echo.Context, tid string, withMeta bool) (delivery.TransInfo, error) {
	if !request.ValidTransactionID(tid) {
		return delivery.TransInfo{States: map[string]string{}}, nil
	}
	info, err := s.svc.ReadTrans(c.Request().Context(), tid, withMeta)
	if err != nil {
		_ = s.storeError(c, err)
		return info, errHandled
	}
	if info.Found && info.Org != orgOf(c) {
		return delivery.TransInfo{States: map[string]string{}}, nil
	}
	return info, nil
}

// readRights is the first step of every transaction read (API.md 0): with
// provisioning auth or RequireAuth on, reading needs provisioning rights
// for the org. On refusal it has written the answer and returns
// errHandled; granted tells whether provisioning rights were shown.
func (s *Server) readRights(c echo.Context) (granted bool, err error) {
	if !s.opts.ProvisionAuth && !s.opts.RequireAuth {
		return false, nil
	}
	if err := s.provisionRights(c); err != nil {
		s.writeDenied(c, err)
		return false, errHandled
	}
	return true, nil
}

// secureQueues returns the secure (SEC:) queues among the full names of
// a transaction's states.
func secureQueues(states map[string]string) []domain.Queue {
	var out []domain.Queue
	for full := range states {
		if q, ok := domain.ParseQueue(full); ok && q.Secure() {
			out = append(out, q)
		}
	}
	return out
}

// secureOnPlain answers a read of a transaction to secure queues made on
// the plain port: 403, it is read only over TLS (API.md 0).
func secureOnPlain(c echo.Context, tid string) error {
	return errorsJSON(c, http.StatusForbidden, "transaction "+tid+" is for secure queues: read it on the TLS port")
}

// publicMeta is what anyone may read of a transaction to secure queues:
// its priority and expiry, not its payload, callback or extra fields.
var publicMeta = map[string]bool{"priority": true, "expirationDate": true, "expirationDelay": true}

// getTrans is GET /trans/{tid}[?queues=...] (API.md 1.2).
func (s *Server) getTrans(c echo.Context) error {
	tid := transParam(c)
	filter := c.QueryParam("queues")
	state, summary, ok := request.ParseStateFilter(filter)
	if filter != "" && !ok {
		return errorsJSON(c, http.StatusBadRequest, "Wrong State:"+filter)
	}
	rights, err := s.readRights(c)
	if err != nil {
		return err
	}
	info, err := s.readTrans(c, tid, true)
	if err != nil {
		return err
	}
	meta := info.Meta
	if meta == nil {
		meta = map[string]string{}
	}
	if sec := secureQueues(info.States); len(sec) > 0 {
		if !isSecure(c) {
			return secureOnPlain(c, tid)
		}
		if !rights && !s.secureReadRights(c, sec) {
			for k := range meta {
				if !publicMeta[k] {
					delete(meta, k)
				}
			}
		}
	}
	if wantsHTML(c) {
		return s.transPage(c, tid, meta, info.States)
	}
	if filter == "" || len(meta) == 0 {
		return c.JSON(http.StatusOK, meta)
	}
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	if summary {
		out["queues"] = summarize(info.States)
	} else {
		out["queues"] = queueStates(c, info.States, state, true)
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
	if _, err := s.readRights(c); err != nil {
		return err
	}
	info, err := s.readTrans(c, tid, false)
	if err != nil {
		return err
	}
	if len(secureQueues(info.States)) > 0 && !isSecure(c) {
		return secureOnPlain(c, tid)
	}
	if summary {
		return c.JSON(http.StatusOK, okData(summarize(info.States)))
	}
	return c.JSON(http.StatusOK, okData(queueStates(c, info.States, state, false)))
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
		q, ok := domain.ParseQueue(full)
		if !ok {
			continue
		}
		if withHref {
			out[q.ID] = map[string]string{"state": st, "href": baseURL(c) + orgPrefix(q.Org()) + "/queue/" + escapeSegment(q.ID)}
		} else {
			out[q.ID] = st
		}
	}
	return out
}

func (s *Server) transPage(c echo.Context, tid string, meta, states map[string]string) error {
	v := web.TransView{ID: tid, Found: len(meta) > 0, Meta: meta}
	if v.Found {
		v.Summary = summarize(states)
		ids := make([]string, 0, len(states))
		byID := map[string]web.QueueStateView{}
		for full, st := range states {
			q, ok := domain.ParseQueue(full)
			if !ok {
				continue
			}
			key := q.Org() + "/" + q.ID
			ids = append(ids, key)
			byID[key] = web.QueueStateView{Queue: q.ID, State: st, Href: orgPrefix(q.Org()) + "/queue/" + escapeSegment(q.ID)}
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
		return badBody(c, errs...)
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
	err = s.svc.UpdateTrans(c.Request().Context(), tid, orgOf(c), fields, exp)
	if errors.Is(err, delivery.ErrNotFound) {
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
		if err := s.svc.DeleteTrans(c.Request().Context(), tid, namespace(c)); err != nil {
			return s.storeError(c, err)
		}
	}
	return c.JSON(http.StatusOK, map[string]bool{"ok": true})
}

// transHistory is GET /trans/{tid}/history (API.md 2.4).
func (s *Server) transHistory(c echo.Context) error {
	if s.opts.History == nil {
		return errorsJSON(c, http.StatusServiceUnavailable, "history is not enabled on this gateway (set POPBOX_MONGO_URI)")
	}
	rights, err := s.readRights(c)
	if err != nil {
		return err
	}
	tid := transParam(c)
	evs, err := s.opts.History.Transaction(c.Request().Context(), tid)
	if err != nil {
		s.log.LogAttrs(c.Request().Context(), slog.LevelError, "history unavailable", slog.String("id", requestID(c)), slog.Any("err", err))
		return errorsJSON(c, http.StatusServiceUnavailable, "history unavailable (request id "+requestID(c)+")")
	}
	if !historyOfOrg(evs, orgOf(c)) {
		evs = []events.Event{} // another org's transaction is unknown (API.md 0)
	}
	var sec []domain.Queue
	for _, ev := range evs {
		if q := domain.Namespace(ev.Namespace).Queue(ev.Queue); ev.Queue != "" && q.Secure() {
			sec = append(sec, q)
		}
	}
	if len(sec) > 0 {
		if !isSecure(c) {
			return secureOnPlain(c, tid)
		}
		if !rights && !s.secureReadRights(c, sec) {
			for i := range evs {
				evs[i].Payload, evs[i].Callback = "", ""
			}
		}
	}
	return c.JSON(http.StatusOK, okData(evs))
}

// historyOfOrg tells whether the history of a transaction belongs to org:
// the org of its namespaced events (the provisioning carries the
// transaction's namespace). A history without any namespace names no owner
// and belongs to nobody.
func historyOfOrg(evs []events.Event, org string) bool {
	for _, ev := range evs {
		if ev.Namespace != "" {
			return domain.Namespace(ev.Namespace).Org() == org
		}
	}
	return false
}
