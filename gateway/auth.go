package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/hub/delivery"
	"github.com/popbox/popbox/internal/domain"
)

// Authentication and authorisation of the gateway (API.md 1.5 and 2.3,
// docs/SECURITY.md):
//
//   - Secure port: every queue route and transport needs the BasicAuth
//     credentials of the box or the administrator's, or a valid JWT whose
//     claims allow the queue. Wrong or missing credentials: 401
//     "Unauthorized"; a box that does not exist (and no valid token): 500
//     "ERROR: Secure Queue does not exist".
//   - Plain port: open as in PopBox, unless RequireAuth is on (and a JWT
//     key configured): then a valid JWT allowing the queue is required.
//     BasicAuth is never accepted on the plain port for queues (it would
//     travel in clear text and the plain namespace has no boxes).
//   - Provisioning auth (ProvisionAuth): provisioning, PUT/DELETE of
//     transactions, the group routes and secure box creation need a token
//     with scope "provision" (of the request's org) or the administrator's
//     BasicAuth credentials.
//
// A token is read from "Authorization: Bearer"; the access_token query
// parameter is accepted only on the EventSource and WebSocket routes,
// which cannot set headers (tokens in URLs of other routes would only end
// up in proxy logs). Nothing here logs a password, a hash or a token.

const (
	basicChallenge  = `Basic realm="PopBox"`
	bearerChallenge = `Bearer realm="PopBox"`
	// bodyUnauthorized and bodyNoBox are the exact texts of API.md 1.5.
	bodyUnauthorized = "Unauthorized"
	bodyNoBox        = "ERROR: Secure Queue does not exist"
)

// security is the per-node state of authentication and limits.
type security struct {
	boxes   *auth.Boxes // also verifies the administrator's credentials
	jwt     *auth.Verifier
	adminOn bool
	fails   *auth.FailureLimiter // nil: refused credentials are not limited
	limit   *connLimiter         // nil: no connection limit
}

// newSecurity builds the security state from the options: a Boxes checker
// over the store when none is given (so the secure port is never open by
// accident; it holds the administrator's password hash), the limiter of
// refused credentials, the connection limiter.
func newSecurity(o Options) *security {
	sec := &security{
		boxes:   o.Boxes,
		jwt:     o.JWT,
		adminOn: o.Admin.User != "" && o.Admin.Password != "",
		fails:   o.AuthFailures,
		limit:   newConnLimiter(o.MaxConnections, o.Metrics),
	}
	if sec.boxes == nil && o.Service != nil {
		sec.boxes = auth.NewBoxes(o.Service.Boxes(), delivery.ErrNotFound, o.Admin)
	}
	return sec
}

// isAdmin reports whether user and password are the administrator's
// (bcrypt-verified, auth.Boxes.IsAdmin).
func (sec *security) isAdmin(user, password string) bool {
	return sec.adminOn && sec.boxes != nil && sec.boxes.IsAdmin(user, password)
}

// denied is a refusal of authorizeQueue / authorizeMux / provisioning auth.
type denied struct {
	noBox       bool          // 500 "ERROR: Secure Queue does not exist"
	tokenBad    bool          // a bearer token was presented and refused
	basic       bool          // the route accepts BasicAuth (challenge with Basic)
	credentials bool          // credentials were presented and refused (counts towards the /ws close)
	limited     time.Duration // > 0: too many refused credentials from this address; retry after
	internalErr error
}

// msgTooManyFailures is the answer to a client address over its budget of
// refused credentials.
const msgTooManyFailures = "too many failed authentication attempts from this address"

func (d *denied) Error() string {
	switch {
	case d.internalErr != nil:
		return "internal error"
	case d.limited > 0:
		return msgTooManyFailures
	case d.noBox:
		return bodyNoBox
	}
	return bodyUnauthorized
}

// presentsCredentials tells whether the request carries credentials (an
// Authorization header, or an access_token where the route takes one).
func presentsCredentials(c echo.Context) bool {
	return c.Request().Header.Get(echo.HeaderAuthorization) != "" ||
		acceptsQueryToken(c) && c.QueryParam("access_token") != ""
}

// failureBlocked returns a *denied when the client's address has no refused
// credential left (auth.FailureLimiter): the request is refused before its
// credentials are looked at.
func (s *Server) failureBlocked(c echo.Context) error {
	if blocked, retry := s.sec.fails.Blocked(c.RealIP()); blocked {
		return &denied{limited: max(retry, time.Second)}
	}
	return nil
}

// failed records a refused credential of the request's client address and
// returns d.
func (s *Server) failed(c echo.Context, d *denied) error {
	d.credentials = true
	s.sec.fails.Failed(c.RealIP())
	return d
}

// acceptsQueryToken tells whether the route may carry its token in the
// access_token query parameter (EventSource and WebSocket routes).
func acceptsQueryToken(c echo.Context) bool {
	p := c.Path()
	return strings.HasSuffix(p, "/events") || strings.HasSuffix(p, "/ws")
}

// bearer returns the request's token ("" when none): the one a
// multiplexed WebSocket refreshed in-band, the Authorization Bearer
// header, or access_token where acceptsQueryToken allows it.
func bearer(c echo.Context, allowQuery bool) string {
	if tok, ok := c.Get(keyToken).(string); ok {
		return tok // refreshed in-band on a multiplexed WebSocket
	}
	q := ""
	if allowQuery {
		q = c.QueryParam("access_token")
	}
	return auth.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization), q)
}

// queueAccess decides whether the request may use queue q. It returns
// nil or a *denied.
func (s *Server) queueAccess(c echo.Context, q domain.Queue) error {
	secure := isSecure(c)
	jwtOn := s.sec.jwt != nil
	if !secure && !(s.opts.RequireAuth && jwtOn) {
		return nil // the plain port is open (classic PopBox)
	}
	if presentsCredentials(c) {
		if err := s.failureBlocked(c); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	full := q.String()
	tokenTried := false
	if jwtOn {
		if tok := bearer(c, acceptsQueryToken(c)); tok != "" {
			tokenTried = true
			claims, err := s.sec.jwt.Parse(tok)
			switch {
			case err != nil:
				s.authLog(c, full, err.Error()) // "invalid token: <reason>", never the token
			case !claims.AllowsQueue(orgOf(c), q.Secure(), q.ID):
				s.authLog(c, full, "token does not allow this queue")
			default:
				return nil
			}
		}
	}
	if !secure {
		if tokenTried {
			return s.failed(c, &denied{tokenBad: true})
		}
		return &denied{}
	}
	user, pass, ok := auth.ParseBasic(c.Request().Header.Get(echo.HeaderAuthorization))
	if tokenTried && !ok {
		// The token was the credential and it was refused: 401 whether
		// or not a box of that name exists.
		return s.failed(c, &denied{tokenBad: true, basic: true})
	}
	if s.sec.boxes == nil {
		return &denied{internalErr: errors.New("no box checker configured")}
	}
	err := s.sec.boxes.Check(ctx, full, user, pass)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrBoxNotFound):
		return &denied{noBox: true, basic: true}
	case errors.Is(err, auth.ErrUnauthorized):
		if ok || tokenTried {
			if ok {
				s.authLog(c, full, "wrong BasicAuth credentials")
			}
			return s.failed(c, &denied{tokenBad: tokenTried, basic: true})
		}
		return &denied{basic: true}
	default:
		return &denied{internalErr: err, basic: true}
	}
}

// authorizeQueue checks the credentials a queue route needs (secure port,
// JWT); when access is denied it writes the answer itself (401, 500 of
// API.md 1.5) and returns errHandled.
func (s *Server) authorizeQueue(c echo.Context, q domain.Queue) error {
	err := s.queueAccess(c, q)
	if err == nil {
		return nil
	}
	s.writeDenied(c, err)
	return errHandled
}

// authorizeMux checks that the connection of a multiplexed WebSocket may
// subscribe to queue q, with the credentials given when it connected.
// The error text goes into an {"op": "error"} frame.
func (s *Server) authorizeMux(c echo.Context, q domain.Queue) error {
	err := s.queueAccess(c, q)
	var d *denied
	if errors.As(err, &d) {
		if d.internalErr != nil {
			s.log.LogAttrs(c.Request().Context(), slog.LevelError, "authorization failed",
				slog.String("queue", q.String()), slog.Any("err", d.internalErr))
		}
		s.countDenied(d)
	}
	return err
}

// countDenied counts a refusal in popbox_auth_failures_total (a failure of
// the authorization backend is not a refused credential and is not
// counted).
func (s *Server) countDenied(d *denied) {
	switch {
	case d.internalErr != nil:
	case d.noBox:
		s.m.AuthFailures.WithLabelValues(AuthNoBox).Inc()
	case d.tokenBad:
		s.m.AuthFailures.WithLabelValues(AuthInvalidToken).Inc()
	default:
		s.m.AuthFailures.WithLabelValues(AuthUnauthorized).Inc()
	}
}

// writeDenied answers a refusal.
func (s *Server) writeDenied(c echo.Context, err error) {
	var d *denied
	if !errors.As(err, &d) {
		d = &denied{internalErr: err}
	}
	s.countDenied(d)
	switch {
	case d.internalErr != nil:
		s.log.LogAttrs(c.Request().Context(), slog.LevelError, "authorization failed",
			slog.String("route", c.Path()), slog.Any("err", d.internalErr))
		_ = errorsJSON(c, http.StatusInternalServerError, "authorization backend error")
	case d.limited > 0:
		secs := int64((d.limited + time.Second - 1) / time.Second)
		c.Response().Header().Set("Retry-After", itoa(secs))
		_ = errorsJSON(c, http.StatusTooManyRequests, msgTooManyFailures+": retry after "+itoa(secs)+" s")
	case d.noBox:
		_ = c.String(http.StatusInternalServerError, bodyNoBox)
	default:
		h := c.Response().Header()
		if d.basic {
			h.Add(echo.HeaderWWWAuthenticate, basicChallenge)
		}
		if s.sec.jwt != nil {
			if d.tokenBad {
				h.Add(echo.HeaderWWWAuthenticate, bearerChallenge+`, error="invalid_token"`)
			} else {
				h.Add(echo.HeaderWWWAuthenticate, bearerChallenge)
			}
		}
		_ = c.String(http.StatusUnauthorized, bodyUnauthorized)
	}
}

// authLog records a refused credential at debug level: route, queue and a
// fixed reason, never the credential.
func (s *Server) authLog(c echo.Context, full, reason string) {
	ctx := c.Request().Context()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "credentials refused", slog.String("route", c.Path()),
			slog.String("queue", full), slog.String("reason", reason), slog.String("remote", c.RealIP()))
	}
}

// requireProvision guards provisioning, PUT/DELETE of transactions, the
// group routes and secure box creation when ProvisionAuth is on: a token
// with scope "provision" for the request's org, or the administrator's
// BasicAuth credentials.
func (s *Server) requireProvision(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.opts.ProvisionAuth {
			return next(c)
		}
		if err := s.provisionRights(c); err != nil {
			s.writeDenied(c, err)
			return errHandled
		}
		return next(c)
	}
}

// provisionRights returns nil when the request carries provisioning
// rights for its org: the administrator's BasicAuth credentials or a token
// with scope "provision" of that org; else a *denied (refused credentials
// count towards the client's failure limit).
func (s *Server) provisionRights(c echo.Context) error {
	if presentsCredentials(c) {
		if err := s.failureBlocked(c); err != nil {
			return err
		}
	}
	hdr := c.Request().Header.Get(echo.HeaderAuthorization)
	if user, pass, ok := auth.ParseBasic(hdr); ok {
		if s.sec.isAdmin(user, pass) {
			return nil
		}
		s.authLog(c, "", "wrong admin credentials")
		return s.failed(c, &denied{basic: true})
	}
	tokenTried := false
	if s.sec.jwt != nil {
		if tok := bearer(c, false); tok != "" {
			tokenTried = true
			claims, err := s.sec.jwt.Parse(tok)
			switch {
			case err != nil:
				s.authLog(c, "", err.Error())
			case !claims.HasScope(auth.ScopeProvision):
				s.authLog(c, "", "token lacks scope provision")
			case claims.Org != orgOf(c):
				s.authLog(c, "", "token is for another org")
			default:
				return nil
			}
		}
	}
	d := &denied{basic: s.sec.adminOn, tokenBad: tokenTried}
	if tokenTried {
		_ = s.failed(c, d)
	}
	return d
}

// secureReadRights tells whether the request may read the payload,
// callback and extra metadata of a transaction to the secure boxes fulls
// (API.md 0): the administrator's credentials, provisioning rights for
// the org, the BasicAuth credentials of one of the boxes, or a token
// allowing one of them. Refused credentials count towards the client's
// failure limit; a client over it is refused without a check.
func (s *Server) secureReadRights(c echo.Context, queues []domain.Queue) bool {
	if !presentsCredentials(c) || s.failureBlocked(c) != nil {
		return false
	}
	hdr := c.Request().Header.Get(echo.HeaderAuthorization)
	if user, pass, ok := auth.ParseBasic(hdr); ok {
		if s.sec.boxes == nil {
			return false
		}
		fulls := make([]string, len(queues))
		for i, q := range queues {
			fulls[i] = q.String()
		}
		err := s.sec.boxes.CheckAny(c.Request().Context(), fulls, user, pass)
		switch {
		case err == nil:
			return true
		case errors.Is(err, auth.ErrUnauthorized):
			s.authLog(c, "", "wrong BasicAuth credentials for the transaction's boxes")
			_ = s.failed(c, &denied{basic: true})
		case !errors.Is(err, auth.ErrBoxNotFound):
			s.log.LogAttrs(c.Request().Context(), slog.LevelError, "authorization failed",
				slog.String("route", c.Path()), slog.Any("err", err))
		}
		return false
	}
	if s.sec.jwt == nil {
		return false
	}
	claims, err := s.sec.jwt.Parse(bearer(c, false))
	if err != nil {
		s.authLog(c, "", err.Error())
		_ = s.failed(c, &denied{tokenBad: true})
		return false
	}
	if claims.HasScope(auth.ScopeProvision) && claims.Org == orgOf(c) {
		return true
	}
	for _, q := range queues {
		if claims.AllowsQueue(q.Org(), q.Secure(), q.ID) {
			return true
		}
	}
	s.authLog(c, "", "token allows none of the transaction's queues")
	return false
}
