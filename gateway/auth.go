package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/auth"
	"github.com/popbox/popbox/redisq"
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
	boxes     *auth.Boxes
	jwt       *auth.Verifier
	adminOn   bool
	adminUser [sha256.Size]byte
	adminPass [sha256.Size]byte
	limit     *connLimiter
}

// newSecurity builds the security state from the options: a Boxes checker
// over the store when none is given (so the secure port is never open by
// accident), the administrator's digests, the connection limiter.
func newSecurity(o Options) *security {
	sec := &security{
		boxes:     o.Boxes,
		jwt:       o.JWT,
		adminOn:   o.Admin.User != "" && o.Admin.Password != "",
		adminUser: sha256.Sum256([]byte(o.Admin.User)),
		adminPass: sha256.Sum256([]byte(o.Admin.Password)),
		limit:     newConnLimiter(o.MaxConnections),
	}
	if sec.boxes == nil && o.Store != nil {
		sec.boxes = auth.NewBoxes(o.Store, redisq.ErrNotFound, o.Admin)
	}
	return sec
}

// isAdmin reports, in constant time, whether user and password are the
// administrator's.
func (sec *security) isAdmin(user, password string) bool {
	if !sec.adminOn {
		return false
	}
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(password))
	return subtle.ConstantTimeCompare(u[:], sec.adminUser[:])&subtle.ConstantTimeCompare(p[:], sec.adminPass[:]) == 1
}

// denied is a refusal of authorizeQueue / authorizeMux / provisioning auth.
type denied struct {
	noBox       bool // 500 "ERROR: Secure Queue does not exist"
	tokenBad    bool // a bearer token was presented and refused
	basic       bool // the route accepts BasicAuth (challenge with Basic)
	internalErr error
}

func (d *denied) Error() string {
	switch {
	case d.internalErr != nil:
		return "internal error"
	case d.noBox:
		return bodyNoBox
	}
	return bodyUnauthorized
}

// acceptsQueryToken tells whether the route may carry its token in the
// access_token query parameter (EventSource and WebSocket routes).
func acceptsQueryToken(c echo.Context) bool {
	p := c.Path()
	return strings.HasSuffix(p, "/events") || strings.HasSuffix(p, "/ws")
}

// bearer returns the request's token ("" when none): the Authorization
// Bearer header, or access_token where acceptsQueryToken allows it.
func bearer(c echo.Context, allowQuery bool) string {
	q := ""
	if allowQuery {
		q = c.QueryParam("access_token")
	}
	return auth.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization), q)
}

// queueAccess decides whether the request may use queue full. It returns
// nil or a *denied.
func (s *Server) queueAccess(c echo.Context, full string) error {
	secure := isSecure(c)
	jwtOn := s.sec.jwt != nil
	if !secure && !(s.opts.RequireAuth && jwtOn) {
		return nil // the plain port is open (classic PopBox)
	}
	ctx := c.Request().Context()
	id := queueID(full)
	tokenTried := false
	if jwtOn {
		if tok := bearer(c, acceptsQueryToken(c)); tok != "" {
			tokenTried = true
			claims, err := s.sec.jwt.Parse(tok)
			switch {
			case err != nil:
				s.authLog(c, full, err.Error()) // "invalid token: <reason>", never the token
			case !claims.AllowsQueue(orgOf(c), id):
				s.authLog(c, full, "token does not allow this queue")
			default:
				return nil
			}
		}
	}
	if !secure {
		return &denied{tokenBad: tokenTried}
	}
	user, pass, ok := auth.ParseBasic(c.Request().Header.Get(echo.HeaderAuthorization))
	if tokenTried && !ok {
		// The token was the credential and it was refused: 401 whether
		// or not a box of that name exists.
		return &denied{tokenBad: true, basic: true}
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
		if ok {
			s.authLog(c, full, "wrong BasicAuth credentials")
		}
		return &denied{tokenBad: tokenTried, basic: true}
	default:
		return &denied{internalErr: err, basic: true}
	}
}

// authorizeQueue checks the credentials a queue route needs (secure port,
// JWT); when access is denied it writes the answer itself (401, 500 of
// API.md 1.5) and returns errHandled.
func (s *Server) authorizeQueue(c echo.Context, full string) error {
	err := s.queueAccess(c, full)
	if err == nil {
		return nil
	}
	s.writeDenied(c, err)
	return errHandled
}

// authorizeMux checks that the connection of a multiplexed WebSocket may
// subscribe to queue full, with the credentials given when it connected.
// The error text goes into an {"op": "error"} frame.
func (s *Server) authorizeMux(c echo.Context, full string) error {
	err := s.queueAccess(c, full)
	var d *denied
	if errors.As(err, &d) && d.internalErr != nil {
		s.log.LogAttrs(c.Request().Context(), slog.LevelError, "authorization failed",
			slog.String("queue", full), slog.Any("err", d.internalErr))
	}
	return err
}

// writeDenied answers a refusal.
func (s *Server) writeDenied(c echo.Context, err error) {
	var d *denied
	if !errors.As(err, &d) {
		d = &denied{internalErr: err}
	}
	switch {
	case d.internalErr != nil:
		s.log.LogAttrs(c.Request().Context(), slog.LevelError, "authorization failed",
			slog.String("route", c.Path()), slog.Any("err", d.internalErr))
		_ = errorsJSON(c, http.StatusInternalServerError, "authorization backend error")
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
		hdr := c.Request().Header.Get(echo.HeaderAuthorization)
		if user, pass, ok := auth.ParseBasic(hdr); ok {
			if s.sec.isAdmin(user, pass) {
				return next(c)
			}
			s.authLog(c, "", "wrong admin credentials")
			s.writeDenied(c, &denied{basic: true})
			return errHandled
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
					return next(c)
				}
			}
		}
		s.writeDenied(c, &denied{basic: s.sec.adminOn, tokenBad: tokenTried})
		return errHandled
	}
}
