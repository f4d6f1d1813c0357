// Package gateway is the HTTP face of PopBox: the classic PopBox REST API
// (provisioning, transactions, queues, groups) and the consumer transports,
// built with echo as thin handlers (parse the request, call the delivery
// service, render the answer) on top of hub/delivery.
package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/gateway/openapi"
	"github.com/popbox/popbox/history"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/request"
)

// Options configure a Server.
type Options struct {
	// Service is the node's delivery service (it emits every delivery
	// event and metric); nil only for a server that just lists routes.
	Service   *delivery.Service
	History   *history.Store // nil: history is off (503 on history routes)
	Metrics   *Metrics
	Logger    *slog.Logger
	Version   string
	Node      string
	RedisMode string // embedded, single, sentinel, cluster
	MaxBody   int64  // request body limit in bytes (413 beyond)
	// IdempotencyWindow is how long an Idempotency-Key of POST /trans is
	// remembered (default 10 minutes).
	IdempotencyWindow time.Duration
	// WSOriginPatterns are the cross-origin hosts allowed to open
	// WebSockets (the request's own host always is).
	WSOriginPatterns []string
	// WSFrameRate is how many client frames per second one WebSocket may
	// send (burst WSFrameRate+wsMaxSubscriptions); beyond, it is closed
	// with 1008. 0: unlimited.
	WSFrameRate int

	// Security (gateway/auth.go, gateway/connlimit.go, gateway/limits.go,
	// docs/SECURITY.md).
	// Boxes checks BasicAuth credentials of secure boxes; nil: built
	// from Service with Admin.
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
	// AuthFailures limits refused credentials per client address (429
	// beyond); nil: no limit.
	AuthFailures *auth.FailureLimiter
	// TrustedProxies are the proxies whose X-Forwarded-For header names
	// the client address; empty: the peer address is the client's.
	TrustedProxies []netip.Prefix
	// MaxConnections caps the open sockets of the node, idle keep-alive
	// connections and hijacked streams included, with a reserve on top for
	// the operational routes and authenticated requests (connlimit.go;
	// 503 beyond); 0: unlimited. The http.Servers must be given to
	// TrackConnections.
	MaxConnections int
	// WSAuthTimeout: with RequireAuth, a /ws socket that has neither
	// authenticated (a valid token at the handshake or in an auth frame)
	// nor subscribed successfully within it is closed with 1008; 0: no
	// timeout.
	WSAuthTimeout time.Duration
	// HeartbeatInterval is the base interval of stream heartbeats (SSE
	// comments, WebSocket pings), jittered ±25 %; 0: 30 s.
	HeartbeatInterval time.Duration
	// WSPongTimeout is how long a WebSocket ping waits for its pong before
	// the connection is closed (popbox_stream_ends_total reason
	// pong_timeout); 0: 30 s.
	WSPongTimeout time.Duration
	// CORSOrigins are the allowed browser origins ("*" for any); empty:
	// no CORS. WSOriginPatterns default to them.
	CORSOrigins []string

	// Bounds (docs/SECURITY.md); zero values take the defaults of
	// config.Default.
	Bounds Bounds
}

// Bounds limit what one request may cost the node.
type Bounds struct {
	// MaxMetaBytes bounds a transaction's extra metadata (bytes).
	MaxMetaBytes int
	// PeekMax caps ?max= of pop, poprel and peek.
	PeekMax int
	// MaxAnswerBytes bounds the encoded size of one pop or peek answer
	// (one message is always answered).
	MaxAnswerBytes int64
	// ReadTimeout bounds the time a client takes to send a request body.
	ReadTimeout time.Duration
}

func (b Bounds) withDefaults() Bounds {
	if b.MaxMetaBytes <= 0 {
		b.MaxMetaBytes = request.DefaultMaxMetaBytes
	}
	if b.PeekMax <= 0 {
		b.PeekMax = request.DefaultMax
	}
	if b.MaxAnswerBytes <= 0 {
		b.MaxAnswerBytes = 16 << 20
	}
	if b.ReadTimeout <= 0 {
		b.ReadTimeout = 30 * time.Second
	}
	return b
}

// Server serves the PopBox HTTP API.
type Server struct {
	opts    Options
	svc     *delivery.Service
	m       *Metrics
	log     *slog.Logger
	started time.Time
	closing chan struct{} // closed by Shutdown
	once    sync.Once
	streams streamSet   // streams running detached from their handler
	live    liveStreams // open streams, for shutdown and outage
	sec     *security
	endWarn *endWarnings // rate limit of the warnings about abnormal stream ends
}

// New makes a Server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 8 << 20
	}
	if o.IdempotencyWindow <= 0 {
		o.IdempotencyWindow = 10 * time.Minute
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = defaultHeartbeatInterval
	}
	if o.WSPongTimeout <= 0 {
		o.WSPongTimeout = defaultPongTimeout
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	o.Bounds = o.Bounds.withDefaults()
	o.WSOriginPatterns = wsOriginPatterns(o.WSOriginPatterns, o.CORSOrigins)
	o.Metrics.ConnLimit.Set(float64(max(o.MaxConnections, 0)))
	s := &Server{opts: o, svc: o.Service, m: o.Metrics, log: o.Logger, started: time.Now(), closing: make(chan struct{}),
		sec: newSecurity(o), endWarn: newEndWarnings(endWarnInterval)}
	if svc := o.Service; svc != nil {
		o.Metrics.SetRedisReachable(svc.Reachable)
		o.Metrics.addDelivery(svc.Metrics())
		// Every open stream ends on shutdown and on a Redis outage
		// (startStream checks both once it is in the list).
		context.AfterFunc(svc.ShutdownContext(), func() { s.live.post(evShutdown) })
		svc.OnOutage(func() { s.live.post(evOutage) })
	}
	return s
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
	e.IPExtractor = ipExtractor(s.opts.TrustedProxies)
	e.Pre(normalizePath)
	e.Pre(headAsGet)
	e.Use(restoreHead)
	e.Use(s.recoverer(), requestIDs(), s.accessLog, s.connLimit)
	if cors := corsMiddleware(s.opts.CORSOrigins); cors != nil {
		e.Use(cors)
	}
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
	e.GET("/node/queues", s.nodeQueues)
	e.GET("/openapi.json", echo.WrapHandler(openapi.Handler()))
	ui := echo.WrapHandler(http.StripPrefix("/ui", uiHandler()))
	e.GET("/ui", ui)
	e.GET("/ui/*", ui)
	return e
}

// Routes lists the routes the gateway registers (the same on both ports):
// the OpenAPI contract test compares them with the description's paths.
func (s *Server) Routes() []*echo.Route {
	e, ok := s.Handler(false).(*echo.Echo)
	if !ok {
		return nil
	}
	return e.Routes()
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
func namespace(c echo.Context) domain.Namespace { return domain.NewNamespace(orgOf(c), isSecure(c)) }

// pathParam returns a path parameter, percent-decoded exactly once.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// queueParam returns the queue of the request (its namespace and the id
// of the path), or writes a 400.
func queueParam(c echo.Context) (domain.Queue, error) {
	id, err := pathParam(c, "id")
	if err == nil {
		err = request.ValidQueueID(id)
	}
	if err != nil {
		_ = errorsJSON(c, http.StatusBadRequest, err.Error())
		return domain.Queue{}, errHandled
	}
	return namespace(c).Queue(id), nil
}

// queueRoute returns the queue of a queue route once the request may use
// it (authorizeQueue); otherwise it has written the answer.
func (s *Server) queueRoute(c echo.Context) (domain.Queue, error) {
	q, err := queueParam(c)
	if err != nil {
		return q, err
	}
	return q, s.authorizeQueue(c, q)
}

// errorsJSON writes {"errors": [...]} with a status.
func errorsJSON(c echo.Context, status int, errs ...string) error {
	return c.JSON(status, map[string][]string{"errors": errs})
}

// badBody answers 400 with the problems of a JSON request body. When the
// request did not say Content-Type: application/json the answer also has a
// "hint" saying so; the "errors" strings stay as the classic API has them.
func badBody(c echo.Context, errs ...string) error {
	if request.IsJSONContentType(c.Request().Header.Get(echo.HeaderContentType)) {
		return errorsJSON(c, http.StatusBadRequest, errs...)
	}
	return c.JSON(http.StatusBadRequest, map[string]any{"errors": errs, "hint": request.HintJSONBody})
}

// errHandled marks an error whose response was already written.
var errHandled = errors.New("response written")

// readBody reads the request body up to the configured limit; over the
// limit it answers 413. The whole body must arrive within
// Bounds.ReadTimeout (408 beyond): a read deadline on this request's
// connection, set only here, so that streams, WebSockets and long polls,
// which read no body, are never cut by it (http.Server.ReadTimeout would
// end their contexts).
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	rc := http.NewResponseController(c.Response())
	timeout := s.opts.Bounds.ReadTimeout
	deadlineSet := rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	r := http.MaxBytesReader(c.Response(), c.Request().Body, s.opts.MaxBody)
	b, err := io.ReadAll(r)
	if deadlineSet && err == nil {
		// Lifted only after a complete body: after a failed read the
		// expired deadline keeps the server from waiting for the rest.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			_ = errorsJSON(c, http.StatusRequestEntityTooLarge, "request body larger than "+itoa(s.opts.MaxBody)+" bytes")
			return nil, errHandled
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.log.LogAttrs(c.Request().Context(), slog.LevelDebug, "slow request body cut", slog.String("route", c.Path()),
				slog.Duration("read_timeout", timeout))
			c.Response().Header().Set(echo.HeaderConnection, "close")
			_ = errorsJSON(c, http.StatusRequestTimeout, "request body not received within "+timeout.String())
			return nil, errHandled
		}
		_ = errorsJSON(c, http.StatusBadRequest, "could not read request body: "+err.Error())
		return nil, errHandled
	}
	return b, nil
}

// storeError answers 500 for a storage failure: a generic text with the
// request id, never Redis' error (it names addresses and internals); the
// log has the error under the same id (the service recorded the failure
// as an error event).
func (s *Server) storeError(c echo.Context, err error) error {
	rid := requestID(c)
	s.log.LogAttrs(c.Request().Context(), slog.LevelError, "storage error", slog.String("id", rid), slog.String("route", c.Path()), slog.Any("err", err))
	msg := "storage error (request id " + rid + ")"
	if errors.Is(err, delivery.ErrReplicasTimeout) {
		// Our own condition, not Redis' text: the client learns that the
		// outcome is unknown because the replicas did not confirm in time.
		msg = "storage error: not acknowledged by the configured replicas in time, outcome unknown (request id " + rid + ")"
	}
	return errorsJSON(c, http.StatusInternalServerError, msg)
}

// requestID is the id of the request (its X-Request-Id answer header).
func requestID(c echo.Context) string { return c.Response().Header().Get(echo.HeaderXRequestID) }

// validRequestID tells whether a client's X-Request-Id is taken as the
// request's id: 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-' (it is
// echoed in answers and logs).
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
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

// recoverer is echo's Recover middleware: a panic in a handler becomes a
// 500 "internal error" (through the error handler) without killing the
// node, logged once with the route and the request id.
func (s *Server) recoverer() echo.MiddlewareFunc {
	return middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisablePrintStack: true,
		LogErrorFunc: func(c echo.Context, err error, _ []byte) error {
			s.log.LogAttrs(c.Request().Context(), slog.LevelError, "panic in handler",
				slog.String("id", requestID(c)), slog.String("route", c.Path()), slog.Any("panic", err))
			return echo.NewHTTPError(http.StatusInternalServerError, "internal error")
		},
	})
}

// requestIDs is echo's RequestID middleware: the X-Request-Id answer
// header carries the client's X-Request-Id when it is valid
// (validRequestID), else a fresh random id; requestID reads it back.
func requestIDs() echo.MiddlewareFunc {
	return middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		Generator: newRequestID,
		RequestIDHandler: func(c echo.Context, rid string) {
			if !validRequestID(rid) {
				c.Response().Header().Set(echo.HeaderXRequestID, newRequestID())
			}
		},
	})
}

// accessLog counts requests and logs them at debug level with their
// request id.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
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
				slog.String("id", requestID(c)), slog.String("method", c.Request().Method), slog.String("route", route),
				slog.String("path", c.Request().URL.Path), slog.Int("status", code),
				slog.Duration("took", time.Since(start)), slog.String("remote", c.RealIP()))
		}
		return nil
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
// that nothing taken from Redis is lost, and waits (until ctx ends) for the
// streams that run detached from their handler (hijacked connections,
// which the HTTP servers' Shutdown does not wait for); call it before
// shutting down the HTTP servers.
func (s *Server) Shutdown(ctx context.Context) {
	s.once.Do(func() { close(s.closing) })
	if s.svc != nil {
		s.svc.Shutdown()
	}
	s.streams.wait(ctx)
}

// ipExtractor is how c.RealIP finds the client address: the peer address,
// or, when it is one of the trusted proxies, the nearest untrusted address
// of X-Forwarded-For (echo's extractor, with none of its default trusted
// ranges: loopback, link-local and private peers are trusted only when
// listed). Without trusted proxies X-Forwarded-For and X-Real-IP are
// ignored, so a client cannot choose the address its failures count
// against.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
