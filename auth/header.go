package auth

import (
	"encoding/base64"
	"strings"
)

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header (scheme matched case-insensitively); when the header is absent,
// uses another scheme or carries an empty token, it returns
// accessTokenQuery, the access_token query parameter (EventSource and
// browser WebSocket cannot set headers).
func BearerToken(authorizationHeader, accessTokenQuery string) string {
	if tok, ok := credentials(authorizationHeader, "Bearer"); ok && tok != "" {
		return tok
	}
	return strings.TrimSpace(accessTokenQuery)
}

// ParseBasic returns the user and password of an "Authorization: Basic
// <base64(user:password)>" header (scheme matched case-insensitively,
// standard padded base64). ok is false for another scheme, bad base64 or a
// decoded value without ':'. The user name is everything before the first
// ':', so it never contains one; the password may.
func ParseBasic(authorizationHeader string) (user, pass string, ok bool) {
	enc, ok := credentials(authorizationHeader, "Basic")
	if !ok {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", false
	}
	return user, pass, true
}

// credentials returns what follows scheme and whitespace in an
// Authorization header value, with surrounding whitespace removed.
func credentials(header, scheme string) (string, bool) {
	header = strings.TrimSpace(header)
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	rest := header[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	return strings.TrimSpace(rest), true
}
