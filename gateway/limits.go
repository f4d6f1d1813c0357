package gateway

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
)

// connLimiter caps the requests a node serves at once. Every open long
// poll, stream and WebSocket holds one slot for its whole life, so this is
// the number of concurrent client connections in use (idle keep-alive
// connections hold none; the server's IdleTimeout closes them).
type connLimiter struct {
	max int64 // 0: unlimited
	n   atomic.Int64
}

func newConnLimiter(max int) *connLimiter {
	if max < 0 {
		max = 0
	}
	return &connLimiter{max: int64(max)}
}

// limitExempt are the operational routes that are always served, so that
// a node at capacity is still seen as alive and can be observed.
var limitExempt = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// connLimit answers 503 {"errors": ["too many connections"]} (with
// Retry-After and Connection: close) when the node already serves
// MaxConnections requests, and counts the refusal in RejectedConns.
func (s *Server) connLimit(next echo.HandlerFunc) echo.HandlerFunc {
	l := s.sec.limit
	if l.max == 0 {
		return next
	}
	return func(c echo.Context) error {
		if limitExempt[c.Path()] {
			return next(c)
		}
		n := l.n.Add(1)
		defer l.n.Add(-1)
		if n > l.max {
			s.m.RejectedConns.Inc()
			h := c.Response().Header()
			h.Set("Retry-After", "1")
			h.Set(echo.HeaderConnection, "close")
			return errorsJSON(c, http.StatusServiceUnavailable, "too many connections")
		}
		return next(c)
	}
}

// corsMiddleware answers CORS preflights and sets the CORS headers for the
// configured origins: "*" for any, "scheme://host[:port]" exactly, or with
// path.Match wildcards ("https://*.example.com" for any subdomain). With
// no origins configured there is no CORS at all (browsers then refuse
// cross-origin reads). Credentials mode is never allowed: the API
// authenticates with explicit Authorization headers, not cookies.
func corsMiddleware(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return nil
	}
	anyOrigin := false
	var patterns []string
	for _, o := range origins {
		o = strings.ToLower(strings.TrimSpace(o))
		if o == "*" {
			anyOrigin = true
		}
		patterns = append(patterns, o)
	}
	allowed := func(origin string) bool {
		if anyOrigin {
			return true
		}
		origin = strings.ToLower(origin)
		for _, p := range patterns {
			if ok, _ := path.Match(p, origin); ok || p == origin {
				return true
			}
		}
		return false
	}
	const (
		methods = "GET, HEAD, POST, PUT, DELETE"
		headers = "Authorization, Content-Type, Accept, Last-Event-ID, X-Request-ID"
		expose  = "X-Request-ID, WWW-Authenticate, Retry-After"
	)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			h := c.Response().Header()
			origin := req.Header.Get(echo.HeaderOrigin)
			preflight := req.Method == http.MethodOptions && req.Header.Get(echo.HeaderAccessControlRequestMethod) != ""
			h.Add(echo.HeaderVary, echo.HeaderOrigin)
			if origin == "" || !allowed(origin) {
				if preflight {
					// No CORS headers: the browser refuses the request.
					return c.NoContent(http.StatusNoContent)
				}
				return next(c)
			}
			allow := origin
			if anyOrigin {
				allow = "*"
			}
			h.Set(echo.HeaderAccessControlAllowOrigin, allow)
			if !preflight {
				h.Set(echo.HeaderAccessControlExposeHeaders, expose)
				return next(c)
			}
			h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestMethod)
			h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestHeaders)
			h.Set(echo.HeaderAccessControlAllowMethods, methods)
			h.Set(echo.HeaderAccessControlAllowHeaders, headers)
			h.Set(echo.HeaderAccessControlMaxAge, "600")
			return c.NoContent(http.StatusNoContent)
		}
	}
}

// wsOriginPatterns turns CORS origins into coder/websocket origin
// patterns: "scheme://host[:port]" patterns match the Origin's scheme and
// host exactly (with path.Match wildcards, so "https://*.example.com" is
// any subdomain), and "*" allows every origin. The request's own host is
// always allowed by the library. Explicit patterns win.
func wsOriginPatterns(explicit, cors []string) []string {
	if len(explicit) > 0 {
		return explicit
	}
	var out []string
	for _, o := range cors {
		o = strings.TrimSpace(o)
		if o == "*" {
			return []string{"*"}
		}
		if u, err := url.Parse(o); err == nil && u.Host != "" {
			out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
			continue
		}
		// "https://*.example.com" does not parse as a URL host on every
		// Go version; keep it as written.
		if strings.Contains(o, "://") {
			out = append(out, strings.ToLower(o))
		}
	}
	return out
}
