package gateway

import (
	"time"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/internal/domain"
)

// Token expiry on long-lived streams (API.md 2.2, 2.3; docs/SECURITY.md):
// a stream whose queue was opened by a JWT ends when that token expires,
// unless the multiplexed WebSocket refreshed its token in-band
// ({"op": "auth", "token": "..."}). The deadline is one timer per
// connection (stream.expiry, posting evExpiry), not a goroutine.

// keyToken keeps the token a multiplexed WebSocket gave in-band: it
// replaces the handshake's token for every later check (bearer).
const keyToken = "popbox.token"

// tokenExpiry returns when the credential that opens queue full for this
// request expires: the token's exp when the request needs credentials
// (secure port, or RequireAuth on the plain port) and its token allows
// the queue; the zero time when the queue is opened otherwise (open plain
// port, Basic credentials), which never expires on its own.
func (s *Server) tokenExpiry(c echo.Context, q domain.Queue) time.Time {
	if s.sec.jwt == nil || (!isSecure(c) && !s.opts.RequireAuth) {
		return time.Time{}
	}
	tok := bearer(c, acceptsQueryToken(c))
	if tok == "" {
		return time.Time{}
	}
	claims, err := s.sec.jwt.Parse(tok)
	if err != nil || claims.ExpiresAt == nil {
		return time.Time{}
	}
	if !claims.AllowsQueue(orgOf(c), q.Secure(), q.ID) {
		return time.Time{}
	}
	return claims.ExpiresAt.Time
}

// expireAt makes the stream end (endTokenExpired) at t unless it already
// ends earlier; a zero t changes nothing.
func (st *stream) expireAt(t time.Time) {
	if t.IsZero() || (st.expiry != nil && !st.expires.After(t)) {
		return
	}
	st.setExpiry(t)
}

// setExpiry sets the stream's deadline to t (none when t is zero).
func (st *stream) setExpiry(t time.Time) {
	st.expires = t
	switch {
	case t.IsZero():
		if st.expiry != nil {
			st.expiry.Stop()
			st.expiry = nil
		}
	case st.expiry == nil:
		st.expiry = time.AfterFunc(time.Until(t), func() { st.post(evExpiry, true) })
	default:
		st.expiry.Reset(time.Until(t))
	}
}

// refreshToken is the in-band {"op": "auth", "token": ...} of the
// multiplexed WebSocket: the new token must be valid and, with the
// connection's other credentials, authorise every current subscription;
// then it replaces the connection's token for later subscriptions and
// the stream's deadline becomes its expiry. A refused token changes
// nothing (the old deadline stays). It returns the new deadline (zero:
// no subscription depends on a token) or the refusal's text.
func (s *Server) refreshToken(c echo.Context, st *stream, tok string) (time.Time, string) {
	if s.sec.jwt == nil {
		return time.Time{}, "auth: no JWT key is configured"
	}
	if _, err := s.sec.jwt.Parse(tok); err != nil {
		return time.Time{}, "auth: " + err.Error()
	}
	old := c.Get(keyToken)
	c.Set(keyToken, tok)
	for _, sub := range st.subs {
		if err := s.queueAccess(c, sub.q); err != nil {
			c.Set(keyToken, old)
			return time.Time{}, "auth: the token does not allow queue " + sub.q.ID
		}
	}
	var until time.Time
	for _, sub := range st.subs {
		if exp := s.tokenExpiry(c, sub.q); !exp.IsZero() && (until.IsZero() || exp.Before(until)) {
			until = exp
		}
	}
	st.setExpiry(until)
	return until, ""
}
