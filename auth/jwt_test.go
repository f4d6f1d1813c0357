package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKeys are generated once per test binary.
type testKeys struct {
	secret []byte
	rsa    *rsa.PrivateKey
	ec256  *ecdsa.PrivateKey
	ec384  *ecdsa.PrivateKey
	ed     ed25519.PrivateKey
	// other keys of the same types, for "signed by someone else"
	rsaOther *rsa.PrivateKey
	edOther  ed25519.PrivateKey
}

var keys = sync.OnceValue(func() *testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	k := &testKeys{secret: []byte("0123456789abcdef0123456789abcdef-test-secret")}
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	_, k.edOther, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// pkixPEM encodes pub as a PKIX "PUBLIC KEY" block.
func pkixPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// sign signs claims with method and key.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// good returns valid claims for queue "q1" expiring in an hour.
func good() *Claims {
	return &Claims{
		Queues: []string{"q1", "dev-*"},
		Scope:  "consume",
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "popbox-test",
			Audience:  jwt.ClaimStrings{"popbox"},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
			IssuedAt:  jwt.NewNumericDate(time.Now()),
		},
	}
}

// b64 is base64url without padding.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// payload returns the JSON of c, base64url encoded.
func payload(t testing.TB, c any) string {
	t.Helper()
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(j)
}

// hmacToken signs header.payload with HS256 and key by hand.
func hmacToken(t testing.TB, header, body string, key []byte) string {
	t.Helper()
	in := b64(header) + "." + body
	sig, err := jwt.SigningMethodHS256.Sign(in, key)
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func newVerifier(t testing.TB, cfg JWTConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseValidPerAlgorithm(t *testing.T) {
	k := keys()
	rsaPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jwt"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.ed.Public(), k.ed)
	if err != nil {
		t.Fatal(err)
	}
	edCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	for _, tc := range []struct {
		name    string
		cfg     JWTConfig
		method  jwt.SigningMethod
		key     any
		wantAlg []string
	}{
		{"HS256", JWTConfig{Secret: k.secret}, jwt.SigningMethodHS256, k.secret, []string{"HS256"}},
		{"RS256", JWTConfig{PublicKeyPEM: pkixPEM(t, &k.rsa.PublicKey)}, jwt.SigningMethodRS256, k.rsa, []string{"RS256"}},
		{"RS256 PKCS1 PEM", JWTConfig{PublicKeyPEM: rsaPKCS1}, jwt.SigningMethodRS256, k.rsa, []string{"RS256"}},
		{"ES256", JWTConfig{PublicKeyPEM: pkixPEM(t, &k.ec256.PublicKey)}, jwt.SigningMethodES256, k.ec256, []string{"ES256"}},
		{"ES384", JWTConfig{PublicKeyPEM: pkixPEM(t, &k.ec384.PublicKey)}, jwt.SigningMethodES384, k.ec384, []string{"ES384"}},
		{"EdDSA", JWTConfig{PublicKeyPEM: pkixPEM(t, k.ed.Public())}, jwt.SigningMethodEdDSA, k.ed, []string{"EdDSA"}},
		{"EdDSA certificate", JWTConfig{PublicKeyPEM: edCert}, jwt.SigningMethodEdDSA, k.ed, []string{"EdDSA"}},
		{"both, HS256 token", JWTConfig{Secret: k.secret, PublicKeyPEM: pkixPEM(t, &k.rsa.PublicKey)},
			jwt.SigningMethodHS256, k.secret, []string{"HS256", "RS256"}},
		{"both, RS256 token", JWTConfig{Secret: k.secret, PublicKeyPEM: pkixPEM(t, &k.rsa.PublicKey)},
			jwt.SigningMethodRS256, k.rsa, []string{"HS256", "RS256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Audience, tc.cfg.Issuer = "popbox", "popbox-test"
			v := newVerifier(t, tc.cfg)
			if got := v.Algorithms(); strings.Join(got, ",") != strings.Join(tc.wantAlg, ",") {
				t.Errorf("algorithms %v, want %v", got, tc.wantAlg)
			}
			c, err := v.Parse(sign(t, tc.method, tc.key, good()))
			if err != nil {
				t.Fatal(err)
			}
			if !c.AllowsQueue("", false, "q1") || !c.AllowsQueue("", false, "dev-7") || c.AllowsQueue("", false, "q2") || !c.HasScope("consume") {
				t.Errorf("claims %+v", c)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	k := keys()
	rsaPEM := pkixPEM(t, &k.rsa.PublicKey)
	hs := newVerifier(t, JWTConfig{Secret: k.secret, Audience: "popbox", Issuer: "popbox-test"})
	rs := newVerifier(t, JWTConfig{PublicKeyPEM: rsaPEM, Audience: "popbox", Issuer: "popbox-test"})
	both := newVerifier(t, JWTConfig{Secret: k.secret, PublicKeyPEM: rsaPEM})
	ed := newVerifier(t, JWTConfig{PublicKeyPEM: pkixPEM(t, k.ed.Public())})
	es := newVerifier(t, JWTConfig{PublicKeyPEM: pkixPEM(t, &k.ec256.PublicKey)})

	with := func(f func(c *Claims)) *Claims { c := good(); f(c); return c }
	valid := sign(t, jwt.SigningMethodHS256, k.secret, good())
	parts := strings.Split(valid, ".")
	noneHeader := b64(`{"alg":"none","typ":"JWT"}`)

	flip := func(s string, i int) string { // change one base64url character
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}

	for _, tc := range []struct {
		name  string
		v     *Verifier
		token string
		want  error // a jwt sentinel the error must also match, or nil
	}{
		{"expired", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) {
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
		})), jwt.ErrTokenExpired},
		{"missing exp", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.ExpiresAt = nil })), jwt.ErrTokenRequiredClaimMissing},
		{"not valid yet", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) {
			c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
		})), jwt.ErrTokenNotValidYet},
		{"wrong audience", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other"} })), jwt.ErrTokenInvalidAudience},
		{"missing audience", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Audience = nil })), jwt.ErrTokenRequiredClaimMissing},
		{"wrong issuer", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Issuer = "evil" })), jwt.ErrTokenInvalidIssuer},
		{"missing issuer", hs, sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Issuer = "" })), jwt.ErrTokenRequiredClaimMissing},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-32b"), good()), jwt.ErrTokenSignatureInvalid},
		{"RS256 token, HS256 configured", hs, sign(t, jwt.SigningMethodRS256, k.rsa, good()), jwt.ErrTokenSignatureInvalid},
		{"RS256 by another key", rs, sign(t, jwt.SigningMethodRS256, k.rsaOther, good()), jwt.ErrTokenSignatureInvalid},
		{"RS384 with the configured key", rs, sign(t, jwt.SigningMethodRS384, k.rsa, good()), jwt.ErrTokenSignatureInvalid},
		{"PS256 with the configured key", rs, sign(t, jwt.SigningMethodPS256, k.rsa, good()), jwt.ErrTokenSignatureInvalid},
		{"EdDSA by another key", ed, sign(t, jwt.SigningMethodEdDSA, k.edOther, good()), jwt.ErrTokenSignatureInvalid},
		{"ES384 token, ES256 configured", es, sign(t, jwt.SigningMethodES384, k.ec384, good()), jwt.ErrTokenSignatureInvalid},
		{"EdDSA token, ES256 configured", es, sign(t, jwt.SigningMethodEdDSA, k.ed, good()), jwt.ErrTokenSignatureInvalid},

		// Algorithm confusion: HMAC keyed with the public key's PEM bytes.
		{"alg confusion, RS256 only", rs, sign(t, jwt.SigningMethodHS256, rsaPEM, good()), jwt.ErrTokenSignatureInvalid},
		{"alg confusion, both configured", both, sign(t, jwt.SigningMethodHS256, rsaPEM, good()), jwt.ErrTokenSignatureInvalid},
		{"alg confusion, DER bytes", both, sign(t, jwt.SigningMethodHS256, mustDER(t, &k.rsa.PublicKey), good()), jwt.ErrTokenSignatureInvalid},

		// alg none, crafted by hand.
		{"alg none, empty signature", hs, noneHeader + "." + parts[1] + ".", jwt.ErrTokenSignatureInvalid},
		{"alg none, both", both, noneHeader + "." + parts[1] + ".", jwt.ErrTokenSignatureInvalid},
		{"alg none, kept signature", hs, noneHeader + "." + parts[1] + "." + parts[2], jwt.ErrTokenSignatureInvalid},
		{"alg None", hs, b64(`{"alg":"None"}`) + "." + parts[1] + ".", jwt.ErrTokenUnverifiable},
		{"alg missing", hs, b64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2], jwt.ErrTokenUnverifiable},
		{"alg not a string", hs, b64(`{"alg":["HS256"]}`) + "." + parts[1] + "." + parts[2], jwt.ErrTokenUnverifiable},
		{"crit header", hs, hmacToken(t, `{"alg":"HS256","crit":["exp"]}`, parts[1], k.secret), nil},

		{"tampered signature", hs, parts[0] + "." + parts[1] + "." + flip(parts[2], 3), jwt.ErrTokenSignatureInvalid},
		{"truncated signature", hs, parts[0] + "." + parts[1] + "." + parts[2][:12], jwt.ErrTokenSignatureInvalid},
		{"no signature", hs, parts[0] + "." + parts[1] + ".", jwt.ErrTokenSignatureInvalid},
		{"tampered payload", hs, parts[0] + "." + payload(t, with(func(c *Claims) { c.Queues = []string{"*"} })) + "." + parts[2], jwt.ErrTokenSignatureInvalid},
		{"tampered header", hs, b64(`{"alg":"HS256","typ":"JWT","kid":"x"}`) + "." + parts[1] + "." + parts[2], jwt.ErrTokenSignatureInvalid},
		{"padded segments", hs, parts[0] + "==." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"wrong claim type", hs, hmacToken(t, `{"alg":"HS256"}`, b64(`{"queues":"q1","exp":9999999999,"aud":"popbox","iss":"popbox-test"}`), k.secret), jwt.ErrTokenMalformed},

		{"empty", hs, "", nil},
		{"garbage", hs, "not a token", jwt.ErrTokenMalformed},
		{"two dots only", hs, "..", jwt.ErrTokenMalformed},
		{"four segments", hs, valid + ".x", jwt.ErrTokenMalformed},
		{"bad base64", hs, "@@@." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"header not JSON", hs, b64("hello") + "." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"payload not JSON", hs, hmacToken(t, `{"alg":"HS256"}`, b64("[1,2"), k.secret), jwt.ErrTokenMalformed},
		{"Bearer prefix left in", hs, "Bearer " + valid, jwt.ErrTokenMalformed},
		{"too long", hs, valid + strings.Repeat("A", MaxTokenLen), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.v.Parse(tc.token)
			if err == nil || c != nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err %v does not wrap ErrInvalidToken", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err %v, want also %v", err, tc.want)
			}
			msg := err.Error()
			for _, p := range strings.Split(tc.token, ".") {
				if len(p) > 8 && strings.Contains(msg, p) {
					t.Errorf("error %q contains part of the token", msg)
				}
			}
			if strings.Contains(msg, string(k.secret)) {
				t.Errorf("error %q contains the secret", msg)
			}
		})
	}
}

func mustDER(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseLeeway(t *testing.T) {
	k := keys()
	c := good()
	c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-10 * time.Second))
	tok := sign(t, jwt.SigningMethodHS256, k.secret, c)
	if _, err := newVerifier(t, JWTConfig{Secret: k.secret}).Parse(tok); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("no leeway: err %v, want expired", err)
	}
	if _, err := newVerifier(t, JWTConfig{Secret: k.secret, Leeway: time.Minute}).Parse(tok); err != nil {
		t.Errorf("leeway 1m: %v", err)
	}
}

func TestParseAudienceList(t *testing.T) {
	k := keys()
	v := newVerifier(t, JWTConfig{Secret: k.secret, Audience: "popbox"})
	c := good()
	c.Audience = jwt.ClaimStrings{"other", "popbox"}
	if _, err := v.Parse(sign(t, jwt.SigningMethodHS256, k.secret, c)); err != nil {
		t.Errorf("audience among several: %v", err)
	}
	// Not configured: aud and iss are not checked.
	v = newVerifier(t, JWTConfig{Secret: k.secret})
	c.Audience, c.Issuer = nil, ""
	if _, err := v.Parse(sign(t, jwt.SigningMethodHS256, k.secret, c)); err != nil {
		t.Errorf("no aud/iss configured: %v", err)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	k := keys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  JWTConfig
	}{
		{"nothing", JWTConfig{}},
		{"short secret", JWTConfig{Secret: []byte("too-short")}},
		{"not PEM", JWTConfig{PublicKeyPEM: []byte("ssh-ed25519 AAAA")}},
		{"private key", JWTConfig{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}},
		{"bad DER", JWTConfig{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}},
		{"unknown block", JWTConfig{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "DH PARAMETERS", Bytes: []byte{1}})}},
		{"RSA 1024", JWTConfig{PublicKeyPEM: pkixPEM(t, &small.PublicKey)}},
		{"P-224", JWTConfig{PublicKeyPEM: pkixPEM(t, &p224.PublicKey)}},
		{"good key, short secret", JWTConfig{Secret: []byte("x"), PublicKeyPEM: pkixPEM(t, k.ed.Public())}},
		{"negative leeway", JWTConfig{Secret: k.secret, Leeway: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			if err == nil {
				t.Fatalf("accepted: %+v", v)
			}
			if len(tc.cfg.Secret) > 0 && strings.Contains(err.Error(), string(tc.cfg.Secret)) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
	if _, err := NewVerifier(JWTConfig{}); !errors.Is(err, ErrNoJWTKey) {
		t.Errorf("no key: %v", err)
	}
}

func TestAllowsQueue(t *testing.T) {
	c := &Claims{Queues: []string{"q1", "dev-*", "a*b", ""}}
	org := &Claims{Queues: []string{"*"}, Org: "acme"}
	all := &Claims{Queues: []string{"*"}}
	sec := &Claims{Queues: []string{"SEC:box1", "SEC:user-*", "plain"}}
	secAll := &Claims{Queues: []string{"SEC:*"}}
	for _, tc := range []struct {
		c       *Claims
		org, id string
		secure  bool
		want    bool
	}{
		{c, "", "q1", false, true},
		{c, "", "q10", false, false},
		{c, "", "q", false, false},
		{c, "", "dev-", false, true},
		{c, "", "dev-42", false, true},
		{c, "", "dev", false, false},
		{c, "", "a*b", false, true},  // '*' in the middle is literal
		{c, "", "axb", false, false}, // ... and not a wildcard
		{c, "", "", false, false},    // the empty entry matches nothing
		{c, "acme", "q1", false, false},
		{all, "", "anything", false, true},
		{all, "acme", "anything", false, false}, // no org: only the no-org namespace
		{all, "", "", false, false},
		{org, "acme", "q1", false, true},
		{org, "", "q1", false, false}, // org token outside its org
		{org, "other", "q1", false, false},
		{org, "ACME", "q1", false, false},
		{&Claims{Org: "acme"}, "acme", "q1", false, false}, // no queues
		{nil, "", "q1", false, false},

		// Plain entries never open secure boxes (issue 13 item 3).
		{c, "", "q1", true, false},
		{c, "", "dev-1", true, false},
		{all, "", "box1", true, false},
		{org, "acme", "box1", true, false},
		// SEC: entries open secure boxes, and only those.
		{sec, "", "box1", true, true},
		{sec, "", "box1", false, false},
		{sec, "", "box2", true, false},
		{sec, "", "user-7", true, true},
		{sec, "", "user-7", false, false},
		{sec, "", "plain", false, true},
		{sec, "", "plain", true, false},
		{secAll, "", "anything", true, true},
		{secAll, "", "anything", false, false},
		{secAll, "acme", "anything", true, false},
	} {
		if got := tc.c.AllowsQueue(tc.org, tc.secure, tc.id); got != tc.want {
			var q []string
			o := ""
			if tc.c != nil {
				q, o = tc.c.Queues, tc.c.Org
			}
			t.Errorf("queues %q org %q: AllowsQueue(%q, secure=%v, %q) = %v, want %v", q, o, tc.org, tc.secure, tc.id, got, tc.want)
		}
	}
}

func TestHasScope(t *testing.T) {
	for _, tc := range []struct {
		scope, s string
		want     bool
	}{
		{"provision", ScopeProvision, true},
		{"consume provision", ScopeProvision, true},
		{"  provision\tconsume ", "consume", true},
		{"provisioning", ScopeProvision, false},
		{"provision", "prov", false},
		{"", ScopeProvision, false},
		{"provision", "", false},
		{"Provision", ScopeProvision, false},
	} {
		if got := (&Claims{Scope: tc.scope}).HasScope(tc.s); got != tc.want {
			t.Errorf("scope %q: HasScope(%q) = %v, want %v", tc.scope, tc.s, got, tc.want)
		}
	}
	var nilClaims *Claims
	if nilClaims.HasScope(ScopeProvision) {
		t.Error("nil claims have a scope")
	}
}

func TestParseClaimsJSON(t *testing.T) {
	k := keys()
	v := newVerifier(t, JWTConfig{Secret: k.secret})
	tok := hmacToken(t, `{"alg":"HS256","typ":"JWT"}`,
		b64(`{"queues":["q1","x-*"],"org":"acme","scope":"provision consume","exp":9999999999,"sub":"dev1","extra":1}`), k.secret)
	c, err := v.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Org != "acme" || c.Subject != "dev1" || !c.HasScope(ScopeProvision) || !c.AllowsQueue("acme", false, "x-1") || c.AllowsQueue("", false, "q1") {
		t.Errorf("claims %+v", c)
	}
}
