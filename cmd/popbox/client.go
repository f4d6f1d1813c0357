package main

// The command-line client: popbox push, pop, peek, queue, ack, trans,
// group, box create, subscribe and health, all thin wrappers around the
// client package.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/popbox/popbox/client"
)

// Exit codes of the client commands.
const (
	exitOK    = 0 // done
	exitError = 1 // the server refused, or the network failed
	exitUsage = 2 // bad command line
	exitEmpty = 3 // nothing there: pop or peek got no message, trans found no transaction
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
  3  nothing there: pop or peek got no message, trans found no such transaction
`

// runClient runs the command-line client subcommands; ok is false for an
// unknown command.
func runClient(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	name, fn, rest := args[0], clientCommands[args[0]], args[1:]
	switch name {
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
			w, c := usageOutput(stdout, stderr, len(rest) != 0)
			fmt.Fprintln(w, "Usage: popbox box create [flags] QUEUE --box-user U --box-password P\n\nRun 'popbox box create --help' for the flags.")
			return c, true
		}
		if rest[0] != "create" {
			fmt.Fprintf(stderr, "popbox box: unknown action %q (create)\n", rest[0])
			return exitUsage, true
		}
		name, fn, rest = "box create", cmdBoxCreate, rest[1:]
	default:
		if fn == nil {
			return 0, false
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &cli{name: "popbox " + name, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return fn(ctx, c, rest), true
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "help" }

// clientCommands are the client subcommands that take no action word,
// by name.
var clientCommands = map[string]func(context.Context, *cli, []string) int{
	"push": cmdPush, "pop": cmdPop, "peek": cmdPeek, "queue": cmdQueue, "ack": cmdAck,
	"trans": cmdTrans, "subscribe": cmdSubscribe, "health": cmdHealth,
}

// usageOutput is where a usage text goes and the exit code: stdout and
// exitOK when the user asked for it, stderr and exitUsage when a command
// was missing.
func usageOutput(stdout, stderr io.Writer, asked bool) (io.Writer, int) {
	if asked {
		return stdout, exitOK
	}
	return stderr, exitUsage
}

func groupUsage(stdout, stderr io.Writer, asked bool) int {
	w, code := usageOutput(stdout, stderr, asked)
	fmt.Fprint(w, `Usage:
  popbox group get [flags] NAME               list the queues of a group
  popbox group set [flags] NAME QUEUE...      add queues to a group (created if needed)
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
	fmt.Fprintf(w, "\nExit codes: 0 done, 1 server or network error, 2 usage error, 3 nothing there (pop, peek: no message; trans: unknown transaction).\n")
}

// usagef reports a usage error and returns exitUsage.
func (c *cli) usagef(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\nUsage: %s\nRun '%s --help' for the flags.\n", c.name, fmt.Sprintf(format, a...), c.synopsis, c.name)
	return exitUsage
}

// takeFlags are the flags of the commands that take messages from a queue
// (pop, subscribe).
type takeFlags struct {
	reliable, tids bool
	ackTO          secondsFlag
}

// define adds --reliable (described by reliableUsage), --ack-timeout and
// --tids to fs.
func (f *takeFlags) define(fs *flag.FlagSet, reliableUsage string) {
	fs.BoolVar(&f.reliable, "reliable", false, reliableUsage)
	fs.Var(&f.ackTO, "ack-timeout", "with --reliable: the ack must come within this `duration` (default 20s)")
	fs.BoolVar(&f.tids, "tids", false, "print the transaction id before each payload")
}

// setupTake is setup for the commands that take messages from one queue
// (pop, subscribe): it also refuses a negative count, given as
// --countFlag, and --ack-timeout without --reliable.
func (c *cli) setupTake(args []string, f *takeFlags, countFlag string, count *int) (*client.Client, string, int, bool) {
	cl, pos, code, done := c.setup(args, 1, 1)
	switch {
	case done:
		return nil, "", code, true
	case *count < 0:
		return nil, "", c.usagef("--%s must not be negative", countFlag), true
	case f.ackTO > 0 && !f.reliable:
		return nil, "", c.usagef("--ack-timeout needs --reliable"), true
	}
	return cl, pos[0], 0, false
}

// fail reports a server or network error and returns exitError.
func (c *cli) fail(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		fmt.Fprintf(c.stderr, "%s: interrupted\n", c.name)
		return exitError
	}
	fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
	if h := hint(err); h != "" {
		fmt.Fprintf(c.stderr, "%s: %s\n", c.name, h)
	}
	return exitError
}

// hint says what to try for the errors a user can fix with a flag: the
// gateway not where the client looks, a certificate not trusted, missing
// or wrong credentials. "" when there is nothing to suggest.
func hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &dnsErr):
		return "no gateway answers at that address: start one, or point the client at it with --server URL or POPBOX_SERVER (default " + client.DefaultServer + ")"
	case errors.As(err, &unknownCA):
		return "the server's certificate is signed by an unknown authority: trust it with --cacert FILE (the gateway's certificate or its CA), or skip the check with --insecure (testing only)"
	case errors.As(err, &hostErr):
		return "the server's certificate is not valid for this host name: use the name it was issued for in --server, or --insecure (testing only)"
	}
	switch client.StatusCode(err) {
	case http.StatusUnauthorized:
		return "credentials missing or refused: give a secure box's (or the administrator's) --user and --password (or POPBOX_PASSWORD), or a JWT with --token (or POPBOX_TOKEN)"
	case http.StatusForbidden:
		return "the credentials do not allow this: check --user / --token (a token's queues and scope), and --org"
	}
	return ""
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

// showMessages prints the messages a pop or peek of queue answered and
// returns the command's exit code: exitEmpty, with a note, when there are
// none. With --json the priorities are looked up first.
func (c *cli) showMessages(ctx context.Context, cl *client.Client, queue string, msgs []client.Message, tids bool) int {
	if len(msgs) == 0 {
		fmt.Fprintf(c.stderr, "%s: no message in %s\n", c.name, queue)
		return exitEmpty
	}
	if c.json {
		cl.FillPriorities(ctx, msgs)
	}
	if err := c.printMessages(msgs, tids); err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
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
