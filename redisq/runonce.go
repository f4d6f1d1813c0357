package redisq

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// go-redis sends a command, or a whole pipeline, again when its reply does
// not come: on a read timeout or a dropped connection (up to MaxRetries
// times, 3 by default; the Cluster client also under MaxRedirects). The
// server may well have run the first one (it was only slow: a pause, a
// long fork, a saturated box), so a script that is not idempotent would
// run twice: a push would queue the message twice (delivered twice), a pop
// would take twice (the first batch lost). Turning retries off for the
// whole client would also lose them where they are harmless and useful
// (reads, idempotent scripts, a stale pooled connection), so only the
// scripts of runOnce are sent as commands go-redis must not retry: its
// retry loops skip a command whose NoRetry() is true, and a pipeline that
// holds one (the Cluster client too). Such a call fails with the timeout
// instead; what the server did is then unknown, as for any write whose
// reply was lost, and the callers treat it so (a pop hands nothing out and
// undoes the call, see popundo.go).

// runOnce are the scripts that must not run twice for one call.
var runOnce = map[*redis.Script]bool{
	popScript:          true,
	popFusedScript:     true,
	pushScript:         true,
	provisionAllScript: true,
	handBackScript:     true,
}

// noRetryCmd is a script call go-redis must not resend (see runOnce).
type noRetryCmd struct{ *redis.Cmd }

// NoRetry tells go-redis' retry loops not to send the command again.
func (noRetryCmd) NoRetry() bool { return true }

// processor is anything that sends (or queues) a command: a client, a
// pipeline, a connection, the autopipeliner.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// scriptProcessor is a processor that can also load a script.
type scriptProcessor interface {
	processor
	redis.Scripter
}

// evalSha sends (or, on a pipeline, queues) one EVALSHA of sc, as a
// command go-redis does not retry when sc is in runOnce.
func evalSha(ctx context.Context, p processor, sc *redis.Script, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "evalsha", sc.Hash(), len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	if runOnce[sc] {
		_ = p.Process(ctx, noRetryCmd{cmd})
	} else {
		_ = p.Process(ctx, cmd)
	}
	return cmd
}

// runScriptOn runs one call of sc on p and waits for its result. When the
// server does not have the script (NOSCRIPT: a failover to a server that
// never saw it, SCRIPT FLUSH) it loads it and runs the call again: NOSCRIPT
// means the call did not run.
func runScriptOn(ctx context.Context, p scriptProcessor, sc *redis.Script, keys []string, args []any) *redis.Cmd {
	cmd := evalSha(ctx, p, sc, keys, args)
	if isNoScript(cmd.Err()) {
		if err := sc.Load(ctx, p).Err(); err != nil {
			cmd.SetErr(err)
			return cmd
		}
		cmd = evalSha(ctx, p, sc, keys, args)
	}
	return cmd
}
