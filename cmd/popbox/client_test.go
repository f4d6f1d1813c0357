package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/testenv"
)

// The command-line client against a real gateway (redis-server + popbox
// serve with a TLS port), run in-process through run() as a user would
// type the commands.

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// result is one CLI run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

// popbox runs the CLI with args.
func popbox(args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{args: args, stdout: out.String(), stderr: errb.String(), code: code}
}

// cliEnv is a gateway and the flags pointing the CLI at it.
type cliEnv struct {
	t      *testing.T
	plain  string   // --server of the plain port
	tls    string   // --server of the TLS port
	cacert string   // the gateway's certificate
	flags  []string // appended to every command: --server plain
}

// do runs the command with the env's flags appended and checks the exit code.
func (e *cliEnv) do(wantCode int, args ...string) result {
	e.t.Helper()
	r := popbox(append(append([]string{}, args...), e.flags...)...)
	if r.code != wantCode {
		e.t.Fatalf("popbox %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, wantCode, r.stdout, r.stderr)
	}
	return r
}

func (e *cliEnv) json(wantCode int, into any, args ...string) {
	e.t.Helper()
	r := e.do(wantCode, append(args, "--json")...)
	if err := json.Unmarshal([]byte(r.stdout), into); err != nil {
		e.t.Fatalf("popbox %s --json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

// jsonLines decodes one JSON object a line.
func jsonLines[T any](t *testing.T, s string) []T {
	t.Helper()
	var out []T
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

type message struct {
	Data        string `json:"data"`
	Transaction string `json:"transaction"`
	Queue       string `json:"queue"`
	Priority    string `json:"priority"`
}

type transJSON struct {
	Transaction string            `json:"transaction"`
	Meta        map[string]string `json:"meta"`
	Queues      map[string]struct {
		State string `json:"state"`
	} `json:"queues"`
	Summary map[string]int `json:"summary"`
}

func startCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts redis-server and a gateway")
	}
	cert, key := selfSignedCert(t, t.TempDir())
	r := testenv.StartRedis(t)
	g := testenv.StartGateway(t, r.URL(), testenv.WithTLS(cert, key))
	t.Cleanup(func() {
		if strings.Contains(g.Log(), "WARNING: DATA RACE") {
			t.Errorf("gateway reported a data race:\n%s", g.Log())
		}
	})
	t.Setenv("POPBOX_SERVER", "") // the flags decide, not the caller's environment
	t.Setenv("POPBOX_TOKEN", "")
	t.Setenv("POPBOX_PASSWORD", "")
	return &cliEnv{t: t, plain: g.URL, tls: g.TLSURL, cacert: cert, flags: []string{"--server", g.URL}}
}

func TestCLIRoundTrip(t *testing.T) {
	e := startCLIEnv(t)

	// push into two queues, H; a second message L into one of them.
	tid := strings.TrimSpace(e.do(0, "push", "-q", "alice,bob", "-p", "H", "--meta", "app=cli", "hello").stdout)
	if !uuidV4.MatchString(tid) {
		t.Fatalf("push printed %q, want a transaction id", tid)
	}
	var pushed struct{ Transaction string }
	e.json(0, &pushed, "push", "--queue", "alice", "--expires-in", "10m", "second")
	tid2 := pushed.Transaction
	if !uuidV4.MatchString(tid2) {
		t.Fatalf("push --json printed %+v", pushed)
	}

	// trans: metadata and the state of each queue.
	out := e.do(0, "trans", tid).stdout
	for _, want := range []string{"transaction", tid, "payload", "hello", "priority", "app", "alice", "bob", "Pending"} {
		if !strings.Contains(out, want) {
			t.Errorf("popbox trans: no %q in\n%s", want, out)
		}
	}
	var tr transJSON
	e.json(0, &tr, "trans", tid)
	if tr.Transaction != tid || tr.Meta["payload"] != "hello" || tr.Meta["priority"] != "H" || tr.Meta["app"] != "cli" ||
		tr.Queues["alice"].State != "Pending" || tr.Queues["bob"].State != "Pending" || len(tr.Queues) != 2 {
		t.Errorf("popbox trans --json = %+v", tr)
	}
	e.json(0, &tr, "trans", tid2)
	if exp, ok := tr.Meta["expirationDate"]; !ok || exp == "" || tr.Meta["priority"] != "L" {
		t.Errorf("popbox trans %s --json: %+v", tid2, tr)
	}

	// peek: H before L, nothing taken.
	if got, want := e.do(0, "peek", "alice", "--tids").stdout, tid+"\thello\n"+tid2+"\tsecond\n"; got != want {
		t.Errorf("popbox peek --tids = %q, want %q", got, want)
	}
	peeked := jsonLines[message](t, e.do(0, "peek", "--json", "--max", "1", "alice").stdout)
	if len(peeked) != 1 || peeked[0].Data != "hello" || peeked[0].Transaction != tid || peeked[0].Queue != "alice" || peeked[0].Priority != "H" {
		t.Errorf("popbox peek --json --max 1 = %+v", peeked)
	}
	var info struct {
		Size    int
		Blocked bool
		High    []struct{ ID string }
		Low     []struct{ ID string }
	}
	e.json(0, &info, "queue", "alice")
	if info.Size != 2 || len(info.High) != 1 || info.High[0].ID != tid || len(info.Low) != 1 || info.Low[0].ID != tid2 {
		t.Errorf("popbox queue alice --json = %+v", info)
	}

	// pop one, then the state moved to Delivered for alice only.
	if got := e.do(0, "pop", "alice", "--max", "1").stdout; got != "hello\n" {
		t.Errorf("popbox pop = %q, want %q", got, "hello\n")
	}
	e.json(0, &tr, "trans", tid, "--state", "summary")
	if tr.Summary["Delivered"] != 1 || tr.Summary["Pending"] != 1 || tr.Summary["totalNotifications"] != 2 {
		t.Errorf("popbox trans --state summary = %+v", tr.Summary)
	}

	// reliable pop, then ack.
	rel := jsonLines[message](t, e.do(0, "pop", "alice", "--reliable", "--ack-timeout", "60", "--json").stdout)
	if len(rel) != 1 || rel[0].Data != "second" || rel[0].Transaction != tid2 || rel[0].Priority != "L" {
		t.Fatalf("popbox pop --reliable = %+v", rel)
	}
	e.json(0, &tr, "trans", tid2)
	if tr.Queues["alice"].State != "Blocked" {
		t.Errorf("after a reliable pop: %+v, want Blocked", tr.Queues)
	}
	if got := e.do(0, "ack", "alice", tid2).stdout; got != "acked "+tid2+"\n" {
		t.Errorf("popbox ack = %q", got)
	}
	e.json(0, &tr, "trans", tid2)
	if tr.Queues["alice"].State != "Delivered" {
		t.Errorf("after ack: %+v, want Delivered", tr.Queues)
	}
	e.do(1, "ack", "alice", tid2) // no longer Blocked

	// nothing left: exit 3, nothing on stdout.
	start := time.Now()
	if r := e.do(3, "pop", "alice", "--timeout", "1"); r.stdout != "" {
		t.Errorf("empty pop printed %q", r.stdout)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("empty pop with --timeout 1 took %v", d)
	}
	e.do(3, "trans", "00000000-0000-4000-8000-000000000000")
	// An empty peek exits 3 like pop, with nothing on stdout.
	if r := e.do(3, "peek", "alice"); r.stdout != "" || !strings.Contains(r.stderr, "no message in alice") {
		t.Errorf("empty peek: stdout %q, stderr %q", r.stdout, r.stderr)
	}

	// bob still has the H message.
	if got := e.do(0, "pop", "bob", "--tids").stdout; got != tid+"\thello\n" {
		t.Errorf("popbox pop bob --tids = %q", got)
	}
}

func TestCLIGroups(t *testing.T) {
	e := startCLIEnv(t)
	e.do(0, "group", "set", "g1", "carol,dave")
	e.do(0, "group", "add", "g1", "erin")
	e.do(0, "group", "remove", "g1", "dave")
	if got := e.do(0, "group", "get", "g1").stdout; got != "carol\nerin\n" {
		t.Errorf("popbox group get = %q", got)
	}
	var g struct {
		Name   string
		Queues []string
	}
	e.json(0, &g, "group", "get", "g1")
	if g.Name != "g1" || strings.Join(g.Queues, ",") != "carol,erin" {
		t.Errorf("popbox group get --json = %+v", g)
	}
	tid := strings.TrimSpace(e.do(0, "push", "-g", "g1", "to the group").stdout)
	for _, q := range []string{"carol", "erin"} {
		if got := e.do(0, "pop", q, "--tids").stdout; got != tid+"\tto the group\n" {
			t.Errorf("popbox pop %s = %q", q, got)
		}
	}
	e.do(0, "group", "delete", "g1")
	if got := e.do(0, "group", "get", "g1").stdout; got != "" {
		t.Errorf("deleted group lists %q", got)
	}
	r := e.do(1, "group", "add", "nosuch", "q")
	if !strings.Contains(r.stderr, "nosuch does not exist") {
		t.Errorf("modify unknown group: stderr %q", r.stderr)
	}
}

func TestCLISubscribe(t *testing.T) {
	e := startCLIEnv(t)
	first := strings.TrimSpace(e.do(0, "push", "-q", "sq", "one").stdout)

	var out, errb testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"subscribe", "sq", "--count", "3", "--json", "--server", e.plain}, &out, &errb)
	}()
	// Wait until the message pushed before is printed and the stream waits
	// on the queue, then push two more: they arrive live.
	testenv.Eventually(t, 20*time.Second, "subscribe printed the first message", func() bool { return strings.Contains(out.String(), first) })
	testenv.Eventually(t, 20*time.Second, "the queue shows a waiting consumer", func() bool {
		r := popbox("queue", "sq", "--json", "--server", e.plain)
		return strings.Contains(r.stdout, `"blocked":true`)
	})
	e.do(0, "push", "-q", "sq", "-p", "H", "two\nlines")
	e.do(0, "push", "-q", "sq", "three")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("subscribe --count 3: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("subscribe --count 3 did not end; printed:\n%s", out.String())
	}
	msgs := jsonLines[message](t, out.String())
	if len(msgs) != 3 || msgs[0].Data != "one" || msgs[1].Data != "two\nlines" || msgs[2].Data != "three" ||
		msgs[1].Priority != "H" || msgs[0].Queue != "sq" || msgs[0].Transaction != first {
		t.Errorf("subscribe printed %+v", msgs)
	}
	var tr transJSON
	e.json(0, &tr, "trans", first)
	if tr.Queues["sq"].State != "Delivered" {
		t.Errorf("streamed message: %+v, want Delivered", tr.Queues)
	}

	// Reliable: each printed message is acknowledged.
	tid := strings.TrimSpace(e.do(0, "push", "-q", "rq", "reliable one").stdout)
	r := e.do(0, "subscribe", "rq", "--reliable", "--count", "1", "--tids")
	if r.stdout != tid+"\treliable one\n" {
		t.Errorf("subscribe --reliable printed %q", r.stdout)
	}
	testenv.Eventually(t, 10*time.Second, "the reliable message is Delivered", func() bool {
		e.json(0, &tr, "trans", tid)
		return tr.Queues["rq"].State == "Delivered"
	})
}

func TestCLIOrgAndTLS(t *testing.T) {
	e := startCLIEnv(t)

	// --org: a separate namespace.
	e.do(0, "push", "--org", "acme", "-q", "inbox", "for acme")
	e.do(3, "pop", "inbox", "--timeout", "1")
	if got := e.do(0, "pop", "--org", "acme", "inbox").stdout; got != "for acme\n" {
		t.Errorf("popbox pop --org acme = %q", got)
	}

	// Secure box on the TLS port, trusted through --cacert.
	tlsFlags := []string{"--server", e.tls, "--cacert", e.cacert}
	box := func(code int, args ...string) result {
		t.Helper()
		r := popbox(append(args, tlsFlags...)...)
		if r.code != code {
			t.Fatalf("popbox %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, code, r.stdout, r.stderr)
		}
		return r
	}
	box(0, "box", "create", "vault", "--box-user", "u1", "--box-password", "s3cret")
	if r := box(1, "box", "create", "vault", "--box-user", "u1", "--box-password", "other"); !strings.Contains(r.stderr, "SEC:vault exists") {
		t.Errorf("second box create: %q", r.stderr)
	}
	box(0, "push", "-q", "vault", "secret message")
	if r := box(1, "pop", "vault"); !strings.Contains(r.stderr, "401") || !strings.Contains(r.stderr, "--user") || !strings.Contains(r.stderr, "--token") {
		t.Errorf("pop without credentials: %q, want the 401 and a hint at --user / --token", r.stderr)
	}
	box(1, "pop", "vault", "--user", "u1", "--password", "wrong")
	t.Setenv("POPBOX_PASSWORD", "s3cret")
	if got := box(0, "peek", "vault", "--user", "u1").stdout; got != "secret message\n" {
		t.Errorf("peek with the box's credentials = %q", got)
	}
	// --insecure instead of --cacert.
	r := popbox("pop", "vault", "--user", "u1", "--server", e.tls, "--insecure")
	if r.code != 0 || r.stdout != "secret message\n" {
		t.Errorf("pop --insecure: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	// Neither: the certificate is refused.
	if r := popbox("peek", "vault", "--server", e.tls); r.code != 1 || !strings.Contains(r.stderr, "certificate") ||
		!strings.Contains(r.stderr, "--cacert") || !strings.Contains(r.stderr, "--insecure") {
		t.Errorf("peek with an untrusted certificate: exit %d, %q, want a hint at --cacert / --insecure", r.code, r.stderr)
	}
	// A box on the plain port is refused by the gateway.
	e.do(1, "box", "create", "plainbox", "--box-user", "u", "--box-password", "p")
}

func TestCLIUsageAndErrors(t *testing.T) {
	// No gateway needed for these.
	for _, tc := range []struct {
		code int
		args []string
		want string // on stderr
	}{
		{2, []string{"pop"}, "missing argument"},
		{2, []string{"push", "hello"}, "give at least one --queue or --group"},
		{2, []string{"push", "-q", "a", "-p", "X", "hello"}, "--priority must be H or L"},
		{2, []string{"push", "-q", "a", "one", "two"}, `unexpected argument "two"`},
		{2, []string{"pop", "q", "--bogus"}, "flag provided but not defined: -bogus"},
		{2, []string{"pop", "q", "--timeout", "soon"}, "want seconds or a duration"},
		{2, []string{"pop", "q", "--ack-timeout", "5"}, "--ack-timeout needs --reliable"},
		{2, []string{"trans", "t", "--state", "Lost"}, "--state must be"},
		{2, []string{"group"}, "Usage:"},
		{2, []string{"group", "frobnicate", "g"}, "unknown action"},
		{2, []string{"group", "set", "g"}, "missing argument"},
		{2, []string{"box", "create", "q", "--server", "https://127.0.0.1:1"}, "--box-user and --box-password are required"},
		{2, []string{"pop", "q", "--server", "ftp://x"}, "scheme must be http or https"},
		{2, []string{"pop", "q", "--user", "u"}, "--user needs --password"},
		{2, []string{"pop", "q", "--token", "t", "--user", "u", "--password", "p"}, "not both"},
		{2, []string{"pop", "q", "--org", "a/b"}, "invalid org"},
		{1, []string{"pop", "q", "--server", "http://127.0.0.1:1"}, "connection refused"},
		{1, []string{"health", "--server", "http://127.0.0.1:1"}, "connection refused"},
		{1, []string{"peek", "q", "--server", "http://127.0.0.1:1"}, "--server URL or POPBOX_SERVER"},
		{1, []string{"push", "-q", "q", "x", "--server", "http://no-such-host.invalid:3001"}, "--server URL or POPBOX_SERVER"},
	} {
		r := popbox(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("popbox %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.want)
		}
	}
	// "--" ends the flags: a payload that starts with a dash.
	if r := popbox("push", "-q", "a", "--server", "http://127.0.0.1:1", "--", "-5"); r.code != 1 {
		t.Errorf("push -- -5: exit %d, stderr %q (want a network error, not a usage error)", r.code, r.stderr)
	}

	// Help: the client commands and the exit codes are in `popbox help`.
	r := popbox("help")
	for _, want := range []string{"popbox push", "popbox pop", "popbox peek", "popbox trans", "popbox group", "popbox box create",
		"popbox subscribe", "--server", "--token", "--org", "--insecure", "--json", "Exit codes", "3  nothing there"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("popbox help: exit %d, no %q in\n%s", r.code, want, r.stdout)
		}
	}
	for _, cmd := range [][]string{{"push"}, {"pop"}, {"peek"}, {"queue"}, {"ack"}, {"trans"}, {"subscribe"}, {"health"},
		{"group", "get"}, {"group", "set"}, {"box", "create"}} {
		r := popbox(append(cmd, "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: popbox "+strings.Join(cmd, " ")) || !strings.Contains(r.stdout, "-server") {
			t.Errorf("popbox %s --help: exit %d\n%s%s", strings.Join(cmd, " "), r.code, r.stdout, r.stderr)
		}
	}
	if r := popbox("group", "--help"); r.code != 0 || !strings.Contains(r.stdout, "popbox group add") {
		t.Errorf("popbox group --help: exit %d %q", r.code, r.stdout)
	}
	if r := popbox("frobnicate"); r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d %q", r.code, r.stderr)
	}
}

// selfSignedCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost, and its key.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = testenv.SelfSignedCert(t, dir)
	return certFile, keyFile
}
