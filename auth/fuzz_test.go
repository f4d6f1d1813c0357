package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzParseClaims feeds arbitrary strings to Verifier.Parse (HS256 and
// EdDSA configured). Parse must never panic, every error must wrap
// ErrInvalidToken and not echo the input, and an accepted token must carry
// a valid signature by one of the test keys and an exp in the future.
func FuzzParseClaims(f *testing.F) {
	k := keys()
	v := newVerifier(f, JWTConfig{Secret: k.secret, PublicKeyPEM: pkixPEM(f, k.ed.Public()), Audience: "popbox", Issuer: "popbox-test"})

	hs := sign(f, jwt.SigningMethodHS256, k.secret, good())
	eddsa := sign(f, jwt.SigningMethodEdDSA, k.ed, good())
	parts := strings.Split(hs, ".")
	for _, seed := range []string{
		hs,
		eddsa,
		sign(f, jwt.SigningMethodEdDSA, k.edOther, good()),
		sign(f, jwt.SigningMethodHS256, pkixPEM(f, k.ed.Public()), good()),
		b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".",
		b64(`{"alg":"HS256","crit":["b64"]}`) + "." + parts[1] + "." + parts[2],
		parts[0] + "." + parts[1] + ".",
		parts[0] + "..." + parts[2],
		"",
		"..",
		"a.b.c",
		"Bearer " + hs,
		strings.Repeat("A", 100) + "." + strings.Repeat("B", 100) + "." + strings.Repeat("C", 43),
		b64(`{"alg":"HS256"}`) + "." + b64(`{"exp":1e400}`) + "." + parts[2],
		b64(`{"alg":"EdDSA"}`) + "." + b64(`{"queues":null,"exp":-1}`) + ".",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Parse(token)
		if err != nil {
			if c != nil {
				t.Fatal("claims returned with an error")
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err %v does not wrap ErrInvalidToken", err)
			}
			if len(token) > 40 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q echoes the token", err)
			}
			return
		}
		if c == nil || c.ExpiresAt == nil || !c.ExpiresAt.After(time.Now().Add(-time.Minute)) {
			t.Fatalf("accepted claims without a valid exp: %+v", c)
		}
		if !signedByTestKey(token, k) {
			t.Fatalf("accepted a token not signed by a test key: %q", token)
		}
	})
}

// signedByTestKey verifies token's signature independently of Parse: HS256
// with the test secret or EdDSA with the test Ed25519 key.
func signedByTestKey(token string, k *testKeys) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return false
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return false
	}
	signed := parts[0] + "." + parts[1]
	switch h.Alg {
	case "HS256":
		return jwt.SigningMethodHS256.Verify(signed, sig, k.secret) == nil
	case "EdDSA":
		return ed25519.Verify(k.ed.Public().(ed25519.PublicKey), []byte(signed), sig)
	}
	return false
}

// FuzzParseBasic checks that ParseBasic never panics, that what it accepts
// re-encodes to the same credentials, and that every user without ':' and
// any password round-trip through a Basic header.
func FuzzParseBasic(f *testing.F) {
	for _, s := range [][3]string{
		{basic("u:p"), "u", "p"},
		{basic("u:p:q"), "user", "pa:ss"},
		{"basic " + base64.StdEncoding.EncodeToString([]byte(":")), "", ""},
		{"Basic !!", "ünï", "cödé"},
		{"Basic", "a b", " "},
		{"Bearer x", "x", "\x00"},
		{"", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, header, user, pass string) {
		u, p, ok := ParseBasic(header)
		if !ok {
			if u != "" || p != "" {
				t.Fatalf("not ok but returned %q, %q", u, p)
			}
		} else {
			if strings.Contains(u, ":") {
				t.Fatalf("user %q contains ':'", u)
			}
			u2, p2, ok2 := ParseBasic(basic(u + ":" + p))
			if !ok2 || u2 != u || p2 != p {
				t.Fatalf("re-encoding %q, %q gave %q, %q, %v", u, p, u2, p2, ok2)
			}
		}
		if strings.Contains(user, ":") {
			return
		}
		u, p, ok = ParseBasic(basic(user + ":" + pass))
		if !ok || u != user || p != pass {
			t.Fatalf("round trip of %q, %q gave %q, %q, %v", user, pass, u, p, ok)
		}
	})
}
