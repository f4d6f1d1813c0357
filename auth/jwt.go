package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MinSecretLen is the shortest HS256 secret accepted, in bytes
	// (RFC 7518 3.2: a key at least as long as the hash output).
	MinSecretLen = 32
	// MinRSABits is the smallest RSA modulus accepted for RS256.
	MinRSABits = 2048
	// MaxTokenLen is the longest token Parse looks at, in bytes.
	MaxTokenLen = 8192

	// ScopeProvision is the scope that authorises provisioning, PUT/DELETE
	// of transactions and the group routes when provisioning auth is on.
	ScopeProvision = "provision"
)

// ErrInvalidToken is the one error of Verifier.Parse: the token is
// malformed, not signed with a configured key and algorithm, expired, or
// fails the audience/issuer checks (API.md 2.3: 401). The wrapped text gives
// the reason, never the token. errors.Is also matches the underlying
// jwt.Err* sentinel.
var ErrInvalidToken = errors.New("invalid token")

// ErrNoJWTKey is returned by NewVerifier when neither a secret nor a public
// key is configured.
var ErrNoJWTKey = errors.New("auth: no JWT secret or public key configured")

// JWTConfig configures a Verifier. At least one of Secret and PublicKeyPEM
// must be set; both may be.
type JWTConfig struct {
	// Secret is the HS256 key (POPBOX_JWT_SECRET), at least MinSecretLen
	// bytes.
	Secret []byte
	// PublicKeyPEM is a PEM public key (the contents of the
	// POPBOX_JWT_PUBLIC_KEY file): a PKIX "PUBLIC KEY" block (RSA, ECDSA
	// P-256/P-384/P-521 or Ed25519), a PKCS #1 "RSA PUBLIC KEY" block or a
	// "CERTIFICATE" whose public key is used. The algorithm follows from
	// the key: RSA → RS256, P-256 → ES256, P-384 → ES384, P-521 → ES512,
	// Ed25519 → EdDSA. Only the first PEM block is read.
	PublicKeyPEM []byte
	// Audience, when set, must be one of the token's `aud` values.
	Audience string
	// Issuer, when set, must equal the token's `iss`.
	Issuer string
	// Leeway is the clock skew allowed for exp, nbf and iat; not negative.
	Leeway time.Duration
}

// Verifier checks JWTs against the configured keys. It is safe for
// concurrent use.
type Verifier struct {
	secret []byte           // HS256 key, nil when not configured
	pub    crypto.PublicKey // nil when not configured
	pubAlg string
	algs   []string
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for cfg. It fails when no key is
// configured, the secret is shorter than MinSecretLen, the PEM holds no
// usable public key (a private key, an RSA key under MinRSABits, an
// unsupported key type or curve), or Leeway is negative. Error texts never
// contain key material.
func NewVerifier(cfg JWTConfig) (*Verifier, error) {
	if len(cfg.Secret) == 0 && len(cfg.PublicKeyPEM) == 0 {
		return nil, ErrNoJWTKey
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: negative JWT leeway %s", cfg.Leeway)
	}
	v := &Verifier{}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < MinSecretLen {
			return nil, fmt.Errorf("auth: JWT secret is %d bytes, need at least %d", len(cfg.Secret), MinSecretLen)
		}
		v.secret = slices.Clone(cfg.Secret)
		v.algs = append(v.algs, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeyPEM) > 0 {
		pub, alg, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("auth: JWT public key: %w", err)
		}
		v.pub, v.pubAlg = pub, alg
		v.algs = append(v.algs, alg)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithStrictDecoding(),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Algorithms returns the accepted signing algorithms ("HS256" and/or the
// public key's), for logging.
func (v *Verifier) Algorithms() []string { return slices.Clone(v.algs) }

// parsePublicKey reads the first PEM block of data and picks the algorithm
// from the key's type.
func parsePublicKey(data []byte) (crypto.PublicKey, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block found")
	}
	var (
		pub any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, "", fmt.Errorf("PEM block %q is a private key; configure the public key", block.Type)
		}
		return nil, "", fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("parse %q block: %w", block.Type, err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return nil, "", fmt.Errorf("RSA key of %d bits, need at least %d", k.N.BitLen(), MinRSABits)
		}
		return k, jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, jwt.SigningMethodES256.Alg(), nil
		case elliptic.P384():
			return k, jwt.SigningMethodES384.Alg(), nil
		case elliptic.P521():
			return k, jwt.SigningMethodES512.Alg(), nil
		}
		return nil, "", fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return k, jwt.SigningMethodEdDSA.Alg(), nil
	}
	return nil, "", fmt.Errorf("unsupported public key type %T", pub)
}

// Claims are the claims of a PopBox token (API.md 2.3).
type Claims struct {
	// Queues lists the queue ids the token opens: an exact id, a prefix
	// followed by '*' (e.g. "dev-*"), or "*" for every queue. A plain
	// entry names unsecured queues only; an entry for secure boxes (the
	// SEC: namespace) carries the prefix SecurePrefix ("SEC:box1",
	// "SEC:user-*", "SEC:*").
	Queues []string `json:"queues"`
	// Org is the tenant the token belongs to; empty for the namespace
	// without an /org prefix.
	Org string `json:"org,omitempty"`
	// Scope is a space-separated list of scopes, e.g. "provision".
	Scope string `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// SecurePrefix starts a queues entry that names secure (SEC:) queues.
const SecurePrefix = "SEC:"

// AllowsQueue reports whether the token opens queue id of tenant org (""
// for requests without an /org prefix); secure tells whether the queue is
// a secure box (the SEC: namespace of the TLS port).
//
// The token's org must equal org exactly: a token with an org opens only
// that tenant's queues, and a token without an org opens only queues
// outside every /org prefix. Within the tenant, id must match one entry of
// Queues of its namespace: entries starting with SecurePrefix match secure
// queues (with the prefix removed), every other entry matches unsecured
// queues only, so a token for "box1" or "*" never opens the
// password-protected SEC:box1. An entry matches when equal to id, or when
// id starts with its prefix if the entry ends in '*' ("*" matches every
// id). A '*' elsewhere is an ordinary character. An empty id never matches.
func (c *Claims) AllowsQueue(org string, secure bool, id string) bool {
	if c == nil || id == "" || c.Org != org {
		return false
	}
	for _, q := range c.Queues {
		rest, isSecure := strings.CutPrefix(q, SecurePrefix)
		if isSecure != secure {
			continue
		}
		if prefix, ok := strings.CutSuffix(rest, "*"); ok {
			if strings.HasPrefix(id, prefix) {
				return true
			}
		} else if rest == id {
			return true
		}
	}
	return false
}

// HasScope reports whether s is one of the space-separated scopes of the
// token. An empty s is never granted.
func (c *Claims) HasScope(s string) bool {
	if c == nil || s == "" {
		return false
	}
	return slices.Contains(strings.Fields(c.Scope), s)
}

// Parse verifies token and returns its claims. The token must be signed
// with one of the configured algorithms, each verified only with its own
// key (an HS256 token is checked against the configured secret and nothing
// else, so signing with the public key's bytes — algorithm confusion — and
// `alg: none` fail). `exp` is required; `nbf` and `iat` are honoured when
// present; `aud` and `iss` are required and checked when configured. A
// token with a `crit` header is refused (no extension is understood).
//
// Every error wraps ErrInvalidToken.
func (v *Verifier) Parse(token string) (*Claims, error) {
	switch {
	case token == "":
		return nil, invalid("empty", nil)
	case len(token) > MaxTokenLen:
		return nil, invalid(fmt.Sprintf("longer than %d bytes", MaxTokenLen), nil)
	}
	claims := &Claims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.key); err != nil {
		return nil, invalid(reason(err), err)
	}
	return claims, nil
}

// errWrongKey is returned by key when no configured key fits the token.
var errWrongKey = errors.New("no configured key for the token's algorithm")

// errCrit is returned by key for a token with a crit header.
var errCrit = errors.New("crit header not supported")

// key returns the key of the token's algorithm: the secret for HS256, the
// public key for its algorithm, nothing otherwise.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, errCrit
	}
	alg := t.Method.Alg()
	switch {
	case v.secret != nil && alg == jwt.SigningMethodHS256.Alg():
		return v.secret, nil
	case v.pub != nil && alg == v.pubAlg:
		return v.pub, nil
	}
	return nil, errWrongKey
}

// reasons are the fixed texts of the jwt errors, most specific first.
var reasons = []struct {
	err  error
	text string
}{
	{errCrit, errCrit.Error()},
	{jwt.ErrTokenMalformed, "malformed"},
	{jwt.ErrTokenUnverifiable, "unsupported or missing algorithm"},
	{jwt.ErrTokenSignatureInvalid, "signature invalid or algorithm not accepted"},
	{jwt.ErrTokenExpired, "expired"},
	{jwt.ErrTokenNotValidYet, "not valid yet"},
	{jwt.ErrTokenUsedBeforeIssued, "issued in the future"},
	{jwt.ErrTokenRequiredClaimMissing, "missing required claim (exp, or aud/iss when configured)"},
	{jwt.ErrTokenInvalidAudience, "wrong audience"},
	{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
	{jwt.ErrInvalidType, "claim of the wrong type"},
}

// reason turns a jwt error into a fixed text that cannot echo the token:
// the text of the first of reasons it is, else "invalid claims".
func reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.text
		}
	}
	return "invalid claims"
}

// tokenError is an ErrInvalidToken with a fixed reason and the jwt cause.
type tokenError struct {
	reason string
	cause  error
}

// invalid returns an ErrInvalidToken with reason and the jwt error cause.
func invalid(reason string, cause error) error { return &tokenError{reason: reason, cause: cause} }

// Error returns "invalid token: <reason>".
func (e *tokenError) Error() string { return ErrInvalidToken.Error() + ": " + e.reason }

// Unwrap returns ErrInvalidToken and the jwt error.
func (e *tokenError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalidToken}
	}
	return []error{ErrInvalidToken, e.cause}
}
