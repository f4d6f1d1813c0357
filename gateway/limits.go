package gateway

import (
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// corsMiddleware is echo's CORS middleware for the configured origins:
// "*" for any, "scheme://host[:port]" exactly, or with path.Match
// wildcards ("https://*.example.com" for any subdomain), compared without
// case. With no origins configured there is no CORS at all (browsers then
// refuse cross-origin reads). Credentials mode is never allowed: the API
// authenticates with explicit Authorization headers, not cookies.
func corsMiddleware(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return nil
	}
	cfg := middleware.CORSConfig{
		AllowMethods:  []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete},
		AllowHeaders:  []string{"Authorization", "Content-Type", "Accept", "Last-Event-ID", "X-Request-ID", "Idempotency-Key"},
		ExposeHeaders: []string{"X-Request-ID", "WWW-Authenticate", "Retry-After"},
		MaxAge:        600,
	}
	var patterns []string
	for _, o := range origins {
		o = strings.ToLower(strings.TrimSpace(o))
		if o == "*" {
			// Access-Control-Allow-Origin: * (echo answers "*" itself).
			cfg.AllowOrigins = []string{"*"}
			return middleware.CORSWithConfig(cfg)
		}
		patterns = append(patterns, o)
	}
	// A matcher function rather than echo's AllowOrigins patterns: those
	// compare case-sensitively and with regexp semantics ("*" becomes
	// ".*"); the configured origins keep the documented path.Match
	// meaning, compared without case.
	cfg.AllowOriginFunc = func(origin string) (bool, error) {
		origin = strings.ToLower(origin)
		for _, p := range patterns {
			if ok, _ := path.Match(p, origin); ok || p == origin {
				return true, nil
			}
		}
		return false, nil
	}
	return middleware.CORSWithConfig(cfg)
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
