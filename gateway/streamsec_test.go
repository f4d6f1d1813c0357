package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/popbox/popbox/internal/testenv"
)

// Long-lived streams against real gateway processes and a real
// redis-server (issue 13 items 4, 9, 12; docs/SECURITY.md).

// expiringToken is an HS256 token for queues that expires at exp.
func expiringToken(t *testing.T, exp time.Time, queues ...string) string {
	t.Helper()
	return secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) {
		c["exp"] = exp.Unix()
		c["queues"] = queues
	})
}

// wsURL turns an http(s) base URL and path into a ws(s) URL.
func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

// dialWS opens a WebSocket with cl and an optional bearer token.
func dialWS(t *testing.T, ctx context.Context, cl *http.Client, u, token string) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: cl, HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", u, err, status)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn
}

// muxFrame reads the next frame of a multiplexed socket.
func readMux(ctx context.Context, conn *websocket.Conn) (map[string]any, error) {
	_, b, err := conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	return f, nil
}

// sendMux writes one client frame.
func sendMux(t *testing.T, ctx context.Context, conn *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write %s: %v", b, err)
	}
}

// expectMux reads frames until one with op (and, for "message", the
// payload) comes; it fails on an error frame.
func expectMux(t *testing.T, ctx context.Context, conn *websocket.Conn, op string) map[string]any {
	t.Helper()
	for {
		f, err := readMux(ctx, conn)
		if err != nil {
			t.Fatalf("waiting for %q: %v", op, err)
		}
		if f["op"] == op {
			return f
		}
		if f["op"] == "error" {
			t.Fatalf("waiting for %q: error frame %v", op, f)
		}
	}
}

// expectClose reads until the connection closes and checks its code.
func expectClose(t *testing.T, ctx context.Context, conn *websocket.Conn, code websocket.StatusCode, reason string) {
	t.Helper()
	for {
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code || (reason != "" && ce.Reason != reason) {
			t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
		}
		return
	}
}

// TestStreamsEndWhenTheTokenExpires is issue 13 item 12: every stream
// opened with a JWT (HTTP subscribe, SSE, per-queue and multiplexed
// WebSocket) ends when the token expires, with a documented end; the
// multiplexed WebSocket can refresh its token in-band, and a refresh that
// does not cover its subscriptions is refused. All streams are opened
// before the token expires, then their ends are read.
func TestStreamsEndWhenTheTokenExpires(t *testing.T) {
	t.Parallel()
	sg := startSecGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	exp := time.Now().Add(4 * time.Second).Truncate(time.Second) // exp has whole seconds
	tok := expiringToken(t, exp, "jq-*")
	base := sg.g.URL // plain port with POPBOX_REQUIRE_AUTH

	open := func(method, path, authz string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := sg.cl.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %v %v", method, path, resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	sub := open(http.MethodPost, "/queue/jq-sub/subscribe", "Bearer "+tok)
	sse := open(http.MethodGet, "/queue/jq-sse/events?access_token="+tok, "")
	ws := dialWS(t, ctx, sg.cl, wsURL(base, "/queue/jq-ws/ws"), tok)
	// Multiplexed, not refreshed: a refresh that does not allow every
	// subscription, and a garbage one, are refused and change nothing.
	mux := dialWS(t, ctx, sg.cl, wsURL(base, "/ws"), tok)
	sendMux(t, ctx, mux, map[string]any{"op": "subscribe", "queue": "jq-m1"})
	expectMux(t, ctx, mux, "subscribed")
	sendMux(t, ctx, mux, map[string]any{"op": "auth", "token": expiringToken(t, time.Now().Add(time.Hour), "jq-other")})
	if f, err := readMux(ctx, mux); err != nil || f["op"] != "error" || !strings.Contains(f["error"].(string), "does not allow queue jq-m1") {
		t.Fatalf("refresh without jq-m1: %v %v", f, err)
	}
	sendMux(t, ctx, mux, map[string]any{"op": "auth", "token": "not-a-token"})
	if f, err := readMux(ctx, mux); err != nil || f["op"] != "error" || !strings.HasPrefix(f["error"].(string), "auth: invalid token") {
		t.Fatalf("refresh with garbage: %v %v", f, err)
	}
	// Multiplexed, refreshed in-band before expiry.
	fresh := dialWS(t, ctx, sg.cl, wsURL(base, "/ws"), tok)
	sendMux(t, ctx, fresh, map[string]any{"op": "subscribe", "queue": "jq-m2"})
	expectMux(t, ctx, fresh, "subscribed")
	later := time.Now().Add(time.Hour).Truncate(time.Second)
	sendMux(t, ctx, fresh, map[string]any{"op": "auth", "token": expiringToken(t, later, "jq-m*")})
	if f := expectMux(t, ctx, fresh, "authenticated"); f["expires"] != float64(later.Unix()) {
		t.Fatalf("authenticated frame %v, want expires %d", f, later.Unix())
	}
	if time.Now().After(exp) {
		t.Fatalf("setting up took past the token's expiry: the machine is too slow for this test")
	}

	// HTTP subscribe: the last object says why.
	sc := bufio.NewScanner(sub.Body)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	if last != `{"ok":false,"errors":["token expired"]}` || time.Now().Before(exp) {
		t.Fatalf("subscribe ended at %v (token expires %v) with %q (%v)", time.Now(), exp, last, sc.Err())
	}
	// SSE: event end with the reason.
	sc = bufio.NewScanner(sse.Body)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if got := strings.Join(lines, "\n"); !strings.HasSuffix(got, "event: end\ndata: token expired\n") {
		t.Fatalf("SSE ended with %q (%v)", got, sc.Err())
	}
	// Per-queue and multiplexed WebSocket: close 4401.
	expectClose(t, ctx, ws, 4401, "token expired")
	expectClose(t, ctx, mux, 4401, "token expired")
	// The refreshed one outlives the first token and still delivers.
	provTok := secToken(t, jwt.SigningMethodHS256, []byte(secSecret), func(c jwt.MapClaims) { c["scope"] = "provision" })
	code, _, body := secDo(t, sg.cl, http.MethodPost, base+"/trans", "Bearer "+provTok, `{"payload":"after expiry","priority":"H","queue":[{"id":"jq-m2"}]}`)
	if code != 200 {
		t.Fatalf("provision: %d %s", code, body)
	}
	if f := expectMux(t, ctx, fresh, "message"); f["data"] != "after expiry" || f["queue"] != "jq-m2" {
		t.Fatalf("message frame %v", f)
	}
}

// TestWSFrameFlood is issue 13 item 9: a client that sends frames as fast
// as it can is closed with 1008 "too many frames" (POPBOX_WS_FRAME_RATE,
// default 100/s with a burst of 356); a normal client on the same node,
// subscribing and receiving, is unaffected.
func TestWSFrameFlood(t *testing.T) {
	t.Parallel()
	g := testenv.StartGateway(t, testenv.StartRedis(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := &http.Client{}
	normal := dialWS(t, ctx, cl, wsURL(g.URL, "/ws"), "")
	sendMux(t, ctx, normal, map[string]any{"op": "subscribe", "queue": "calm"})
	expectMux(t, ctx, normal, "subscribed")

	flood := dialWS(t, ctx, cl, wsURL(g.URL, "/ws"), "")
	frame := []byte(`{"op": "bogus"}`)
	sent := 0
	closed := make(chan error, 1)
	go func() { // the flooder's reader: sees the close
		for {
			if _, _, err := flood.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	for ; sent < 200000; sent++ {
		if err := flood.Write(ctx, websocket.MessageText, frame); err != nil {
			break
		}
	}
	err := <-closed
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many frames" {
		t.Fatalf("flooder (%d frames sent) ended with %v, want close 1008 too many frames", sent, err)
	}
	t.Logf("flooder closed after %d frames", sent)
	if sent >= 200000 {
		t.Fatalf("all %d frames were taken", sent)
	}
	// The normal client still works: a few frames and a delivery.
	sendMux(t, ctx, normal, map[string]any{"op": "subscribe", "queue": "calm2"})
	expectMux(t, ctx, normal, "subscribed")
	code, _, body := secDo(t, cl, http.MethodPost, g.URL+"/trans", "", `{"payload":"still here","priority":"L","queue":[{"id":"calm"}]}`)
	if code != 200 {
		t.Fatalf("provision: %d %s", code, body)
	}
	if f := expectMux(t, ctx, normal, "message"); f["data"] != "still here" {
		t.Fatalf("message frame %v", f)
	}
}
