// Package gateway is the HTTP face of PopBox: the classic PopBox REST API
// (provisioning, transactions, queues, groups) and the consumer transports,
// built with echo on top of the hub (local waiters) and redisq (Redis).
package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/redisq"
	"github.com/popbox/popbox/request"
)

// Options configure a Server.
type Options struct {
	Store     *redisq.Store
	Hub       *hub.Hub
	Bus       *events.Bus    // every state change and action goes through it
	History   *history.Store // nil: history is off (503 on history routes)
	Metrics   *Metrics
	Logger    *slog.Logger
	Version   string
	Node      string
	RedisMode string // embedded, single, sentinel, cluster
	MaxBody   int64  // request body limit in bytes (413 beyond)
	// HistoryPayloads records payloads in history events.
	HistoryPayloads bool
	// WSOriginPatterns are the cross-origin hosts allowed to open
	// WebSockets (the request's own host always is).
	WSOriginPatterns []string

	// Security (gateway/auth.go, gateway/limits.go, docs/SECURITY.md).
	// Boxes checks BasicAuth credentials of secure boxes; nil: built
	// from Store with Admin.
	Boxes *auth.Boxes
	// JWT verifies bearer tokens; nil: tokens are not accepted.
	JWT *auth.Verifier
	// Admin are the administrator's credentials (every secure box, and
	// provisioning when ProvisionAuth is on).
	Admin auth.AdminCredentials
	// RequireAuth requires a JWT on the queue routes of the plain port.
	RequireAuth bool
	// ProvisionAuth requires a provision-scoped JWT or the admin
	// credentials for provisioning, PUT/DELETE of transactions, groups
	// and secure box creation.
	ProvisionAuth bool
	// MaxConnections caps the requests served at once (503 beyond);
	// 0: unlimited.
	MaxConnections int
	// CORSOrigins are the allowed browser origins ("*" for any); empty:
	// no CORS. WSOriginPatterns default to them.
	CORSOrigins []string
}

// Server serves the PopBox HTTP API.
type Server struct {
	opts    Options
	store   *redisq.Store
	hub     *hub.Hub
	bus     *events.Bus
	m       *Metrics
	log     *slog.Logger
	started time.Time
	closing chan struct{} // closed by Shutdown
	once    sync.Once
	sec     *security
}

// New makes a Server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 8 << 20
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Bus == nil {
		o.Bus = events.NewBus(o.Logger)
	}
	o.WSOriginPatterns = wsOriginPatterns(o.WSOriginPatterns, o.CORSOrigins)
	return &Server{opts: o, store: o.Store, hub: o.Hub, bus: o.Bus, m: o.Metrics, log: o.Logger, started: time.Now(), closing: make(chan struct{}),
		sec: newSecurity(o)}
}

// ctxKey keys for values kept in the echo context.
const (
	keySecure = "popbox.secure"
	keyOrg    = "popbox.org"
)

// Handler returns the HTTP handler of the plain (secure=false) or the TLS
// (secure=true) port. Both serve the same routes; the namespace of queues
// differs (API.md section 0).
func (s *Server) Handler(secure bool) http.Handler {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.recoverer, s.accessLog)
	if cors := corsMiddleware(s.opts.CORSOrigins); cors != nil {
		e.Use(cors)
	}
	e.Use(s.connLimit)
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Set(keySecure, secure)
			return next(c)
		}
	})
	s.classicRoutes(e.Group(""))
	org := e.Group("/org/:org", s.orgMiddleware)
	s.classicRoutes(org)

	e.GET("/", s.deployInfo)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metricsHandler())
	ui := echo.WrapHandler(http.StripPrefix("/ui", uiHandler()))
	e.GET("/ui", ui)
	e.GET("/ui/*", ui)
	return e
}

// classicRoutes registers the routes that exist both at the root and under
// /org/{org}.
func (s *Server) classicRoutes(g *echo.Group) {
	g.POST("/trans", s.provision, s.requireProvision)
	g.GET("/trans/:tid", s.getTrans)
	g.GET("/trans/:tid/state", s.getTransState)
	g.GET("/trans/:tid/state/:state", s.getTransState)
	g.GET("/trans/:tid/history", s.transHistory)
	g.PUT("/trans/:tid", s.updateTrans, s.requireProvision)
	g.DELETE("/trans/:tid", s.deleteTrans, s.requireProvision)

	g.POST("/queue", s.createBox, s.requireProvision)

	g.POST("/queue/:id/pop", s.pop)
	g.POST("/queue/:id/poprel", s.popReliable)
	g.POST("/queue/:id/ack", s.ack)
	g.GET("/queue/:id/peek", s.peek)
	g.GET("/queue/:id", s.getQueue)
	g.GET("/queue/:id/history", s.queueHistory)
	g.POST("/queue/:id/subscribe", s.subscribe)
	g.POST("/queue/:id/subscriberel", s.subscribeReliable)
	g.GET("/queue/:id/events", s.events)
	g.GET("/queue/:id/ws", s.queueWS)
	g.GET("/ws", s.muxWS)

	g.POST("/group", s.createGroup, s.requireProvision)
	g.GET("/group/:name", s.getGroup, s.requireProvision)
	g.PUT("/group/:name", s.modifyGroup, s.requireProvision)
	g.DELETE("/group/:name", s.deleteGroup, s.requireProvision)
}

func (s *Server) orgMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		org, err := pathParam(c, "org")
		if err == nil {
			err = request.ValidOrg(org)
		}
		if err != nil {
			return errorsJSON(c, http.StatusBadRequest, err.Error())
		}
		c.Set(keyOrg, org)
		return next(c)
	}
}

func isSecure(c echo.Context) bool { b, _ := c.Get(keySecure).(bool); return b }
func orgOf(c echo.Context) string  { o, _ := c.Get(keyOrg).(string); return o }

// namespace is the queue namespace of the request (API.md section 0).
func namespace(c echo.Context) string { return redisq.Namespace(orgOf(c), isSecure(c)) }

// pathParam returns a path parameter, percent-decoded exactly once.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// queueParam returns the queue id of the request and its full name, or
// writes a 400.
func queueParam(c echo.Context) (id, full string, err error) {
	id, err = pathParam(c, "id")
	if err == nil {
		err = request.ValidQueueID(id)
	}
	if err != nil {
		_ = errorsJSON(c, http.StatusBadRequest, err.Error())
		return "", "", errHandled
	}
	return id, namespace(c) + id, nil
}

// errorsJSON writes {"errors": [...]} with a status.
func errorsJSON(c echo.Context, status int, errs ...string) error {
	return c.JSON(status, map[string][]string{"errors": errs})
}

// errHandled marks an error whose response was already written.
var errHandled = errors.New("response written")

// readBody reads the request body up to the configured limit; over the
// limit it answers 413.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	r := http.MaxBytesReader(c.Response(), c.Request().Body, s.opts.MaxBody)
	b, err := io.ReadAll(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			_ = errorsJSON(c, http.StatusRequestEntityTooLarge, "request body larger than "+itoa(s.opts.MaxBody)+" bytes")
			return nil, errHandled
		}
		_ = errorsJSON(c, http.StatusBadRequest, "could not read request body: "+err.Error())
		return nil, errHandled
	}
	return b, nil
}

// storeError answers 500 for a storage failure.
func (s *Server) storeError(c echo.Context, err error) error {
	s.log.LogAttrs(c.Request().Context(), slog.LevelError, "storage error", slog.String("route", c.Path()), slog.Any("err", err))
	s.emit(events.Event{Kind: events.KindAction, Action: events.ActionError, Error: err.Error()})
	return errorsJSON(c, http.StatusInternalServerError, "storage error: "+err.Error())
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed || errors.Is(err, errHandled) {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok {
			msg = m
		}
		_ = errorsJSON(c, he.Code, msg)
		return
	}
	s.log.LogAttrs(c.Request().Context(), slog.LevelError, "request failed", slog.String("route", c.Path()), slog.Any("err", err))
	_ = errorsJSON(c, http.StatusInternalServerError, "internal error")
}

// recoverer turns a panic in a handler into a 500 without killing the node.
func (s *Server) recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.LogAttrs(c.Request().Context(), slog.LevelError, "panic in handler", slog.String("route", c.Path()), slog.Any("panic", r))
				if !c.Response().Committed {
					err = errorsJSON(c, http.StatusInternalServerError, "internal error")
				}
			}
		}()
		return next(c)
	}
}

// accessLog counts requests and logs them at debug level with a request id.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		rid := c.Request().Header.Get(echo.HeaderXRequestID)
		if rid == "" {
			rid = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, rid)
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		code := c.Response().Status
		s.m.HTTPRequests.WithLabelValues(c.Request().Method, route, itoa(int64(code))).Inc()
		if s.log.Enabled(c.Request().Context(), slog.LevelDebug) {
			s.log.LogAttrs(c.Request().Context(), slog.LevelDebug, "request",
				slog.String("id", rid), slog.String("method", c.Request().Method), slog.String("route", route),
				slog.String("path", c.Request().URL.Path), slog.Int("status", code),
				slog.Duration("took", time.Since(start)), slog.String("remote", c.RealIP()))
		}
		return nil
	}
}

// emit publishes an event with this node's name.
func (s *Server) emit(ev events.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Node == "" {
		ev.Node = s.opts.Node
	}
	s.bus.Publish(ev)
}

// emitStates publishes a state event per message.
func (s *Server) emitStates(msgs []redisq.Message, state, transport string) {
	now := time.Now()
	for _, m := range msgs {
		ev := events.Event{Time: now, Kind: events.KindState, State: state, Transaction: m.TID,
			Queue: queueID(m.Queue), Namespace: nsOf(m.Queue), Callback: m.Callback, Transport: transport}
		if s.opts.HistoryPayloads {
			ev.Payload = m.Payload
		}
		s.emit(ev)
	}
}

// wantsHTML tells whether the client is a browser asking for a page.
func wantsHTML(c echo.Context) bool {
	return strings.Contains(c.Request().Header.Get(echo.HeaderAccept), "text/html")
}

// baseURL is the scheme and host for links in answers.
func baseURL(c echo.Context) string {
	scheme := "http"
	if isSecure(c) {
		scheme = "https"
	}
	return scheme + "://" + c.Request().Host
}

// orgPrefix is "/org/<org>" for a request under an org, else "".
func orgPrefix(org string) string {
	if org == "" {
		return ""
	}
	return "/org/" + url.PathEscape(org)
}

// Shutdown ends every consumer cleanly (long polls answer, streams end) so
// that nothing taken from Redis is lost; call it before shutting down the
// HTTP servers.
func (s *Server) Shutdown(ctx context.Context) {
	s.once.Do(func() { close(s.closing) })
	s.hub.Shutdown()
}
