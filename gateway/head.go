package gateway

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// HEAD is answered wherever GET is, by one routing rule instead of a HEAD
// route per GET route (echo routes HEAD only where it was registered, and
// answers 405 elsewhere): headAsGet routes a HEAD request as a GET, and
// restoreHead gives it back its method once the route is found, so the
// handler knows (a HEAD on an SSE route must not start a consumer) and
// net/http sends the GET answer's status and headers without its body.

// keyHead marks a HEAD request routed as a GET.
const keyHead = "popbox.head"

// headAsGet is an echo Pre middleware (it runs before routing).
func headAsGet(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r := c.Request(); r.Method == http.MethodHead {
			r.Method = http.MethodGet
			c.Set(keyHead, true)
		}
		return next(c)
	}
}

// restoreHead runs after routing, first of the route middleware.
func restoreHead(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if head, _ := c.Get(keyHead).(bool); head {
			c.Request().Method = http.MethodHead
		}
		return next(c)
	}
}

// isHead tells whether the request is a HEAD.
func isHead(c echo.Context) bool { return c.Request().Method == http.MethodHead }
