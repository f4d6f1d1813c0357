// Package auth checks credentials for the gateway: BasicAuth credentials of
// secure boxes and of the administrator (API.md 1.5), and JSON Web Tokens
// (API.md 2.3).
//
// The package has no HTTP framework dependency. The gateway extracts the
// credentials from a request with [ParseBasic] and [BearerToken], checks them
// with [Boxes.Check] or [Verifier.Parse], and maps the sentinel errors to
// answers:
//
//   - [ErrUnauthorized] → 401 "Unauthorized" with WWW-Authenticate
//   - [ErrBoxNotFound]  → 500 "ERROR: Secure Queue does not exist"
//   - [ErrInvalidToken] → 401
//   - any other error   → 500 (a store failure; log it, do not echo it)
//
// No error produced here contains a password, a password hash or a token.
package auth
