package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/popbox/popbox/internal/testenv"
)

// Security tests (API.md 1.5 and 2.3, docs/SECURITY.md) against real
// gateway processes over real TLS and a real redis-server.

const (
	secAdminUser = "admin"
	secAdminPass = "admin-Pa55-7c1e9b"
	secBoxUser   = "u1"
	secBoxPass   = "box1-Pa55-93ad"
	secBox2User  = "u2"
	secBox2Pass  = "box2-Pa55-51fe"
	secSecret    = "0123456789abcdef0123456789abcdef-hs256-test-secret"
	secAudience  = "popbox-test"
	secIssuer    = "https://issuer.test"
)

// secGateway is a gateway with TLS, admin credentials, JWT (HS256 secret
// and an ES256 public key), RequireAuth and ProvisionAuth.
type secGateway struct {
	g      *testenv.Gateway
	r      *testenv.Redis
	cl     *http.Client // trusts the test certificate
	ec     *ecdsa.PrivateKey
	pubPEM []byte
}

// secCert writes a self-signed ECDSA certificate for 127.0.0.1 and returns
// the files and a pool trusting it.
func secCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	return testenv.SelfSignedCert(t, dir)
}

// startSecGateway starts the gateway; env adds or overrides settings.
func startSecGateway(t *testing.T, env ...string) *secGateway {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, pool := secCert(t, dir)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
	pubFile := filepath.Join(dir, "jwt.pub.pem")
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL(), testenv.WithTLS(certFile, keyFile), testenv.WithEnv(
		"POPBOX_ADMIN_USER="+secAdminUser, "POPBOX_ADMIN_PASSWORD="+secAdminPass,
		"POPBOX_JWT_SECRET="+secSecret, "POPBOX_JWT_PUBLIC_KEY="+pubFile,
		"POPBOX_JWT_AUDIENCE="+secAudience, "POPBOX_JWT_ISSUER="+secIssuer,
		"POPBOX_REQUIRE_AUTH=true", "POPBOX_PROVISION_AUTH=true",
		// The matrices below refuse many credentials from 127.0.0.1; the
		// failure limit has its own test (TestAuthFailureLimit).
		"POPBOX_AUTH_FAILURE_BURST=0",
		// bcrypt's least cost: the matrices refuse hundreds of passwords,
		// each a real bcrypt run against a -race build (tens of seconds
		// at the default cost 10). TestAdminGuessRate sets 10 again.
		"POPBOX_BCRYPT_COST=4",
	), testenv.WithEnv(env...))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &secGateway{g: g, r: r, cl: &http.Client{Transport: tr, Timeout: 30 * time.Second}, ec: ec, pubPEM: pubPEM}
}

// basic returns an Authorization header value.
func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// secDo sends a request and returns status, headers and body.
func secDo(t *testing.T, cl *http.Client, method, u, authz, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, u, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return secSend(t, cl, req, authz, false)
}

// secSend sends req, with authz as its Authorization header if set, and
// returns status, headers and body; with live, the body of a 200 (an
// established stream) is left unread.
func secSend(t *testing.T, cl *http.Client, req *http.Request, authz string, live bool) (int, http.Header, string) {
	t.Helper()
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	if live && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, resp.Header, "" // a live stream: leave
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// secRoutes are the queue routes and transports probed.
var secRoutes = []string{"pop", "peek", "get", "subscribe", "sse", "ws"}

// secProbe opens route on queue q and reports the status (101 for an
// established WebSocket, 200 for an established stream), headers and, for
// refusals, the body. The connection is closed at once.
func secProbe(t *testing.T, cl *http.Client, base, route, q, authz, query string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if query != "" {
		query = "?" + query
	}
	if route == "ws" {
		u := "ws" + strings.TrimPrefix(base, "http") + "/queue/" + q + "/ws" + query
		h := http.Header{}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: cl, HTTPHeader: h})
		if err == nil {
			conn.Close(websocket.StatusNormalClosure, "")
			return http.StatusSwitchingProtocols, resp.Header, ""
		}
		if resp == nil {
			t.Fatalf("ws dial %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	method, path := http.MethodGet, "/queue/"+q
	switch route {
	case "pop":
		method, path = http.MethodPost, path+"/pop"
		if query == "" {
			query = "?timeout=1"
		} else {
			query += "&timeout=1"
		}
	case "peek":
		path += "/peek"
	case "subscribe":
		method, path = http.MethodPost, path+"/subscribe"
	case "sse":
		path += "/events"
	}
	req, _ := http.NewRequestWithContext(ctx, method, base+path+query, nil)
	return secSend(t, cl, req, authz, route == "subscribe" || route == "sse")
}

// wantOK checks that a probe got through.
func wantOK(t *testing.T, route string, status int, body string) {
	t.Helper()
	want := http.StatusOK
	if route == "ws" {
		want = http.StatusSwitchingProtocols
	}
	if status != want {
		t.Fatalf("%s: status %d (%q), want %d", route, status, body, want)
	}
}

// want401 checks the exact 401 of API.md 1.5; basicChallenge tells
// whether a Basic challenge must come first (the secure port).
func want401(t *testing.T, route string, status int, h http.Header, body string, basicChallenge bool) {
	t.Helper()
	if status != http.StatusUnauthorized || body != "Unauthorized" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("%s: got %d %q (%s), want 401 \"Unauthorized\" text/plain", route, status, body, h.Get("Content-Type"))
	}
	ch := h.Values("WWW-Authenticate")
	if basicChallenge && (len(ch) == 0 || ch[0] != `Basic realm="PopBox"`) {
		t.Fatalf("%s: WWW-Authenticate %q, want Basic realm=\"PopBox\" first", route, ch)
	}
	if !basicChallenge && (len(ch) == 0 || !strings.HasPrefix(ch[0], "Bearer")) {
		t.Fatalf("%s: WWW-Authenticate %q, want a Bearer challenge", route, ch)
	}
}

func want500NoBox(t *testing.T, route string, status int, h http.Header, body string) {
	t.Helper()
	if status != http.StatusInternalServerError || body != "ERROR: Secure Queue does not exist" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("%s: got %d %q (%s), want 500 \"ERROR: Secure Queue does not exist\" text/plain", route, status, body, h.Get("Content-Type"))
	}
}

// secToken signs claims; key is []byte (HS256) or *ecdsa.PrivateKey.
func secToken(t *testing.T, m jwt.SigningMethod, key any, mutate func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{
		"aud":    secAudience,
		"iss":    secIssuer,
		"exp":    time.Now().Add(time.Hour).Unix(),
		"iat":    time.Now().Unix(),
		"queues": []string{"jq-*", "SEC:jq-*"},
	}
	if mutate != nil {
		mutate(c)
	}
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSecureBoxes(t *testing.T) {
	t.Parallel()
	sg := startSecGateway(t)
	tlsURL, plainURL := sg.g.TLSURL, sg.g.URL
	admin := basic(secAdminUser, secAdminPass)

	// Box creation (API.md 1.5) — under ProvisionAuth it needs the admin.
	create := func(base, authz, body string) (int, string) {
		code, _, b := secDo(t, sg.cl, http.MethodPost, base+"/queue", authz, body)
		return code, b
	}
	box := func(q, u, p string) string {
		b, _ := json.Marshal(map[string]string{"queue": q, "user": u, "password": p})
		return string(b)
	}
	if code, b := create(tlsURL, admin, box("box1", secBoxUser, secBoxPass)); code != 200 || b != `{"ok":true}`+"\n" {
		t.Fatalf("create box1: %d %q", code, b)
	}
	if code, b := create(tlsURL, admin, box("box2", secBox2User, secBox2Pass)); code != 200 {
		t.Fatalf("create box2: %d %q", code, b)
	}
	badCreates := []struct {
		name, base, authz, body string
		code                    int
		want                    string
	}{
		{"exists", tlsURL, admin, box("box1", "x", "y"), 403, `{"errors":["Error: SEC:box1 exists"]}`},
		{"no credentials (provision auth)", tlsURL, "", box("box3", "x", "y"), 401, "Unauthorized"},
		{"box credentials are not admin", tlsURL, basic(secBoxUser, secBoxPass), box("box3", "x", "y"), 401, "Unauthorized"},
		{"plain port", plainURL, admin, box("box3", "x", "y"), 400, `{"errors":["secure boxes can only be created on the secure (TLS) port"]}`},
		{"missing password", tlsURL, admin, `{"queue":"box3","user":"x"}`, 400, ""},
		{"user with colon", tlsURL, admin, box("box3", "a:b", "y"), 400, ""},
		{"password over 72 bytes", tlsURL, admin, box("box3", "x", strings.Repeat("p", 73)), 400, ""},
		{"bad queue id", tlsURL, admin, box("bad id", "x", "y"), 400, ""},
		{"trailing garbage", tlsURL, admin, box("box3", "x", "y") + "{}", 400, ""},
		{"wrong type", tlsURL, admin, `{"queue":["box3"],"user":"x","password":"y"}`, 400, ""},
	}
	for _, c := range badCreates {
		code, b := create(c.base, c.authz, c.body)
		if code != c.code || (c.want != "" && strings.TrimSpace(b) != c.want) || (c.code == 400 && !strings.Contains(b, `"errors"`)) {
			t.Errorf("create %s: %d %q, want %d %q", c.name, code, b, c.code, c.want)
		}
		t.Logf("bad input: POST /queue %s -> %d %s", c.name, code, strings.TrimSpace(b))
	}
	if code, b := create(tlsURL+"/org/acme", admin, box("box1", "x", "y")); code != 200 {
		t.Fatalf("create acme box1: %d %q", code, b)
	}
	if code, b := create(tlsURL+"/org/acme", admin, box("box1", "x", "y")); code != 403 || strings.TrimSpace(b) != `{"errors":["Error: acme:SEC:box1 exists"]}` {
		t.Fatalf("create acme box1 again: %d %q", code, b)
	}
	// A message for box1, provisioned on the secure port by the admin.
	if code, _, b := secDo(t, sg.cl, http.MethodPost, tlsURL+"/trans", admin,
		`{"payload":"secret-msg","priority":"H","queue":[{"id":"box1"}]}`); code != 200 {
		t.Fatalf("provision: %d %s", code, b)
	}

	// Every case on every route, except two extra refusals that only
	// repeat a bcrypt mismatch (kept to two routes to bound the bcrypt
	// work of the race-built gateway).
	cases := []struct {
		name, q, authz string
		want           int      // 0: through
		routes         []string // nil: secRoutes
	}{
		{"box credentials", "box1", basic(secBoxUser, secBoxPass), 0, nil},
		{"admin credentials", "box1", admin, 0, nil},
		{"wrong password", "box1", basic(secBoxUser, "nope"), 401, nil},
		{"wrong user", "box1", basic("someone", secBoxPass), 401, nil},
		{"another box's credentials", "box1", basic(secBox2User, secBox2Pass), 401, []string{"peek", "ws"}},
		{"wrong admin password", "box1", basic(secAdminUser, "nope"), 401, []string{"get", "sse"}},
		{"no credentials", "box1", "", 401, nil},
		{"malformed Basic header", "box1", "Basic !!!", 401, nil},
		{"missing box", "nobox", basic(secBoxUser, secBoxPass), 500, nil},
		{"missing box, admin", "nobox", admin, 500, nil},
		{"missing box, no credentials", "nobox", "", 500, nil},
	}
	t.Run("matrix", func(t *testing.T) {
		for _, c := range cases {
			routes := c.routes
			if routes == nil {
				routes = secRoutes
			}
			for _, route := range routes {
				t.Run(c.name+"/"+route, func(t *testing.T) {
					t.Parallel()
					code, h, body := secProbe(t, sg.cl, tlsURL, route, c.q, c.authz, "")
					switch c.want {
					case 0:
						wantOK(t, route, code, body)
					case 401:
						want401(t, route, code, h, body, true)
					case 500:
						want500NoBox(t, route, code, h, body)
					}
				})
			}
		}
	})
	for _, c := range cases {
		routes := "pop/peek/GET/subscribe/SSE/WebSocket"
		if c.routes != nil {
			routes = strings.Join(c.routes, "/")
		}
		t.Logf("bad input: secure %s on %s -> %s", c.name, routes, map[int]string{0: "200 (101 WebSocket)", 401: `401 "Unauthorized" + WWW-Authenticate: Basic realm="PopBox"`, 500: `500 "ERROR: Secure Queue does not exist"`}[c.want])
	}

	// The other routes of a box: poprel, subscriberel, ack.
	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/queue/box1/poprel?timeout=1", ""},
		{http.MethodPost, "/queue/box1/ack", `{"transactions":["00000000-0000-4000-8000-000000000000"]}`},
	} {
		if code, h, b := secDo(t, sg.cl, r.method, tlsURL+r.path, basic(secBoxUser, "nope"), r.body); true {
			want401(t, r.path, code, h, b, true)
		}
		if code, _, b := secDo(t, sg.cl, r.method, tlsURL+r.path, basic(secBoxUser, secBoxPass), r.body); code != 200 {
			t.Errorf("%s with box credentials: %d %s", r.path, code, b)
		}
	}
	// Under an org, the org's box and its own credentials.
	if code, h, b := secProbe(t, sg.cl, tlsURL+"/org/acme", "peek", "box1", basic(secBoxUser, secBoxPass), ""); true {
		want401(t, "org peek with root box credentials", code, h, b, true)
	}
	if code, _, b := secProbe(t, sg.cl, tlsURL+"/org/acme", "peek", "box1", basic("x", "y"), ""); code != 200 {
		t.Errorf("org peek: %d %s", code, b)
	}

	t.Run("multiplexed websocket", func(t *testing.T) {
		frames := func(authz, query string, subs ...string) map[string]string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			h := http.Header{}
			if authz != "" {
				h.Set("Authorization", authz)
			}
			u := "wss" + strings.TrimPrefix(tlsURL, "https") + "/ws" + query
			conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: sg.cl, HTTPHeader: h})
			if err != nil {
				t.Fatalf("dial /ws: %v", err)
			}
			defer conn.CloseNow()
			got := map[string]string{}
			for _, q := range subs {
				b, _ := json.Marshal(map[string]string{"op": "subscribe", "queue": q})
				if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
					t.Fatal(err)
				}
				for got[q] == "" {
					_, data, err := conn.Read(ctx)
					if err != nil {
						t.Fatalf("read /ws: %v", err)
					}
					var f struct{ Op, Queue, Error string }
					_ = json.Unmarshal(data, &f)
					switch {
					case f.Queue == q && f.Op == "subscribed":
						got[q] = "subscribed"
					case f.Queue == q && f.Op == "error":
						got[q] = f.Error
					}
				}
			}
			return got
		}
		check := func(name string, got map[string]string, want map[string]string) {
			t.Helper()
			for q, w := range want {
				if got[q] != w {
					t.Errorf("%s: subscribe %s -> %q, want %q", name, q, got[q], w)
				}
				t.Logf("bad input: /ws %s, subscribe %s -> %q", name, q, got[q])
			}
		}
		all := []string{"box1", "box2", "nobox"}
		check("box1 credentials", frames(basic(secBoxUser, secBoxPass), "", all...),
			map[string]string{"box1": "subscribed", "box2": "Unauthorized", "nobox": "ERROR: Secure Queue does not exist"})
		check("admin credentials", frames(admin, "", all...),
			map[string]string{"box1": "subscribed", "box2": "subscribed", "nobox": "ERROR: Secure Queue does not exist"})
		check("wrong password", frames(basic(secBoxUser, "nope"), "", all...),
			map[string]string{"box1": "Unauthorized", "box2": "Unauthorized", "nobox": "ERROR: Secure Queue does not exist"})
		check("no credentials", frames("", "", all...),
			map[string]string{"box1": "Unauthorized", "nobox": "ERROR: Secure Queue does not exist"})
		tok := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), nil)
		check("token in access_token", frames("", "?access_token="+tok, "jq-1", "box1", "nobox"),
			map[string]string{"jq-1": "subscribed", "box1": "Unauthorized", "nobox": "Unauthorized"})
		// With POPBOX_REQUIRE_AUTH a refused token is a 401 before the
		// upgrade (issue 13 item 4).
		bad := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tlsURL, "https")+"/ws?access_token="+bad, &websocket.DialOptions{HTTPClient: sg.cl})
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/ws with an expired token: %v %v, want 401 before the upgrade", resp, err)
		} else {
			t.Logf("bad input: /ws expired token -> %d", resp.StatusCode)
		}
	})

	t.Run("provisioning auth", func(t *testing.T) {
		prov := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) { c["scope"] = "provision"; c["queues"] = []string{} })
		noScope := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), nil)
		otherOrg := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) { c["scope"] = "provision"; c["org"] = "acme" })
		expired := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) {
			c["scope"] = "provision"
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		})
		trans := `{"payload":"p","priority":"L","queue":[{"id":"pq"}]}`
		code, _, b := secDo(t, sg.cl, http.MethodPost, plainURL+"/trans", "Bearer "+prov, trans)
		if code != 200 {
			t.Fatalf("provision with token: %d %s", code, b)
		}
		var r struct{ Data string }
		_ = json.Unmarshal([]byte(b), &r)
		tid := r.Data
		for _, c := range []struct {
			name, method, path, authz, body string
			code                            int
		}{
			{"no credentials", http.MethodPost, "/trans", "", trans, 401},
			{"wrong admin password", http.MethodPost, "/trans", basic(secAdminUser, "nope"), trans, 401},
			{"token without scope provision", http.MethodPost, "/trans", "Bearer " + noScope, trans, 401},
			{"provision token of another org", http.MethodPost, "/trans", "Bearer " + otherOrg, trans, 401},
			{"expired provision token", http.MethodPost, "/trans", "Bearer " + expired, trans, 401},
			{"provision token of the org", http.MethodPost, "/org/acme/trans", "Bearer " + otherOrg, trans, 200},
			{"admin", http.MethodPost, "/trans", admin, trans, 200},
			{"PUT no credentials", http.MethodPut, "/trans/" + tid, "", `{"payload":"q"}`, 401},
			{"PUT admin", http.MethodPut, "/trans/" + tid, admin, `{"payload":"q"}`, 200},
			{"GET trans needs provisioning rights", http.MethodGet, "/trans/" + tid, "", "", 401},
			{"GET trans with a provision token", http.MethodGet, "/trans/" + tid, "Bearer " + prov, "", 200},
			{"group no credentials", http.MethodPost, "/group", "", `{"name":"g","queues":["pq"]}`, 401},
			{"group token", http.MethodPost, "/group", "Bearer " + prov, `{"name":"g","queues":["pq"]}`, 200},
			{"GET group no credentials", http.MethodGet, "/group/g", "", "", 401},
			{"PUT group no credentials", http.MethodPut, "/group/g", "", `{"queuesToAdd":["x"]}`, 401},
			{"DELETE group no credentials", http.MethodDelete, "/group/g", "", "", 401},
			{"DELETE group admin", http.MethodDelete, "/group/g", admin, "", 200},
			{"DELETE trans no credentials", http.MethodDelete, "/trans/" + tid, "", "", 401},
			{"DELETE trans token", http.MethodDelete, "/trans/" + tid, "Bearer " + prov, "", 200},
		} {
			code, _, b := secDo(t, sg.cl, c.method, plainURL+c.path, c.authz, c.body)
			if code != c.code || (c.code == 401 && b != "Unauthorized") {
				t.Errorf("%s: %s %s -> %d %q, want %d", c.name, c.method, c.path, code, b, c.code)
			}
			if c.code == 401 {
				t.Logf("bad input: provisioning %s (%s %s) -> %d %s", c.name, c.method, c.path, code, b)
			}
		}
	})

	// No secret reaches the logs.
	logs := sg.g.Log()
	for _, s := range []string{secAdminPass, secBoxPass, secBox2Pass, secSecret, "secret-msg"} {
		if strings.Contains(logs, s) {
			t.Errorf("the gateway log contains a secret (%q)", s[:4]+"…")
		}
	}
}

func TestJWT(t *testing.T) {
	t.Parallel()
	sg := startSecGateway(t)
	secret := []byte(secSecret)
	hs := func(mut func(jwt.MapClaims)) string { return secToken(t, jwt.SigningMethodHS256, secret, mut) }
	valid := hs(nil)
	validES := secToken(t, jwt.SigningMethodES256, sg.ec, nil)

	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"aud": secAudience, "iss": secIssuer, "exp": time.Now().Add(time.Hour).Unix(), "queues": []string{"jq-*"},
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// Algorithm confusion: HS256 with the server's public key as secret.
	confusion := secToken(t, jwt.SigningMethodHS256, sg.pubPEM, nil)
	// A tampered signature: flip one character in the middle of it.
	parts := strings.Split(validES, ".")
	sig := []byte(parts[2])
	i := len(sig) / 2
	if sig[i] == 'A' {
		sig[i] = 'B'
	} else {
		sig[i] = 'A'
	}
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	// A tampered payload keeping the signature: opens every queue.
	payload, _ := json.Marshal(map[string]any{"aud": secAudience, "iss": secIssuer, "exp": time.Now().Add(time.Hour).Unix(), "queues": []string{"*"}})
	vparts := strings.Split(valid, ".")
	tamperedClaims := vparts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + vparts[2]

	bad := []struct{ name, token string }{
		{"expired", hs(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })},
		{"no exp", hs(func(c jwt.MapClaims) { delete(c, "exp") })},
		{"wrong audience", hs(func(c jwt.MapClaims) { c["aud"] = "someone-else" })},
		{"no audience", hs(func(c jwt.MapClaims) { delete(c, "aud") })},
		{"wrong issuer", hs(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })},
		{"wrong queue", hs(func(c jwt.MapClaims) { c["queues"] = []string{"other"} })},
		{"no queues", hs(func(c jwt.MapClaims) { delete(c, "queues") })},
		{"token of another org", hs(func(c jwt.MapClaims) { c["org"] = "acme" })},
		{"not valid yet", hs(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })},
		{"alg none", none},
		{"HS256 signed with the public key", confusion},
		{"tampered signature", tampered},
		{"tampered claims", tamperedClaims},
		{"signed with another secret", secToken(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), nil)},
		{"garbage", "not.a.token"},
	}
	ports := []struct {
		name, base string
		secure     bool
	}{{"secure", sg.g.TLSURL, true}, {"plain+require_auth", sg.g.URL, false}}

	// How a transport carries its token: a header, or access_token for
	// EventSource and WebSocket.
	carry := func(route, tok string) (authz, query string) {
		if route == "sse" || route == "ws" {
			return "", "access_token=" + url.QueryEscape(tok)
		}
		return "Bearer " + tok, ""
	}
	t.Run("matrix", func(t *testing.T) {
		for _, p := range ports {
			for _, route := range secRoutes {
				for _, v := range []struct{ name, token string }{{"HS256", valid}, {"ES256", validES}} {
					t.Run(p.name+"/valid "+v.name+"/"+route, func(t *testing.T) {
						t.Parallel()
						authz, query := carry(route, v.token)
						code, _, body := secProbe(t, sg.cl, p.base, route, "jq-1", authz, query)
						wantOK(t, route, code, body)
					})
				}
				for _, b := range bad {
					t.Run(p.name+"/"+b.name+"/"+route, func(t *testing.T) {
						t.Parallel()
						authz, query := carry(route, b.token)
						code, h, body := secProbe(t, sg.cl, p.base, route, "jq-1", authz, query)
						want401(t, route, code, h, body, p.secure)
						if !strings.Contains(strings.Join(h.Values("WWW-Authenticate"), " "), `error="invalid_token"`) {
							t.Errorf("%s: WWW-Authenticate %q lacks error=\"invalid_token\"", route, h.Values("WWW-Authenticate"))
						}
					})
				}
				t.Run(p.name+"/no token/"+route, func(t *testing.T) {
					t.Parallel()
					code, h, body := secProbe(t, sg.cl, p.base, route, "jq-1", "", "")
					if p.secure {
						// No token and no such box: the classic 500.
						want500NoBox(t, route, code, h, body)
					} else {
						want401(t, route, code, h, body, false)
					}
				})
			}
		}
	})
	for _, b := range bad {
		t.Logf("bad input: JWT %s on pop/peek/GET/subscribe/SSE/WebSocket, both ports -> 401 \"Unauthorized\"", b.name)
	}

	// Extra: the access_token query parameter is refused outside
	// EventSource/WebSocket; an org token opens the org's queue only; SSE
	// also takes the header.
	code, h, body := secProbe(t, sg.cl, sg.g.URL, "pop", "jq-1", "", "access_token="+valid)
	want401(t, "pop with access_token", code, h, body, false)
	t.Logf("bad input: access_token query on pop (plain port, require-auth) -> %d %q", code, body)
	code, h, body = secProbe(t, sg.cl, sg.g.TLSURL, "pop", "jq-1", "", "access_token="+valid)
	want500NoBox(t, "secure pop with access_token", code, h, body)
	t.Logf("bad input: access_token query on pop (secure port, no box) -> %d %q", code, body)
	acme := hs(func(c jwt.MapClaims) { c["org"] = "acme" })
	code, _, body = secProbe(t, sg.cl, sg.g.TLSURL+"/org/acme", "peek", "jq-1", "Bearer "+acme, "")
	wantOK(t, "org peek", code, body)
	code, _, body = secProbe(t, sg.cl, sg.g.URL, "sse", "jq-1", "Bearer "+valid, "")
	wantOK(t, "sse with header", code, body)
	// The plain port never takes Basic credentials for queues.
	code, h, body = secProbe(t, sg.cl, sg.g.URL, "peek", "jq-1", basic(secAdminUser, secAdminPass), "")
	want401(t, "plain peek with admin Basic", code, h, body, false)

	logs := sg.g.Log()
	for _, s := range []string{secSecret, valid, validES, parts[2]} {
		if strings.Contains(logs, s) {
			t.Errorf("the gateway log contains a secret or token")
		}
	}
}

// TestHardening checks the limits against hostile clients: the connection
// limit (503, node stays healthy), the body limit (413), the header
// timeout (slowloris), CORS and WebSocket origin checks.
func TestHardening(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL(), testenv.WithEnv(
		"POPBOX_MAX_CONNECTIONS=4", "POPBOX_READ_HEADER_TIMEOUT=1s",
		"POPBOX_CORS_ORIGINS=https://app.example.com,https://*.example.org",
	))
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}

	t.Run("connection limit", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		holders := make(chan error, 4)
		for range 4 {
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+"/queue/cl/pop?timeout=30", nil)
				resp, err := cl.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				holders <- err
			}()
		}
		// Wait until the 4 long polls hold every place (/metrics is served
		// from the limit's reserve).
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, m := secDo(t, cl, http.MethodGet, g.URL+"/metrics", "", "")
			if strings.Contains(m, `popbox_connections{transport="longpoll"} 4`+"\n") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the 4 long polls never became live")
			}
			time.Sleep(20 * time.Millisecond)
		}
		for {
			code, h, b := secDo(t, cl, http.MethodGet, g.URL+"/queue/cl", "", "")
			if code == http.StatusServiceUnavailable {
				if strings.TrimSpace(b) != `{"errors":["too many connections"]}` || h.Get("Retry-After") == "" {
					t.Fatalf("503 body %q Retry-After %q", b, h.Get("Retry-After"))
				}
				t.Logf("bad input: a 5th concurrent request with max-connections=4 -> 503 %s", strings.TrimSpace(b))
				break
			}
			if code != 200 {
				t.Fatalf("GET /queue/cl: %d %s", code, b)
			}
			if time.Now().After(deadline) {
				t.Fatal("never got 503 with 4 long polls holding every slot")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Full node: health and metrics still answer.
		if code, _, _ := secDo(t, cl, http.MethodGet, g.URL+"/healthz", "", ""); code != 200 {
			t.Fatalf("healthz at capacity: %d", code)
		}
		_, _, metrics := secDo(t, cl, http.MethodGet, g.URL+"/metrics", "", "")
		if !strings.Contains(metrics, "popbox_rejected_connections_total ") || strings.Contains(metrics, "popbox_rejected_connections_total 0\n") {
			t.Errorf("rejected connections not counted")
		}
		cancel() // the long polls go away
		for range 4 {
			<-holders
		}
		deadline = time.Now().Add(10 * time.Second)
		for {
			code, _, _ := secDo(t, cl, http.MethodGet, g.URL+"/queue/cl", "", "")
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still %d after the connections dropped", code)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if code, _, _ := secDo(t, cl, http.MethodGet, g.URL+"/healthz", "", ""); code != 200 {
			t.Fatalf("healthz after: %d", code)
		}
	})

	t.Run("10 MB body", func(t *testing.T) {
		body := bytes.Repeat([]byte("a"), 10<<20)
		resp, err := cl.Post(g.URL+"/trans", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("10 MB body: %d %s", resp.StatusCode, b)
		}
		t.Logf("bad input: POST /trans with a 10 MB body -> %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	})

	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", g.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closed := make(chan time.Time, 1)
		go func() {
			_, _ = io.Copy(io.Discard, conn)
			closed <- time.Now()
		}()
		start := time.Now()
		head := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 30)
		var cut time.Time
	send:
		for i := 0; i < len(head); i++ {
			if _, err := conn.Write([]byte{head[i]}); err != nil {
				cut = time.Now()
				break
			}
			select {
			case cut = <-closed:
				break send
			case <-time.After(time.Second):
			}
		}
		if cut.IsZero() {
			t.Fatal("the slow client was never cut off")
		}
		took := cut.Sub(start)
		if took > 4*time.Second {
			t.Fatalf("cut off after %s, want about the 1s header timeout", took)
		}
		t.Logf("bad input: headers at one byte per second -> connection closed after %s (header timeout 1s)", took.Round(10*time.Millisecond))
		if code, _, _ := secDo(t, cl, http.MethodGet, g.URL+"/healthz", "", ""); code != 200 {
			t.Fatalf("healthz after slowloris: %d", code)
		}
	})

	t.Run("cors", func(t *testing.T) {
		pre := func(origin string) http.Header {
			req, _ := http.NewRequest(http.MethodOptions, g.URL+"/queue/q/pop", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
			_, h, _ := secSend(t, cl, req, "", false)
			return h
		}
		if h := pre("https://app.example.com"); h.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("allowed origin preflight: %v", h)
		}
		if h := pre("https://a.example.org"); h.Get("Access-Control-Allow-Origin") != "https://a.example.org" {
			t.Errorf("wildcard origin preflight: %v", h)
		}
		for _, o := range []string{"https://evil.com", "http://app.example.com", "https://app.example.com.evil.com"} {
			if h := pre(o); h.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("origin %s allowed: %v", o, h)
			}
			t.Logf("bad input: CORS preflight from %s -> no Access-Control-Allow-Origin", o)
		}
		req, _ := http.NewRequest(http.MethodGet, g.URL+"/queue/q/peek", nil)
		req.Header.Set("Origin", "https://app.example.com")
		if _, h, _ := secSend(t, cl, req, "", false); h.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Errorf("simple request: %v", h)
		}
	})

	t.Run("websocket origin", func(t *testing.T) {
		dial := func(origin string) (int, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.URL, "http")+"/queue/q/ws", &websocket.DialOptions{HTTPHeader: h})
			if err == nil {
				conn.Close(websocket.StatusNormalClosure, "")
				return 101, nil
			}
			if resp == nil {
				return 0, err
			}
			return resp.StatusCode, err
		}
		for _, c := range []struct {
			origin string
			want   int
		}{
			{"", 101}, {"https://app.example.com", 101}, {"https://b.example.org", 101},
			{"https://evil.com", 403}, {"http://app.example.com", 403},
		} {
			code, err := dial(c.origin)
			if code != c.want {
				t.Errorf("ws from origin %q: %d (%v), want %d", c.origin, code, err, c.want)
			}
			if c.want == 403 {
				t.Logf("bad input: WebSocket from origin %s -> %d", c.origin, code)
			}
		}
	})
}
