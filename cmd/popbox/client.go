package main

// The command-line client: popbox push, pop, peek, queue, ack, trans,
// group, box create, subscribe and health, all thin wrappers around the
// client package.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/popbox/popbox/client"
)

// Exit codes of the client commands.
const (
	exitOK    = 0 // done
	exitError = 1 // the server refused, or the network failed
	exitUsage = 2 // bad command line
	exitEmpty = 3 // nothing there: pop got no message, trans found no transaction
)

// clientUsage is the part of `popbox help` about the client commands.
const clientUsage = `
Client commands (talk to a running gateway over HTTP):
  popbox push [flags] PAYLOAD      provision a message; prints its transaction id
        -q QUEUE (repeatable or a,b,c) and/or -g GROUP; -p H|L (default L);
        --callback URL, --expires-in D, --expires-at T, --delay D, --meta k=v;
        PAYLOAD "-" reads standard input
  popbox pop [flags] QUEUE         take messages, one payload a line (--max N,
        --timeout D; --reliable [--ack-timeout D] keeps them Blocked until
        'popbox ack'; --tids prefixes each line with the transaction id)
  popbox peek [flags] QUEUE        show the head of a queue without taking it
  popbox queue [flags] QUEUE       size, blocked, last pop, H and L transactions
  popbox ack [flags] QUEUE TID...  acknowledge reliably popped messages
  popbox trans [flags] TID         a transaction and the state of each queue
        (--state All|Pending|Blocked|Delivered|summary|none)
  popbox group get|set|add|remove|delete [flags] NAME [QUEUE...]
                                   read, store, change or delete a group
  popbox box create [flags] QUEUE --box-user U --box-password P
                                   create a secure box on the TLS port
                                   (default server https://127.0.0.1:3002)
  popbox subscribe [flags] QUEUE   print messages as they arrive (Server-Sent
        Events) until Ctrl-C or --count N; --reliable acks each once printed
  popbox health [--ready]          check /healthz (/readyz): container checks

Flags of every client command (before or after the arguments):
  --server URL           gateway (default http://127.0.0.1:3001; $POPBOX_SERVER)
  --user U --password P  HTTP Basic: a secure box's or the administrator's
                         (the password may come from $POPBOX_PASSWORD)
  --token JWT            Bearer token (or $POPBOX_TOKEN)
  --org ORG              tenant: paths get the /org/ORG prefix
  --cacert FILE          trust this PEM CA (e.g. a self-signed certificate)
  --insecure             do not verify the server's TLS certificate
  --json                 JSON output (messages: one JSON object a line)
  popbox COMMAND --help shows a command's own flags.

Exit codes of the client commands:
  0  done
  1  server or network error: refused, unreachable (the reason is on stderr)
  2  usage error (bad flag or argument)
  3  nothing there: pop got no message, trans found no such transaction
`

// runClient runs the command-line client subcommands; ok is false for an
// unknown command.
func runClient(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	var (
		name string
		fn   func(context.Context, *cli, []string) int
	)
	rest := args[1:]
	switch args[0] {
	case "push":
		name, fn = "push", cmdPush
	case "pop":
		name, fn = "pop", cmdPop
	case "peek":
		name, fn = "peek", cmdPeek
	case "queue":
		name, fn = "queue", cmdQueue
	case "ack":
		name, fn = "ack", cmdAck
	case "trans":
		name, fn = "trans", cmdTrans
	case "subscribe":
		name, fn = "subscribe", cmdSubscribe
	case "health":
		name, fn = "health", cmdHealth
	case "group":
		if len(rest) == 0 || isHelp(rest[0]) {
			return groupUsage(stdout, stderr, len(rest) != 0), true
		}
		switch rest[0] {
		case "get", "set", "add", "remove", "delete":
			name, fn = "group "+rest[0], cmdGroup
			rest = rest[1:]
		default:
			fmt.Fprintf(stderr, "popbox group: unknown action %q (get, set, add, remove or delete)\n", rest[0])
			return exitUsage, true
		}
	case "box":
		if len(rest) == 0 || isHelp(rest[0]) {
			w, c := stderr, exitUsage
			if len(rest) != 0 {
				w, c = stdout, exitOK
			}
			fmt.Fprintln(w, "Usage: popbox box create [flags] QUEUE --box-user U --box-password P\n\nRun 'popbox box create --help' for the flags.")
			return c, true
		}
		if rest[0] != "create" {
			fmt.Fprintf(stderr, "popbox box: unknown action %q (create)\n", rest[0])
			return exitUsage, true
		}
		name, fn, rest = "box create", cmdBoxCreate, rest[1:]
	default:
		return 0, false
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &cli{name: "popbox " + name, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return fn(ctx, c, rest), true
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "help" }

func groupUsage(stdout, stderr io.Writer, asked bool) int {
	w, code := stderr, exitUsage
	if asked {
		w, code = stdout, exitOK
	}
	fmt.Fprint(w, `Usage:
  popbox group get [flags] NAME               list the queues of a group
  popbox group set [flags] NAME QUEUE...      store a group with exactly these queues
  popbox group add [flags] NAME QUEUE...      add queues to an existing group
  popbox group remove [flags] NAME QUEUE...   remove queues from an existing group
  popbox group delete [flags] NAME            delete a group

Queues may also be given comma-separated. Run 'popbox group get --help' for the flags.
`)
	return code
}

// cli is the state of one client command: its flags and outputs.
type cli struct {
	name           string // "popbox push"
	stdout, stderr io.Writer
	getenv         func(string) string
	fs             *flag.FlagSet
	synopsis, help string

	server, user, password, token, org, cacert string
	insecure, json                             bool
}

// flags creates the command's flag set with the common flags; the server
// default is $POPBOX_SERVER, else def.
func (c *cli) flags(synopsis, help, def string) *flag.FlagSet {
	c.synopsis, c.help = synopsis, help
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if env := c.getenv("POPBOX_SERVER"); env != "" {
		def = env
	}
	fs.StringVar(&c.server, "server", def, "gateway `URL` (env POPBOX_SERVER)")
	fs.StringVar(&c.user, "user", "", "HTTP Basic `user` (a secure box's or the administrator's)")
	fs.StringVar(&c.password, "password", "", "HTTP Basic `password` (env POPBOX_PASSWORD)")
	fs.StringVar(&c.token, "token", "", "Bearer `JWT` (env POPBOX_TOKEN)")
	fs.StringVar(&c.org, "org", "", "tenant `name`: paths get the /org/<name> prefix")
	fs.StringVar(&c.cacert, "cacert", "", "PEM `file` of a CA to trust (e.g. the gateway's self-signed certificate)")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify the server's TLS certificate")
	fs.BoolVar(&c.json, "json", false, "machine-readable JSON output")
	c.fs = fs
	return fs
}

// parse parses args, flags and arguments in any order ("--" ends the
// flags). done is true when the command must stop with code (help or a
// usage error).
func (c *cli) parse(args []string) (pos []string, code int, done bool) {
	for {
		err := c.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(c.stdout)
			return nil, exitOK, true
		}
		if err != nil {
			return nil, c.usagef("%v", err), true
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, 0, false
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), 0, false
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *cli) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", c.synopsis, strings.TrimSpace(c.help))
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nExit codes: 0 done, 1 server or network error, 2 usage error, 3 nothing there (pop: no message; trans: unknown transaction).\n")
}

// usagef reports a usage error and returns exitUsage.
func (c *cli) usagef(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\nUsage: %s\nRun '%s --help' for the flags.\n", c.name, fmt.Sprintf(format, a...), c.synopsis, c.name)
	return exitUsage
}

// fail reports a server or network error and returns exitError.
func (c *cli) fail(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		fmt.Fprintf(c.stderr, "%s: interrupted\n", c.name)
		return exitError
	}
	fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
	return exitError
}

// client builds the API client from the common flags and the environment;
// a problem with them is a usage error.
func (c *cli) client() (*client.Client, int) {
	tok := c.token
	if tok == "" && c.user == "" {
		tok = c.getenv("POPBOX_TOKEN")
	}
	pw := c.password
	if pw == "" && c.user != "" {
		pw = c.getenv("POPBOX_PASSWORD")
	}
	if c.user != "" && pw == "" {
		return nil, c.usagef("--user needs --password (or POPBOX_PASSWORD)")
	}
	if c.user == "" && c.password != "" {
		return nil, c.usagef("--password needs --user")
	}
	cl, err := client.New(c.server, client.Options{
		User: c.user, Password: pw, Token: tok, Org: c.org,
		CAFile: c.cacert, Insecure: c.insecure, UserAgent: "popbox-cli",
	})
	if err != nil {
		return nil, c.usagef("%s", strings.TrimPrefix(err.Error(), "popbox client: "))
	}
	return cl, 0
}

// setup parses the command line and builds the client; want is the number
// of positional arguments (min, max; max < 0 = no limit).
func (c *cli) setup(args []string, min, max int) (*client.Client, []string, int, bool) {
	pos, code, done := c.parse(args)
	if done {
		return nil, nil, code, true
	}
	switch {
	case len(pos) < min:
		return nil, nil, c.usagef("missing argument"), true
	case max >= 0 && len(pos) > max:
		return nil, nil, c.usagef("unexpected argument %q", pos[max]), true
	}
	cl, code := c.client()
	if cl == nil {
		return nil, nil, code, true
	}
	return cl, pos, 0, false
}

func (c *cli) printJSON(v any) {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// printMessages prints messages one a line: the payload, prefixed by the
// transaction id and a tab with tids; JSON objects with --json.
func (c *cli) printMessages(msgs []client.Message, tids bool) error {
	for _, m := range msgs {
		if err := c.printMessage(m, tids); err != nil {
			return err
		}
	}
	return nil
}

func (c *cli) printMessage(m client.Message, tids bool) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(m)
	}
	var err error
	if tids {
		_, err = fmt.Fprintf(c.stdout, "%s\t%s\n", m.Transaction, m.Payload)
	} else {
		_, err = fmt.Fprintln(c.stdout, m.Payload)
	}
	return err
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// metaFlag is a repeatable key=value flag.
type metaFlag map[string]string

func (m metaFlag) String() string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

// secondsFlag is a duration given as a Go duration ("90s", "1h") or a
// number of seconds ("90").
type secondsFlag time.Duration

func (d *secondsFlag) String() string {
	if *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *secondsFlag) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return errors.New("must not be negative")
		}
		*d = secondsFlag(time.Duration(n * float64(time.Second)))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want seconds or a duration such as 30s or 1h, got %q", s)
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	*d = secondsFlag(v)
	return nil
}

// timeFlag is an absolute time: unix seconds or RFC 3339.
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		f.t = time.Unix(n, 0)
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("want unix seconds or an RFC 3339 time, got %q", s)
	}
	f.t = t
	return nil
}

func cmdPush(ctx context.Context, c *cli, args []string) int {
	var (
		queues, groups listFlag
		meta           = metaFlag{}
		priority       string
		callback       string
		expiresIn      secondsFlag
		delay          secondsFlag
		expiresAt      timeFlag
	)
	fs := c.flags("popbox push [flags] -q QUEUE[,QUEUE...] [-g GROUP] PAYLOAD", `
Provision a message (POST /trans) into the given queues and the members of
the given groups, and print its transaction id. PAYLOAD "-" reads the
message from standard input (one trailing newline removed).`, client.DefaultServer)
	fs.Var(&queues, "queue", "target `queue` (repeatable, or comma-separated)")
	fs.Var(&queues, "q", "short for --queue")
	fs.Var(&groups, "group", "target `group`: its current members (repeatable, or comma-separated)")
	fs.Var(&groups, "g", "short for --group")
	fs.StringVar(&priority, "priority", "L", "`H` or L: H messages are popped before L ones")
	fs.StringVar(&priority, "p", "L", "short for --priority")
	fs.StringVar(&callback, "callback", "", "`URL` POSTed when the message is delivered to each queue")
	fs.Var(&expiresIn, "expires-in", "expire after this `duration` (default: the gateway's, 1h)")
	fs.Var(&expiresAt, "expires-at", "expire at this `time` (unix seconds or RFC 3339)")
	fs.Var(&delay, "delay", "provision after this `duration` (deferred, kept in Redis)")
	fs.Var(meta, "meta", "extra transaction metadata `key=value` (repeatable)")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	switch p := strings.ToUpper(priority); p {
	case "H", "L":
		priority = p
	default:
		return c.usagef("--priority must be H or L, got %q", priority)
	}
	if len(queues) == 0 && len(groups) == 0 {
		return c.usagef("give at least one --queue or --group")
	}
	payload := pos[0]
	if payload == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintf(c.stderr, "%s: reading standard input: %v\n", c.name, err)
			return exitUsage
		}
		payload = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	for _, k := range []string{"payload", "priority", "queue", "groups", "callback", "expirationDate", "expirationDelay"} {
		if _, ok := meta[k]; ok {
			return c.usagef("--meta %s: set it with its own flag", k)
		}
	}
	tid, err := cl.Push(ctx, client.Provision{
		Payload: payload, Priority: priority, Queues: queues, Groups: groups,
		Callback: callback, ExpiresAt: expiresAt.t, ExpiresIn: time.Duration(expiresIn),
		Delay: time.Duration(delay), Meta: meta,
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	if c.json {
		c.printJSON(map[string]string{"transaction": tid})
	} else {
		fmt.Fprintln(c.stdout, tid)
	}
	return exitOK
}

func cmdPop(ctx context.Context, c *cli, args []string) int {
	var (
		max            int
		timeout, ackTO secondsFlag
		reliable, tids bool
	)
	fs := c.flags("popbox pop [flags] QUEUE", `
Take messages from a queue (POST /queue/QUEUE/pop), waiting up to --timeout
when it is empty, and print them one payload a line (--tids: the
transaction id, a tab, the payload; --json: one JSON object a line).
With --reliable (POST .../poprel) the messages stay Blocked until
acknowledged with 'popbox ack QUEUE TID...' within --ack-timeout, else they
go back to the queue; the transaction ids are then printed too.
Exits with 3 when no message came.`, client.DefaultServer)
	fs.IntVar(&max, "max", 0, "take at most `N` messages (default: the gateway's, 1000)")
	fs.Var(&timeout, "timeout", "wait this `duration` for a message (seconds or 30s; default 5s, at most 300s)")
	fs.BoolVar(&reliable, "reliable", false, "reliable pop: the messages wait for an ack")
	fs.Var(&ackTO, "ack-timeout", "with --reliable: the ack must come within this `duration` (default 20s)")
	fs.BoolVar(&tids, "tids", false, "print the transaction id before each payload")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	if max < 0 {
		return c.usagef("--max must not be negative")
	}
	if ackTO > 0 && !reliable {
		return c.usagef("--ack-timeout needs --reliable")
	}
	opts := client.PopOptions{Max: max, Timeout: time.Duration(timeout), AckTimeout: time.Duration(ackTO)}
	var (
		msgs []client.Message
		err  error
	)
	if reliable {
		msgs, err = cl.PopReliable(ctx, pos[0], opts)
	} else {
		msgs, err = cl.Pop(ctx, pos[0], opts)
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	if len(msgs) == 0 {
		fmt.Fprintf(c.stderr, "%s: no message in %s\n", c.name, pos[0])
		return exitEmpty
	}
	if err := c.printMessages(msgs, tids || reliable); err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
}

func cmdPeek(ctx context.Context, c *cli, args []string) int {
	var (
		max  int
		tids bool
	)
	fs := c.flags("popbox peek [flags] QUEUE", `
Show the messages at the head of a queue (H before L) without taking them
(GET /queue/QUEUE/peek): nothing changes, no callback. One payload a line
(--tids: transaction id, tab, payload; --json: one JSON object a line).`, client.DefaultServer)
	fs.IntVar(&max, "max", 0, "show at most `N` messages (default: the gateway's, 1000)")
	fs.BoolVar(&tids, "tids", false, "print the transaction id before each payload")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	if max < 0 {
		return c.usagef("--max must not be negative")
	}
	msgs, err := cl.Peek(ctx, pos[0], client.PopOptions{Max: max})
	if err != nil {
		return c.fail(ctx, err)
	}
	if err := c.printMessages(msgs, tids); err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
}

func cmdQueue(ctx context.Context, c *cli, args []string) int {
	c.flags("popbox queue [flags] QUEUE", `
Show a queue (GET /queue/QUEUE): its size, whether a consumer waits on it
(blocked), the time of the last pop and the transactions waiting, H then L.`, client.DefaultServer)
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	info, err := cl.Queue(ctx, pos[0])
	if err != nil {
		return c.fail(ctx, err)
	}
	if c.json {
		c.printJSON(info)
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "queue\t%s\n", pos[0])
	fmt.Fprintf(tw, "size\t%d\n", info.Size)
	fmt.Fprintf(tw, "blocked\t%v\n", info.Blocked)
	if t := info.LastPopTime(); !t.IsZero() {
		fmt.Fprintf(tw, "last pop\t%s\n", t.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "last pop\tnever\n")
	}
	for _, e := range info.High {
		fmt.Fprintf(tw, "H\t%s\n", e.ID)
	}
	for _, e := range info.Low {
		fmt.Fprintf(tw, "L\t%s\n", e.ID)
	}
	_ = tw.Flush()
	return exitOK
}

func cmdAck(ctx context.Context, c *cli, args []string) int {
	c.flags("popbox ack [flags] QUEUE TID...", `
Acknowledge messages taken with 'popbox pop --reliable' (or a reliable
subscription) from QUEUE: they become Delivered. Exits with 1 if any of
them could not be acknowledged (not Blocked in that queue any more).`, client.DefaultServer)
	cl, pos, code, done := c.setup(args, 2, -1)
	if done {
		return code
	}
	res, err := cl.Ack(ctx, pos[0], pos[1:]...)
	if err != nil {
		return c.fail(ctx, err)
	}
	code = exitOK
	for _, r := range res {
		if c.json {
			c.printJSON(r)
		} else if r.Err == "" {
			fmt.Fprintf(c.stdout, "acked %s\n", r.Transaction)
		}
		if r.Err != "" {
			fmt.Fprintf(c.stderr, "%s: %s\n", c.name, r.Err)
			code = exitError
		}
	}
	return code
}

// transOut is the --json output of popbox trans.
type transOut struct {
	ID      string                       `json:"transaction"`
	Meta    map[string]string            `json:"meta"`
	Queues  map[string]client.QueueState `json:"queues,omitempty"`
	Summary map[string]int               `json:"summary,omitempty"`
}

func cmdTrans(ctx context.Context, c *cli, args []string) int {
	var state string
	c.flags("popbox trans [flags] TID", `
Show a transaction (GET /trans/TID?queues=STATE): its payload, priority,
expiry, callback and other metadata, and the state of each of its queues
(Pending, Blocked or Delivered). Exits with 3 when the transaction is
unknown or expired.`, client.DefaultServer).StringVar(&state, "state", "All",
		"list the queues in this `state`: All, Pending, Blocked, Delivered, summary (counts), or none")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	switch strings.ToLower(state) {
	case "all":
		state = "All"
	case "pending", "blocked", "delivered":
		state = strings.ToUpper(state[:1]) + strings.ToLower(state[1:])
	case "summary":
		state = "summary"
	case "none", "":
		state = ""
	default:
		return c.usagef("--state must be All, Pending, Blocked, Delivered, summary or none, got %q", state)
	}
	t, err := cl.TransWithState(ctx, pos[0], state)
	if errors.Is(err, client.ErrNotFound) {
		fmt.Fprintf(c.stderr, "%s: transaction %s not found (unknown or expired)\n", c.name, pos[0])
		return exitEmpty
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	if c.json {
		c.printJSON(transOut{ID: t.ID, Meta: t.Meta, Queues: t.Queues, Summary: t.Summary})
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "transaction\t%s\n", t.ID)
	keys := make([]string, 0, len(t.Meta))
	for k := range t.Meta {
		keys = append(keys, k)
	}
	order := map[string]int{"payload": 0, "priority": 1, "expirationDate": 2, "expirationDelay": 3, "callback": 4}
	sort.Slice(keys, func(i, j int) bool {
		oi, iok := order[keys[i]]
		oj, jok := order[keys[j]]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		v := t.Meta[k]
		if k == "expirationDate" {
			if at := t.ExpiresAt(); !at.IsZero() {
				v += " (" + at.UTC().Format(time.RFC3339) + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, printable(v))
	}
	if state == "summary" {
		sk := make([]string, 0, len(t.Summary))
		for k := range t.Summary {
			sk = append(sk, k)
		}
		sort.Strings(sk)
		for _, k := range sk {
			fmt.Fprintf(tw, "%s\t%d\n", k, t.Summary[k])
		}
	} else if state != "" {
		fmt.Fprintf(tw, "queues\t%d\n", len(t.Queues))
		for _, q := range t.QueueNames() {
			fmt.Fprintf(tw, "  %s\t%s\n", q, t.Queues[q].State)
		}
	}
	_ = tw.Flush()
	return exitOK
}

// printable quotes a value that would break the table (newlines, tabs,
// control characters).
func printable(s string) string {
	for _, r := range s {
		if unicode.IsControl(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func cmdGroup(ctx context.Context, c *cli, args []string) int {
	action := strings.TrimPrefix(c.name, "popbox group ")
	synopsis := map[string]string{
		"get":    "popbox group get [flags] NAME",
		"set":    "popbox group set [flags] NAME QUEUE...",
		"add":    "popbox group add [flags] NAME QUEUE...",
		"remove": "popbox group remove [flags] NAME QUEUE...",
		"delete": "popbox group delete [flags] NAME",
	}[action]
	help := map[string]string{
		"get":    "List the queues of a group, one a line (none for an unknown group).",
		"set":    "Store a group with exactly these queues (POST /group); queues may be comma-separated.",
		"add":    "Add queues to an existing group (PUT /group/NAME).",
		"remove": "Remove queues from an existing group (PUT /group/NAME).",
		"delete": "Delete a group (DELETE /group/NAME).",
	}[action]
	c.flags(synopsis, help, client.DefaultServer)
	min, max := 2, -1
	if action == "get" || action == "delete" {
		min, max = 1, 1
	}
	cl, pos, code, done := c.setup(args, min, max)
	if done {
		return code
	}
	name := pos[0]
	var queues listFlag
	for _, q := range pos[1:] {
		_ = queues.Set(q)
	}
	if min == 2 && len(queues) == 0 {
		return c.usagef("missing queues")
	}
	var err error
	switch action {
	case "get":
		var qs []string
		if qs, err = cl.Group(ctx, name); err != nil {
			return c.fail(ctx, err)
		}
		if c.json {
			c.printJSON(map[string]any{"name": name, "queues": qs})
		} else {
			for _, q := range qs {
				fmt.Fprintln(c.stdout, q)
			}
		}
		return exitOK
	case "set":
		err = cl.SetGroup(ctx, name, queues)
	case "add":
		err = cl.ModifyGroup(ctx, name, queues, nil)
	case "remove":
		err = cl.ModifyGroup(ctx, name, nil, queues)
	case "delete":
		err = cl.DeleteGroup(ctx, name)
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	past := map[string]string{"set": "stored", "add": "modified", "remove": "modified", "delete": "deleted"}[action]
	if c.json {
		c.printJSON(map[string]any{"ok": true, "name": name, "action": action})
	} else {
		fmt.Fprintf(c.stdout, "group %s %s\n", name, past)
	}
	return exitOK
}

func cmdBoxCreate(ctx context.Context, c *cli, args []string) int {
	var boxUser, boxPassword string
	fs := c.flags("popbox box create [flags] QUEUE --box-user U --box-password P", `
Create a secure box (POST /queue on the TLS port): a queue of the secure
namespace that only these credentials (or the administrator's) may
consume. --box-password "-" reads the password from the first line of
standard input; POPBOX_BOX_PASSWORD is used when the flag is not given.
The default server is the TLS port, https://127.0.0.1:3002 (with a
self-signed certificate give --cacert FILE or --insecure).`, "https://127.0.0.1:3002")
	fs.StringVar(&boxUser, "box-user", "", "`user` of the new box")
	fs.StringVar(&boxPassword, "box-password", "", "`password` of the new box (\"-\" = stdin; env POPBOX_BOX_PASSWORD)")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	if boxPassword == "" {
		boxPassword = c.getenv("POPBOX_BOX_PASSWORD")
	}
	if boxPassword == "-" {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(c.stderr, "%s: reading standard input: %v\n", c.name, err)
			return exitUsage
		}
		boxPassword = strings.TrimRight(line, "\r\n")
	}
	if boxUser == "" || boxPassword == "" {
		return c.usagef("--box-user and --box-password are required")
	}
	if err := cl.CreateBox(ctx, pos[0], boxUser, boxPassword); err != nil {
		return c.fail(ctx, err)
	}
	if c.json {
		c.printJSON(map[string]any{"ok": true, "queue": pos[0]})
	} else {
		fmt.Fprintf(c.stdout, "secure box %s created\n", pos[0])
	}
	return exitOK
}

func cmdSubscribe(ctx context.Context, c *cli, args []string) int {
	var (
		count          int
		reliable, tids bool
		ackTO          secondsFlag
	)
	fs := c.flags("popbox subscribe [flags] QUEUE", `
Print the messages of a queue as they arrive (Server-Sent Events, GET
/queue/QUEUE/events), one payload a line (--tids: transaction id, tab,
payload; --json: one JSON object a line), until Ctrl-C (exit 0) or --count
messages. Messages written to a plain stream count as Delivered even if
they were still on the way when the command stopped; with --reliable each
message is acknowledged only once printed, and one that was not goes back
to the queue after --ack-timeout.`, client.DefaultServer)
	fs.IntVar(&count, "count", 0, "stop after `N` messages (0 = until interrupted)")
	fs.BoolVar(&reliable, "reliable", false, "reliable delivery: acknowledge each message once printed")
	fs.Var(&ackTO, "ack-timeout", "with --reliable: how long the gateway waits for an ack (default 20s)")
	fs.BoolVar(&tids, "tids", false, "print the transaction id before each payload")
	cl, pos, code, done := c.setup(args, 1, 1)
	if done {
		return code
	}
	if count < 0 {
		return c.usagef("--count must not be negative")
	}
	if ackTO > 0 && !reliable {
		return c.usagef("--ack-timeout needs --reliable")
	}
	sub, err := cl.Subscribe(ctx, pos[0], client.SubscribeOptions{Reliable: reliable, AckTimeout: time.Duration(ackTO)})
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return c.fail(ctx, err)
	}
	defer sub.Close()
	for n := 0; count == 0 || n < count; n++ {
		m, err := sub.Next()
		if err != nil {
			if ctx.Err() != nil {
				return exitOK // interrupted: the normal way to stop
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the gateway closed the stream")
			}
			return c.fail(ctx, err)
		}
		if err := c.printMessage(m, tids); err != nil {
			return c.fail(ctx, fmt.Errorf("writing output: %w", err))
		}
		if reliable {
			res, err := sub.Ack(ctx, m.Transaction)
			if err != nil {
				return c.fail(ctx, fmt.Errorf("ack %s: %w", m.Transaction, err))
			}
			for _, r := range res {
				if r.Err != "" {
					fmt.Fprintf(c.stderr, "%s: ack %s: %s\n", c.name, r.Transaction, r.Err)
				}
			}
		}
	}
	return exitOK
}

func cmdHealth(ctx context.Context, c *cli, args []string) int {
	var ready bool
	c.flags("popbox health [flags]", `
Check that the gateway is up (GET /healthz) or, with --ready, that it
reaches Redis (GET /readyz). Prints "ok" and exits with 0, else exits with
1. Meant for container health checks (the image has no shell or curl).`, client.DefaultServer).BoolVar(&ready, "ready", false, "check /readyz instead of /healthz")
	cl, _, code, done := c.setup(args, 0, 0)
	if done {
		return code
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	check := cl.Health
	if ready {
		check = cl.Ready
	}
	if err := check(cctx); err != nil {
		return c.fail(ctx, err)
	}
	if c.json {
		c.printJSON(map[string]bool{"ok": true})
	} else {
		fmt.Fprintln(c.stdout, "ok")
	}
	return exitOK
}
