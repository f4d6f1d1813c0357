package main

// The client commands (push, pop, peek, queue, ack, trans, group, box
// create, subscribe, health), each parsing its flags and calling the
// client package.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/popbox/popbox/client"
)

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
		max     int
		timeout secondsFlag
		take    takeFlags
	)
	fs := c.flags("popbox pop [flags] QUEUE", `
Take messages from a queue (POST /queue/QUEUE/pop), waiting up to --timeout
when it is empty, and print them one payload a line (--tids: the
transaction id, a tab, the payload; --json: one JSON object a line, with
the priority). With --reliable (POST .../poprel) the messages stay Blocked until
acknowledged with 'popbox ack QUEUE TID...' within --ack-timeout, else they
go back to the queue; the transaction ids are then printed too.
Exits with 3 when no message came.`, client.DefaultServer)
	fs.IntVar(&max, "max", 0, "take at most `N` messages (default: the gateway's, 1000)")
	fs.Var(&timeout, "timeout", "wait this `duration` for a message (seconds or 30s; default 5s, at most 300s)")
	take.define(fs, "reliable pop: the messages wait for an ack")
	cl, queue, code, done := c.setupTake(args, &take, "max", &max)
	if done {
		return code
	}
	opts := client.PopOptions{Max: max, Timeout: time.Duration(timeout), AckTimeout: time.Duration(take.ackTO)}
	var (
		msgs []client.Message
		err  error
	)
	if take.reliable {
		msgs, err = cl.PopReliable(ctx, queue, opts)
	} else {
		msgs, err = cl.Pop(ctx, queue, opts)
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	return c.showMessages(ctx, cl, queue, msgs, take.tids || take.reliable)
}

func cmdPeek(ctx context.Context, c *cli, args []string) int {
	var (
		max  int
		tids bool
	)
	fs := c.flags("popbox peek [flags] QUEUE", `
Show the messages at the head of a queue (H before L) without taking them
(GET /queue/QUEUE/peek): nothing changes, no callback. One payload a line
(--tids: transaction id, tab, payload; --json: one JSON object a line,
with the priority). Exits with 3 when the queue is empty.`, client.DefaultServer)
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
	return c.showMessages(ctx, cl, pos[0], msgs, tids)
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
		"set":    "Add queues to a group, creating it if needed (POST /group; members it has stay); queues may be comma-separated.",
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
		count int
		take  takeFlags
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
	take.define(fs, "reliable delivery: acknowledge each message once printed")
	cl, queue, code, done := c.setupTake(args, &take, "count", &count)
	if done {
		return code
	}
	sub, err := cl.Subscribe(ctx, queue, client.SubscribeOptions{Reliable: take.reliable, AckTimeout: time.Duration(take.ackTO)})
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
		if err := c.printMessage(m, take.tids); err != nil {
			return c.fail(ctx, fmt.Errorf("writing output: %w", err))
		}
		if take.reliable {
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
