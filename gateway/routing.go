package gateway

import (
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// Routing is as forgiving as the original's web framework (Express 3
// defaults, API.md section 0): every classic route answers with or without
// one trailing slash, and the fixed words of its path match
// case-insensitively while ids and org names keep their case. echo's router
// is strict on both, so normalizePath rewrites the path once, before
// routing, instead of every route being registered in several spellings.
//
// The rewrite follows the shape of the classic routes rather than
// lower-casing known words wherever they appear: a queue may be called
// "pop" or "QUEUE", and /queue/POP/Pop is a pop on queue "POP".

// classicWords are the fixed words of the classic routes (section 1) by
// the word they follow: the first segment ("" key), the word after
// /trans/{tid} and the word after /queue/{id}.
var classicWords = map[string][]string{
	"":      {"trans", "queue", "group", "ws"},
	"trans": {"state", "history"},
	"queue": {"pop", "poprel", "ack", "peek", "history", "subscribe", "subscriberel", "events", "ws"},
}

// normalizePath is an echo Pre middleware (it runs before routing) that
// applies normalizeRoute to the request path.
func normalizePath(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		u := c.Request().URL
		if u.RawPath == "" {
			u.Path = normalizeRoute(u.Path)
			return next(c)
		}
		// An escaped path (e.g. an id holding %2F) is routed on RawPath;
		// its decoded form follows it.
		raw := normalizeRoute(u.RawPath)
		if raw != u.RawPath {
			if p, err := url.PathUnescape(raw); err == nil {
				u.RawPath, u.Path = raw, p
			}
		}
		return next(c)
	}
}

// normalizeRoute strips one trailing slash from a classic route (at the
// root or under /org/{org}) and lower-cases its fixed words; any other path
// (/, /ui/..., /metrics...) keeps its spelling except for a trailing slash
// after a word of its own (/healthz/).
func normalizeRoute(p string) string {
	if len(p) < 2 || p[0] != '/' || routeAsIs(p) {
		return p
	}
	return normalizeWords(p)
}

// normalizeWords is normalizeRoute for any p of at least 2 bytes with a
// leading slash.
func normalizeWords(p string) string {
	segs := strings.Split(p[1:], "/")
	if first := segs[0]; strings.EqualFold(first, "ui") {
		return p // the UI's file server tells /ui/ from /ui itself
	}
	if len(segs) > 1 && segs[len(segs)-1] == "" {
		segs = segs[:len(segs)-1]
	}
	rest := segs
	if len(segs) >= 3 && strings.EqualFold(segs[0], "org") {
		segs[0] = "org"
		rest = segs[2:]
	}
	lowerWord(rest, 0, classicWords[""])
	switch {
	case len(rest) >= 3 && rest[0] == "trans":
		lowerWord(rest, 2, classicWords["trans"])
	case len(rest) == 3 && rest[0] == "queue":
		lowerWord(rest, 2, classicWords["queue"])
	}
	return "/" + strings.Join(segs, "/")
}

// routeAsIs tells whether normalizeRoute leaves p (at least 2 bytes, a
// leading slash) as it is without looking at its words: no trailing slash
// and nothing but ASCII without upper-case letters (strings.EqualFold
// also folds some non-ASCII letters, such as the Kelvin sign, to ASCII
// ones). Such is the path of nearly every request; it then costs no split
// and join (TestRouteAsIs).
func routeAsIs(p string) bool {
	if p[len(p)-1] == '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c >= 0x80 || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

// lowerWord replaces segs[i] by the word of words it equals regardless of
// case, if any.
func lowerWord(segs []string, i int, words []string) {
	for _, w := range words {
		if strings.EqualFold(segs[i], w) {
			segs[i] = w
			return
		}
	}
}
