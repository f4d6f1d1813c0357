package js

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// TestNode runs the client's node:test suite (clients/js/test) against a
// real gateway and redis-server: the protocol logic alone, and fetch,
// WebSocket and multiplexed subscriptions, reliable acks, resubscription
// and token renewal over the wire. The gateway requires a JWT on every
// queue route, so the suite also proves the token plumbing.
func TestNode(t *testing.T) {
	node := testenv.Tool(t, "POPBOX_NODE", "nodejs", "node")
	const secret = "js-client-test-secret-0123456789abcdef"
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL(), testenv.WithEnv(
		"POPBOX_JWT_SECRET="+secret, "POPBOX_REQUIRE_AUTH=true"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--test", "--test-reporter=spec"}
	// Node 22 has a global WebSocket, Node 20 has it behind a flag, Node
	// 18 (Debian 12's nodejs) has none: its WebSocket tests are skipped
	// (Chromium covers the transports in ./tests/uitest).
	hasWS := func(flags ...string) bool {
		out, err := exec.CommandContext(ctx, node, append(flags, "-p", "typeof WebSocket")...).Output()
		return err == nil && strings.TrimSpace(string(out)) == "function"
	}
	wsOK := true
	switch {
	case hasWS():
	case hasWS("--experimental-websocket"):
		args = append([]string{"--experimental-websocket"}, args...)
	default:
		wsOK = false
		t.Logf("%s has no WebSocket: the suite's WebSocket tests are skipped (use Node 20 or newer)", node)
	}
	cmd := exec.CommandContext(ctx, node, append(args, "test/")...)
	cmd.Env = append(os.Environ(), "POPBOX_TEST_URL="+g.URL, "POPBOX_TEST_JWT_SECRET="+secret, "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if wsOK && strings.Contains(string(out), "skipped") && !strings.Contains(string(out), "skipped 0") {
		t.Fatalf("node --test skipped tests with a gateway at hand:\n%s", out)
	}
	t.Logf("node --test:\n%s", out)
}
