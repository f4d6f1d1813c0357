// Package redisq is the gateway's Redis data layer: every key, every Lua
// script and every Redis command the gateway issues lives here. It works on
// a single Redis, Sentinel or Redis Cluster through go-redis'
// UniversalClient; each script touches the keys of one cluster slot only.
package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// Sentinel errors returned at the package boundary.
var (
	// ErrNotFound means the transaction, group or box does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means the thing to create exists already.
	ErrExists = errors.New("already exists")
)

const (
	infoTTL       = 30 * 24 * time.Hour // how long a queue's lastPop is kept after its last pop
	handBackTTL   = time.Hour           // lists that get entries back live at least this long
	pipelineChunk = 10000               // commands per pipeline round trip (a whole 10,000-queue fan-out is one)
)

// Options tune a Store.
type Options struct {
	// ExplicitWake makes every push also PUBLISH the queue name on
	// WakeChannel, for servers without keyspace notifications.
	ExplicitWake bool
	// WaitReplicas, when > 0, makes provisioning wait (Redis WAIT) until that
	// many replicas acknowledged the writes, up to WaitTimeout.
	WaitReplicas int
	WaitTimeout  time.Duration
	// AutoPipeline sends the request-path commands (provisions, pops, acks,
	// state changes) through go-redis' autopipeliner, so that concurrent
	// callers share round trips; see autoPipeline.
	AutoPipeline bool
	Logger       *slog.Logger
	// BatchBytes bounds the payload bytes one PopMany call reads
	// (default DefaultBatchBytes); see PopMany.
	BatchBytes int64
}

// Store runs the gateway's operations on Redis. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	ap   *redis.AutoPipeliner // nil unless Options.AutoPipeline
	busy atomic.Int64         // round trips of the request path under way (see pick)
	opts Options
	log  *slog.Logger
	now  func() time.Time
	// stepwise makes a single server take the Cluster's path, one script
	// per slot (tests of that path).
	stepwise bool
	owners   *popOwners // owners and pending undos of pop calls (popundo.go)
}

// New wraps a go-redis client. The caller owns the client.
func New(rdb redis.UniversalClient, opts Options) *Store {
	l := opts.Logger
	if l == nil {
		l = slog.Default()
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = time.Second
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = DefaultBatchBytes
	}
	s := &Store{rdb: rdb, opts: opts, log: l, now: time.Now, owners: newPopOwners()}
	if opts.AutoPipeline {
		ap, err := autoPipeline(rdb)
		if err != nil {
			l.Warn("redis autopipelining unavailable, every command gets its own round trip", "err", err)
		} else {
			s.ap = ap
		}
	}
	return s
}

// AutoPipelined reports whether the request path is autopipelined.
func (s *Store) AutoPipelined() bool { return s.ap != nil }

// Client returns the underlying go-redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// SetExplicitWake switches explicit wake-up publishing on or off; call it
// before serving traffic.
func (s *Store) SetExplicitWake(on bool) { s.opts.ExplicitWake = on }

// ExplicitWake reports whether pushes publish explicit wake-ups.
func (s *Store) ExplicitWake() bool { return s.opts.ExplicitWake }

// LoadScripts loads every script on the server(s) so that pipelined
// EVALSHA calls find them.
func (s *Store) LoadScripts(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("load script: %w", err)
		}
	}
	return nil
}

// Message is one entry taken from (or looked at in) a queue.
type Message struct {
	TID       string
	Queue     string // full queue name
	Priority  domain.Priority
	Payload   string
	Callback  string
	ExpiresAt int64 // unix seconds, 0 if unknown
	// Deadline is, for a reliable delivery, the in-flight record's
	// deadline (unix ms) that the reaper goes by; 0 if unknown. A hand-back
	// puts the message back only while that record is still this
	// delivery's (a later delivery of the same entry has a later one).
	Deadline int64
}

// Transaction is what provisioning writes.
type Transaction struct {
	ID        string   // lower-case UUID v4
	NS        string   // namespace of the target queues
	Queues    []string // target queue ids (deduplicated)
	Priority  domain.Priority
	ExpiresAt int64             // unix seconds
	Meta      map[string]string // payload, priority, callback, expirationDate, ... as GET /trans returns them
}

// isNoScript tells whether err is Redis' NOSCRIPT error.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// scriptCall is one pipelined script invocation.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// runScripts runs calls pipelined (EVALSHA), chunked, and re-runs any that
// hit NOSCRIPT (e.g. after a failover to a server without the script) once
// the script is loaded. Calls of runOnce scripts are never resent by
// go-redis.
func (s *Store) runScripts(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	if len(calls) > autoPipelineMaxCalls {
		return runScriptsOn(ctx, s.rdb, calls)
	}
	ap, done := s.pick()
	defer done()
	if ap != nil {
		return runScriptsAuto(ctx, ap, calls)
	}
	return runScriptsOn(ctx, s.rdb, calls)
}

// scriptRunner is what runScriptsOn needs: the client, or one dedicated
// connection (*redis.Conn).
type scriptRunner interface {
	scriptProcessor
	Pipeline() redis.Pipeliner
}

// runScriptsOn is runScripts on a given client or connection.
func runScriptsOn(ctx context.Context, rc scriptRunner, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	for start := 0; start < len(calls); start += pipelineChunk {
		end := min(start+pipelineChunk, len(calls))
		pipe := rc.Pipeline()
		for i := start; i < end; i++ {
			c := calls[i]
			cmds[i] = evalSha(ctx, pipe, c.script, c.keys, c.args)
		}
		_, _ = pipe.Exec(ctx)
		for i := start; i < end; i++ {
			if isNoScript(cmds[i].Err()) {
				c := calls[i]
				cmds[i] = runScriptOn(ctx, rc, c.script, c.keys, c.args)
			}
		}
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return cmds, err
		}
	}
	return cmds, nil
}
