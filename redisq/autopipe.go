package redisq

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// autoPipelineMaxCalls is the largest group of script calls sent through
// the autopipeliner; bigger groups (fan-outs to many queues) go out as one
// explicit pipeline of their own, which needs no coalescing and does not
// hold up the shared stream.
const autoPipelineMaxCalls = 64

// autoPipeline returns the deferred autopipeliner of rdb, which coalesces
// the commands of concurrent callers into shared pipelines. It is go-redis'
// own (v9.22+, experimental) rather than a batcher of ours. How it behaves,
// read from its source (autopipeline.go, v9.23.0):
//
//   - Flush policy: one ordered stream (MaxConcurrentBatches 1). A flusher
//     takes everything queued and sends it as one pipeline; commands that
//     arrive while a batch is in flight form the next batch. With no
//     MaxFlushDelay it never waits on a timer when idle: a lone command on
//     an idle stream flushes at once (awaitExpectedArrivals returns when no
//     batch is in flight and no wave is expected), so an idle gateway pays
//     exactly one round trip, as without it. It only holds a flush while a
//     batch is in flight or the callers it just woke are re-submitting.
//   - Errors are per command: a pipeline sets each command's own reply or
//     error (NOSCRIPT, WRONGTYPE, redis.Nil); a network error fails (and
//     retries) the batch, as it would a lone command.
//   - Cluster: commands are sharded by slot so each batch goes to one node,
//     and the cluster pipeline follows MOVED/ASK per command. Every script
//     of this package keeps its keys in one slot (hash tags).
//   - The context of a queued command is not consulted once it is queued;
//     the connection timeouts bound it.
//   - Blocking and connection-state commands (WAIT, BLPOP, SUBSCRIBE, MULTI)
//     are diverted to a pooled connection; the WAIT path does not use the
//     autopipeliner at all (see pinnedConns).
//
// The deferred face is used (commands return at once, their results block):
// a caller can submit several commands, e.g. the per-message state changes
// of a pop, and wait once, so they share a round trip with each other and
// with other callers. The autopipeliner belongs to the client and stops
// when the client is closed.
func autoPipeline(rdb redis.UniversalClient) (*redis.AutoPipeliner, error) {
	ap, err := rdb.AsyncAutoPipelineWithOptions(&redis.AutoPipelineOptions{MaxBatchSize: 256})
	if err != nil {
		return nil, fmt.Errorf("autopipeline: %w", err)
	}
	return ap, nil
}

// runScriptsAuto runs calls through the deferred autopipeliner: all are
// submitted before any is awaited, so they share round trips. A call that
// hits NOSCRIPT (a failover to a server without the script, SCRIPT FLUSH)
// is sent again once the script is loaded.
func runScriptsAuto(ctx context.Context, ap *redis.AutoPipeliner, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = evalSha(ctx, ap, c.script, c.keys, c.args)
	}
	for i, c := range calls {
		if isNoScript(cmds[i].Err()) {
			cmds[i] = runScriptOn(ctx, ap, c.script, c.keys, c.args)
		}
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return cmds, err
		}
	}
	return cmds, nil
}

// runPayloadScripts runs script calls whose replies carry payloads (the
// pops, the reads of sizes and small payloads) on a pooled connection of
// the client, never through the autopipeliner: the autopipeliner is one
// ordered stream per node, so one reply of megabytes (a pop's byte
// budget) would hold up every small command of every caller queued
// behind it. Like readPayloads, which reads the big payloads, they share
// round trips only with each other (one pipeline per call).
func (s *Store) runPayloadScripts(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	return runScriptsOn(ctx, s.rdb, calls)
}

// pick chooses how the next round trip of the request path goes out: the
// autopipeliner when other round trips are under way (they then share
// pipelines), the client directly when this one is alone, so that a lone
// request does not pay the hand-off to the autopipeliner's flusher
// goroutine (measured: BenchmarkProvisionIdle, about +40 µs median on this
// loaded 2-core box when every command went through the autopipeliner).
// ap is nil for the direct path. Call done when the round trip's results
// have been read.
func (s *Store) pick() (ap *redis.AutoPipeliner, done func()) {
	if s.ap == nil {
		return nil, func() {}
	}
	if s.busy.Add(1) == 1 {
		return nil, s.leave
	}
	return s.ap, s.leave
}

func (s *Store) leave() { s.busy.Add(-1) }

// runScript runs one script call of the request path (see pick), waiting
// for its result.
func (s *Store) runScript(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	ap, done := s.pick()
	defer done()
	if ap == nil {
		return runScriptOn(ctx, s.rdb, sc, keys, args)
	}
	return runScriptOn(ctx, ap, sc, keys, args) // Err() inside waits for the result
}

// batch issues the commands fn queues (and returns) as one round trip:
// through the autopipeliner when other round trips are under way (see
// pick), as a pipeline otherwise. It returns the first
// error other than redis.Nil.
func (s *Store) batch(ctx context.Context, fn func(redis.Cmdable) []redis.Cmder) error {
	ap, done := s.pick()
	defer done()
	var cmds []redis.Cmder
	if ap != nil {
		cmds = fn(ap)
	} else {
		pipe := s.rdb.Pipeline()
		cmds = fn(pipe)
		_, _ = pipe.Exec(ctx)
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}
