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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors returned at the package boundary.
var (
	// ErrNotFound means the transaction, group or box does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means the thing to create exists already.
	ErrExists = errors.New("already exists")
)

// Transaction states.
const (
	StatePending   = "Pending"
	StateBlocked   = "Blocked"
	StateDelivered = "Delivered"
	StateExpired   = "Expired"
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
	Logger       *slog.Logger
}

// Store runs the gateway's operations on Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	onSkip func(queue, tid string)
}

// OnSkip sets a function called for every queue entry a pop skips because
// its transaction expired or was deleted; call it before serving traffic.
func (s *Store) OnSkip(fn func(queue, tid string)) { s.onSkip = fn }

// New wraps a go-redis client. The caller owns the client.
func New(rdb redis.UniversalClient, opts Options) *Store {
	l := opts.Logger
	if l == nil {
		l = slog.Default()
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = time.Second
	}
	return &Store{rdb: rdb, opts: opts, log: l, now: time.Now}
}

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
	Priority  byte   // 'H' or 'L'
	Payload   string
	Callback  string
	ExpiresAt int64 // unix seconds, 0 if unknown
}

// PriorityString returns "H" or "L".
func (m Message) PriorityString() string { return string(m.Priority) }

// Transaction is what provisioning writes.
type Transaction struct {
	ID        string            // lower-case UUID v4
	NS        string            // namespace of the target queues
	Queues    []string          // target queue ids (deduplicated)
	Priority  byte              // 'H' or 'L'
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
// hit NOSCRIPT (e.g. after a failover to a server without the script) with
// the script's own load-and-retry.
func (s *Store) runScripts(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	return runScriptsOn(ctx, s.rdb, calls)
}

// scriptRunner is what runScriptsOn needs: the client, or one dedicated
// connection (*redis.Conn).
type scriptRunner interface {
	redis.Scripter
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
			cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx)
		for i := start; i < end; i++ {
			if isNoScript(cmds[i].Err()) {
				c := calls[i]
				cmds[i] = c.script.Run(ctx, rc, c.keys, c.args...)
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

// Provision stores a transaction and pushes it to every target queue. It
// returns only when the message is in Redis for every target. On failure it
// removes the metadata so entries already pushed become ghosts that pops
// skip: nothing half-provisioned stays visible.
func (s *Store) Provision(ctx context.Context, tx *Transaction) error {
	if tx.Priority != 'H' && tx.Priority != 'L' {
		return fmt.Errorf("provision %s: bad priority %q", tx.ID, tx.Priority)
	}
	tk := KeysOfTrans(tx.ID)
	args := make([]any, 0, 2+2*len(tx.Meta)+2*len(tx.Queues))
	args = append(args, tx.ExpiresAt, len(tx.Meta))
	fields := make([]string, 0, len(tx.Meta))
	for k := range tx.Meta {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	for _, k := range fields {
		args = append(args, k, tx.Meta[k])
	}
	for _, q := range tx.Queues {
		args = append(args, tx.NS+q, StatePending)
	}
	if c, ok := s.rdb.(*redis.Client); ok && s.opts.WaitReplicas == 0 && len(tx.Queues) <= fusedMaxQueues {
		return s.provisionFused(ctx, c, tx, fields)
	}
	// With WaitReplicas every write goes through one dedicated connection
	// per primary: WAIT only counts the writes made on its own connection.
	var pin *pinnedConns
	var metaRunner scriptRunner = s.rdb
	if s.opts.WaitReplicas > 0 {
		pin = &pinnedConns{rdb: s.rdb, conns: map[string]*redis.Conn{}}
		defer pin.close()
		cn, err := pin.conn(ctx, tk.Meta)
		if err != nil {
			return fmt.Errorf("provision %s: metadata: %w", tx.ID, err)
		}
		metaRunner = cn
	}
	if err := provisionMetaScript.Run(ctx, metaRunner, []string{tk.Meta, tk.State}, args...).Err(); err != nil {
		pin.failed(ctx)
		return fmt.Errorf("provision %s: metadata: %w", tx.ID, err)
	}
	ttl := s.listTTL(tx.ExpiresAt)
	calls := make([]scriptCall, len(tx.Queues))
	for i, q := range tx.Queues {
		qk := KeysOfQueue(tx.NS + q)
		key := qk.Low
		if tx.Priority == 'H' {
			key = qk.High
		}
		calls[i] = scriptCall{pushScript, []string{key}, []any{tx.ID, ttl}}
	}
	var err error
	if pin != nil {
		err = pin.runScripts(ctx, calls)
	} else {
		_, err = s.runScripts(ctx, calls)
	}
	if err != nil {
		pin.failed(ctx)
		if derr := s.rdb.Del(context.WithoutCancel(ctx), tk.Meta, tk.State).Err(); derr != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "provision rollback failed", slog.String("tid", tx.ID), slog.Any("err", derr))
		}
		return fmt.Errorf("provision %s: push: %w", tx.ID, err)
	}
	full := make([]string, len(tx.Queues))
	for i, q := range tx.Queues {
		full[i] = tx.NS + q
	}
	s.wake(ctx, full...)
	if pin != nil {
		if err := pin.wait(ctx, s.opts.WaitReplicas, s.opts.WaitTimeout); err != nil {
			return fmt.Errorf("provision %s: %w", tx.ID, err)
		}
	}
	return nil
}

// fusedMaxQueues is the largest fan-out provisioned by one script on a
// server that is not a Cluster.
const fusedMaxQueues = 64

// provisionFused provisions tx with one atomic script (one round trip):
// only on a single server (or Sentinel primary), where a script may touch
// keys of any slot.
func (s *Store) provisionFused(ctx context.Context, c *redis.Client, tx *Transaction, fields []string) error {
	tk := KeysOfTrans(tx.ID)
	keys := make([]string, 0, 2+len(tx.Queues))
	keys = append(keys, tk.Meta, tk.State)
	args := make([]any, 0, 4+2*len(tx.Meta)+len(tx.Queues))
	args = append(args, tx.ExpiresAt, len(tx.Meta), tx.ID, s.listTTL(tx.ExpiresAt))
	for _, k := range fields {
		args = append(args, k, tx.Meta[k])
	}
	full := make([]string, len(tx.Queues))
	for i, q := range tx.Queues {
		full[i] = tx.NS + q
		qk := KeysOfQueue(full[i])
		if tx.Priority == 'H' {
			keys = append(keys, qk.High)
		} else {
			keys = append(keys, qk.Low)
		}
		args = append(args, full[i])
	}
	if err := provisionAllScript.Run(ctx, c, keys, args...).Err(); err != nil {
		return fmt.Errorf("provision %s: %w", tx.ID, err)
	}
	s.wake(ctx, full...)
	return nil
}

// listTTL is the minimum TTL (ms) of a list holding an entry that expires at
// expiresAt (unix s): one minute past the expiry, at least one minute.
func (s *Store) listTTL(expiresAt int64) int64 {
	ms := expiresAt*1000 - s.now().UnixMilli() + 60_000
	return max(ms, 60_000)
}

// pinnedConns holds one dedicated connection per Redis primary for the
// writes of one provisioning. Redis' WAIT blocks until the writes made *on
// its own connection* reach N replicas: run on some other pooled connection
// it would cover nothing (or older writes) and answer at once. So with
// WaitReplicas the metadata and the pushes are written through these
// connections, and WAIT runs on each of them afterwards.
type pinnedConns struct {
	rdb   redis.UniversalClient
	conns map[string]*redis.Conn // primary address ("" for a single server) -> connection
}

// conn returns the connection to the primary that serves key.
func (p *pinnedConns) conn(ctx context.Context, key string) (*redis.Conn, error) {
	var addr string
	var node *redis.Client
	switch c := p.rdb.(type) {
	case *redis.ClusterClient:
		n, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, err
		}
		addr, node = n.Options().Addr, n
	case *redis.Client:
		node = c
	default:
		return nil, errors.New("wait replicas: unsupported client")
	}
	if cn := p.conns[addr]; cn != nil {
		return cn, nil
	}
	cn := node.Conn()
	p.conns[addr] = cn
	return cn, nil
}

// runScripts runs the calls pipelined, grouped by primary, each group on
// its pinned connection.
func (p *pinnedConns) runScripts(ctx context.Context, calls []scriptCall) error {
	groups := map[*redis.Conn][]scriptCall{}
	for _, c := range calls {
		cn, err := p.conn(ctx, c.keys[0])
		if err != nil {
			return err
		}
		groups[cn] = append(groups[cn], c)
	}
	for cn, g := range groups {
		if _, err := runScriptsOn(ctx, cn, g); err != nil {
			return err
		}
	}
	return nil
}

// wait runs WAIT on every pinned connection, concurrently.
func (p *pinnedConns) wait(ctx context.Context, replicas int, timeout time.Duration) error {
	errs := make([]error, 0, len(p.conns))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for addr, cn := range p.conns {
		wg.Go(func() {
			n, err := cn.Do(ctx, "WAIT", replicas, timeout.Milliseconds()).Int()
			if err == nil && n < replicas {
				err = fmt.Errorf("%d of %d replicas acknowledged within %v", n, replicas, timeout)
			}
			if err != nil {
				if addr != "" {
					err = fmt.Errorf("%s: %w", addr, err)
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.failed(ctx)
		return fmt.Errorf("wait replicas: %w", err)
	}
	return nil
}

// failed makes a Cluster client re-read the slot map after a failure on a
// pinned connection (the slots may have moved: failover, resharding).
func (p *pinnedConns) failed(ctx context.Context) {
	if p == nil {
		return
	}
	if c, ok := p.rdb.(*redis.ClusterClient); ok {
		c.ReloadState(ctx)
	}
}

func (p *pinnedConns) close() {
	for _, cn := range p.conns {
		_ = cn.Close()
	}
}

// wake publishes explicit wake-ups when keyspace notifications are off.
func (s *Store) wake(ctx context.Context, fulls ...string) {
	if !s.opts.ExplicitWake || len(fulls) == 0 {
		return
	}
	pipe := s.rdb.Pipeline()
	for _, f := range fulls {
		pipe.Publish(ctx, WakeChannel, f)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "wake-up publish failed", slog.Any("err", err))
	}
}

// PopOptions select plain or reliable pops.
type PopOptions struct {
	// Reliable records the taken entries as in flight (state Blocked) until
	// acknowledged or until AckTimeout passes.
	Reliable   bool
	AckTimeout time.Duration
}

// Pop atomically takes up to max messages from queue full (H before L,
// FIFO), skipping ghosts (deleted or expired transactions), and marks them
// Delivered (Blocked when reliable). Several nodes may pop the same queue
// concurrently: each entry goes to exactly one caller. It is PopMany for
// one queue, repeated while ghosts left it short of max and the queue may
// hold more (every round takes entries off the queue, so it ends).
func (s *Store) Pop(ctx context.Context, full string, max int, o PopOptions) ([]Message, error) {
	var out []Message
	for len(out) < max {
		want := max - len(out)
		r := s.PopMany(ctx, []PopRequest{{Queue: full, Max: want, Opts: o}})[0]
		if r.Err != nil {
			if len(out) > 0 {
				return out, nil // hand over what was taken; the error repeats next time
			}
			return nil, r.Err
		}
		out = append(out, r.Messages...)
		if r.Taken < want {
			break
		}
	}
	return out, nil
}

// maxGhostScan bounds the entries one Peek call looks through per list
// while skipping ghosts.
const maxGhostScan = 1 << 20

// ghostWindow is how many list entries Peek examines per round trip while
// skipping ghosts.
const ghostWindow = 256

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// fetchAndMark sets the state of each taken entry and reads its metadata;
// ghosts are dropped (and, for reliable pops, removed from the inflight set).
func (s *Store) fetchAndMark(ctx context.Context, taken []Message, state string) ([]Message, error) {
	calls := make([]scriptCall, len(taken))
	for i, m := range taken {
		tk := KeysOfTrans(m.TID)
		calls[i] = scriptCall{transitionScript, []string{tk.Meta, tk.State}, []any{m.Queue, state, "1"}}
	}
	cmds, err := s.runScripts(ctx, calls)
	if err != nil {
		return nil, err
	}
	out := taken[:0:0]
	var ghosts []string
	for i, c := range cmds {
		vals, err := c.Slice()
		if errors.Is(err, redis.Nil) || len(vals) < 3 {
			ghosts = append(ghosts, string(taken[i].Priority)+taken[i].TID)
			if s.onSkip != nil {
				s.onSkip(taken[i].Queue, taken[i].TID)
			}
			continue
		}
		m := taken[i]
		m.Payload, _ = vals[0].(string)
		m.Callback, _ = vals[1].(string)
		if e, ok := vals[2].(string); ok {
			m.ExpiresAt, _ = strconv.ParseInt(e, 10, 64)
		}
		out = append(out, m)
	}
	if state == StateBlocked && len(ghosts) > 0 {
		members := make([]any, len(ghosts))
		for i, g := range ghosts {
			members[i] = g
		}
		if err := s.rdb.ZRem(ctx, KeysOfQueue(taken[0].Queue).Inflight, members...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop ghost inflight entries", slog.Any("err", err))
		}
	}
	return out, nil
}

// HandBack puts messages taken by Pop back at the head of their queue, in
// their original order, and resets their state to Pending. Use it when a
// message could not be written to the client it was taken for.
func (s *Store) HandBack(ctx context.Context, full string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// Pending first: once back in the list another consumer may take the
	// message at once, and its state must then not be overwritten.
	s.setStates(ctx, msgs, StatePending)
	return s.pushFront(ctx, full, msgs)
}

// HandBackReliable returns reliable messages taken by Pop (in flight) to the
// head of their queue at once, without waiting for the ack deadline.
func (s *Store) HandBackReliable(ctx context.Context, full string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	qk := KeysOfQueue(full)
	var ttl int64 = handBackTTL.Milliseconds()
	for _, m := range msgs {
		ttl = max(ttl, s.listTTL(m.ExpiresAt))
	}
	args := make([]any, 0, 1+2*len(msgs))
	args = append(args, ttl)
	for _, m := range msgs {
		args = append(args, string(m.Priority), m.TID)
	}
	// Pending before the entries are visible again (a consumer may take them
	// at once), and only where they are still Blocked (an ack that came
	// first keeps its Delivered; such entries are not in flight any more and
	// the script leaves them alone).
	s.setStatesIf(ctx, msgs, StatePending, StateBlocked)
	// One script: the in-flight record and the re-queue cannot be split by
	// a failover.
	back, err := handBackReliableScript.Run(ctx, s.rdb, []string{qk.High, qk.Low, qk.Inflight}, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("hand back to %s: %w", full, err)
	}
	if len(back) > 0 {
		s.wake(ctx, full)
	}
	return nil
}

// handBackRaw is the best-effort hand back used on error paths.
func (s *Store) handBackRaw(ctx context.Context, full string, msgs []Message, reliable bool) {
	var err error
	if reliable {
		err = s.HandBackReliable(ctx, full, msgs)
	} else {
		err = s.pushFront(ctx, full, msgs)
	}
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "hand back failed", slog.String("queue", full), slog.Int("messages", len(msgs)), slog.Any("err", err))
	}
}

func (s *Store) pushFront(ctx context.Context, full string, msgs []Message) error {
	qk := KeysOfQueue(full)
	args := make([]any, 0, 1+2*len(msgs))
	var ttl int64 = handBackTTL.Milliseconds()
	for _, m := range msgs {
		ttl = max(ttl, s.listTTL(m.ExpiresAt))
	}
	args = append(args, ttl)
	for _, m := range msgs {
		args = append(args, string(m.Priority), m.TID)
	}
	if err := handBackScript.Run(ctx, s.rdb, []string{qk.High, qk.Low}, args...).Err(); err != nil {
		return fmt.Errorf("hand back to %s: %w", full, err)
	}
	s.wake(ctx, full)
	return nil
}

// setStates sets the state of each message's (transaction, queue) pair,
// best effort.
func (s *Store) setStates(ctx context.Context, msgs []Message, state string) {
	s.setStatesIf(ctx, msgs, state, "")
}

// setStatesIf is setStates limited to pairs whose state is currently from
// ("" = any), best effort.
func (s *Store) setStatesIf(ctx context.Context, msgs []Message, state, from string) {
	calls := make([]scriptCall, len(msgs))
	for i, m := range msgs {
		tk := KeysOfTrans(m.TID)
		args := []any{m.Queue, state, "0"}
		if from != "" {
			args = append(args, from)
		}
		calls[i] = scriptCall{transitionScript, []string{tk.Meta, tk.State}, args}
	}
	if _, err := s.runScripts(ctx, calls); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "set states", slog.String("state", state), slog.Any("err", err))
	}
}

// TouchLastPop records that queue full was popped now (for a pop that
// returned nothing; pops that take messages record it themselves).
func (s *Store) TouchLastPop(ctx context.Context, full string) error {
	qk := KeysOfQueue(full)
	pipe := s.rdb.Pipeline()
	pipe.HSet(ctx, qk.Info, "lastPop", s.now().Unix())
	pipe.Expire(ctx, qk.Info, infoTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("touch lastPop %s: %w", full, err)
	}
	return nil
}

// Peek returns up to max messages of queue full without removing them or
// changing any state, H before L. Ghosts are skipped (and looked past).
func (s *Store) Peek(ctx context.Context, full string, max int) ([]Message, error) {
	if max <= 0 {
		return nil, nil
	}
	qk := KeysOfQueue(full)
	var out []Message
	for _, l := range []struct {
		key  string
		prio byte
	}{{qk.High, 'H'}, {qk.Low, 'L'}} {
		var start int64
		for scanned := 0; len(out) < max && scanned < maxGhostScan; {
			want := max - len(out)
			window := int64(want)
			if window < ghostWindow {
				window = ghostWindow
			}
			ids, err := s.rdb.LRange(ctx, l.key, start, start+window-1).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("peek %s: %w", full, err)
			}
			entries := make([]Message, len(ids))
			for i, tid := range ids {
				entries[i] = Message{TID: tid, Queue: full, Priority: l.prio}
			}
			got, err := s.readMeta(ctx, entries)
			if err != nil {
				return nil, fmt.Errorf("peek %s: %w", full, err)
			}
			if len(got) > want {
				got = got[:want]
			}
			out = append(out, got...)
			start += int64(len(ids))
			scanned += len(ids)
			if int64(len(ids)) < window {
				break
			}
		}
	}
	return out, nil
}

// readMeta fills payload, callback and expiry of entries, dropping ghosts.
func (s *Store) readMeta(ctx context.Context, entries []Message) ([]Message, error) {
	out := make([]Message, 0, len(entries))
	for start := 0; start < len(entries); start += pipelineChunk {
		end := min(start+pipelineChunk, len(entries))
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, end-start)
		for i := start; i < end; i++ {
			cmds[i-start] = pipe.HMGet(ctx, KeysOfTrans(entries[i].TID).Meta, "payload", "callback", "expirationDate")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read metadata: %w", err)
		}
		for i, c := range cmds {
			v := c.Val()
			if len(v) < 3 || v[0] == nil {
				continue
			}
			m := entries[start+i]
			m.Payload, _ = v[0].(string)
			m.Callback, _ = v[1].(string)
			if e, ok := v[2].(string); ok {
				m.ExpiresAt, _ = strconv.ParseInt(e, 10, 64)
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// QueueInfo is what GET /queue/{id} shows.
type QueueInfo struct {
	Size    int64
	High    []string // transaction ids, head first (at most the first 1000)
	Low     []string
	LastPop int64 // unix seconds; 0 = never popped
	Blocked bool  // a live gateway node has a consumer waiting on the queue
}

// queueInfoListMax bounds the ids listed per priority in QueueInfo.
const queueInfoListMax = 1000

// QueueInfo reads the state of queue full.
func (s *Store) QueueInfo(ctx context.Context, full string) (QueueInfo, error) {
	qk := KeysOfQueue(full)
	pipe := s.rdb.Pipeline()
	hl := pipe.LLen(ctx, qk.High)
	ll := pipe.LLen(ctx, qk.Low)
	h := pipe.LRange(ctx, qk.High, 0, queueInfoListMax-1)
	l := pipe.LRange(ctx, qk.Low, 0, queueInfoListMax-1)
	lp := pipe.HGet(ctx, qk.Info, "lastPop")
	w := pipe.ZRange(ctx, qk.Waiters, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return QueueInfo{}, fmt.Errorf("queue info %s: %w", full, err)
	}
	info := QueueInfo{Size: hl.Val() + ll.Val(), High: h.Val(), Low: l.Val()}
	if info.High == nil {
		info.High = []string{}
	}
	if info.Low == nil {
		info.Low = []string{}
	}
	info.LastPop, _ = strconv.ParseInt(lp.Val(), 10, 64)
	blocked, err := s.anyNodeAlive(ctx, full, w.Val())
	if err != nil {
		return QueueInfo{}, err
	}
	info.Blocked = blocked
	return info, nil
}

// anyNodeAlive tells whether any of the nodes registered as waiting on a
// queue is alive; dead registrations are removed.
func (s *Store) anyNodeAlive(ctx context.Context, full string, nodes []string) (bool, error) {
	if len(nodes) == 0 {
		return false, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(nodes))
	for i, n := range nodes {
		cmds[i] = pipe.Exists(ctx, KeyOfNode(n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("waiter nodes of %s: %w", full, err)
	}
	alive := false
	var dead []any
	for i, c := range cmds {
		if c.Val() == 1 {
			alive = true
		} else {
			dead = append(dead, nodes[i])
		}
	}
	if len(dead) > 0 {
		if err := s.rdb.ZRem(ctx, KeysOfQueue(full).Waiters, dead...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop dead waiter nodes", slog.Any("err", err))
		}
	}
	return alive, nil
}

// SetWaiting registers (on=true) or unregisters node as having consumers
// waiting on each of the queues, in one pipeline.
func (s *Store) SetWaiting(ctx context.Context, node string, on, off []string) error {
	if len(on)+len(off) == 0 {
		return nil
	}
	now := float64(s.now().UnixMilli())
	pipe := s.rdb.Pipeline()
	for _, f := range on {
		pipe.ZAdd(ctx, KeysOfQueue(f).Waiters, redis.Z{Score: now, Member: node})
	}
	for _, f := range off {
		pipe.ZRem(ctx, KeysOfQueue(f).Waiters, node)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("register waiters: %w", err)
	}
	return nil
}

// Heartbeat marks node alive for ttl. A node's "blocked" registrations only
// count while its heartbeat key lives, so a crashed node's consumers stop
// showing as blocked after ttl. existed is false when the key had lapsed
// (or on the first beat): readers may then have dropped the node's
// registrations, and the node must register its queues again.
func (s *Store) Heartbeat(ctx context.Context, node string, ttl time.Duration) (existed bool, err error) {
	pipe := s.rdb.Pipeline()
	old := pipe.Exists(ctx, KeyOfNode(node))
	pipe.Set(ctx, KeyOfNode(node), s.now().Unix(), ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("heartbeat: %w", err)
	}
	return old.Val() == 1, nil
}

// NodeGone removes node's heartbeat (clean shutdown).
func (s *Store) NodeGone(ctx context.Context, node string) error {
	if err := s.rdb.Del(ctx, KeyOfNode(node)).Err(); err != nil {
		return fmt.Errorf("node gone: %w", err)
	}
	return nil
}

// Meta returns the metadata of transaction tid as stored (all values are
// strings); an unknown or expired transaction gives an empty map.
func (s *Store) Meta(ctx context.Context, tid string) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, KeysOfTrans(tid).Meta).Result()
	if err != nil {
		return nil, fmt.Errorf("transaction %s: %w", tid, err)
	}
	return m, nil
}

// States returns the state of transaction tid per full queue name.
func (s *Store) States(ctx context.Context, tid string) (map[string]string, error) {
	tk := KeysOfTrans(tid)
	pipe := s.rdb.Pipeline()
	ex := pipe.Exists(ctx, tk.Meta)
	st := pipe.HGetAll(ctx, tk.State)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("transaction %s states: %w", tid, err)
	}
	if ex.Val() == 0 {
		return map[string]string{}, nil
	}
	return st.Val(), nil
}

// UpdateTrans changes fields of an existing transaction; expiresAt > 0 also
// moves its expiry (and that of its entries still waiting in queues). It
// returns ErrNotFound for an unknown transaction.
func (s *Store) UpdateTrans(ctx context.Context, tid string, fields map[string]string, expiresAt int64) error {
	tk := KeysOfTrans(tid)
	args := []any{expiresAt}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	n, err := updateTransScript.Run(ctx, s.rdb, []string{tk.Meta, tk.State}, args...).Int()
	if err != nil {
		return fmt.Errorf("update %s: %w", tid, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	if expiresAt > 0 {
		states, err := s.States(ctx, tid)
		if err != nil {
			return err
		}
		ttl := s.listTTL(expiresAt)
		var calls []scriptCall
		for full, st := range states {
			if st == StatePending {
				qk := KeysOfQueue(full)
				calls = append(calls, scriptCall{extendScript, []string{qk.High, qk.Low}, []any{ttl}})
			}
		}
		if _, err := s.runScripts(ctx, calls); err != nil {
			return fmt.Errorf("update %s: extend queues: %w", tid, err)
		}
	}
	return nil
}

// DeleteTrans deletes a transaction; its queue entries become ghosts that
// pops skip. A deferred provisioning of it (?delay=) that is not due yet is
// cancelled too (one already claimed by a node may still go through).
func (s *Store) DeleteTrans(ctx context.Context, tid string) error {
	tk := KeysOfTrans(tid)
	if err := s.rdb.Del(ctx, tk.Meta, tk.State).Err(); err != nil {
		return fmt.Errorf("delete %s: %w", tid, err)
	}
	if err := s.FinishDeferred(ctx, tid); err != nil {
		return fmt.Errorf("delete %s: %w", tid, err)
	}
	return nil
}

// SetGroup creates or replaces group name in namespace ns.
func (s *Store) SetGroup(ctx context.Context, ns, name string, queues []string) error {
	key := KeyOfGroup(ns, name)
	members := make([]any, len(queues))
	for i, q := range queues {
		members[i] = q
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		p.SAdd(ctx, key, members...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store group %s: %w", name, err)
	}
	return nil
}

// Group returns the members of a group, sorted (empty if unknown).
func (s *Store) Group(ctx context.Context, ns, name string) ([]string, error) {
	m, err := s.rdb.SMembers(ctx, KeyOfGroup(ns, name)).Result()
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	sort.Strings(m)
	return m, nil
}

// ModifyGroup adds and removes members; ErrNotFound if the group does not exist.
func (s *Store) ModifyGroup(ctx context.Context, ns, name string, add, remove []string) error {
	args := make([]any, 0, 1+len(add)+len(remove))
	args = append(args, len(add))
	for _, q := range add {
		args = append(args, q)
	}
	for _, q := range remove {
		args = append(args, q)
	}
	n, err := modifyGroupScript.Run(ctx, s.rdb, []string{KeyOfGroup(ns, name)}, args...).Int()
	if err != nil {
		return fmt.Errorf("modify group %s: %w", name, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteGroup removes a group.
func (s *Store) DeleteGroup(ctx context.Context, ns, name string) error {
	if err := s.rdb.Del(ctx, KeyOfGroup(ns, name)).Err(); err != nil {
		return fmt.Errorf("delete group %s: %w", name, err)
	}
	return nil
}

// CreateBox creates secure box full with a user and a password hash;
// ErrExists if it exists.
func (s *Store) CreateBox(ctx context.Context, full, user, hash string) error {
	n, err := createBoxScript.Run(ctx, s.rdb, []string{KeysOfQueue(full).Box}, user, hash, s.now().Unix()).Int()
	if err != nil {
		return fmt.Errorf("create box %s: %w", full, err)
	}
	if n == 0 {
		return ErrExists
	}
	return nil
}

// Box returns the user and password hash of secure box full; ErrNotFound if
// there is no such box.
func (s *Store) Box(ctx context.Context, full string) (user, hash string, err error) {
	v, err := s.rdb.HMGet(ctx, KeysOfQueue(full).Box, "user", "hash").Result()
	if err != nil {
		return "", "", fmt.Errorf("box %s: %w", full, err)
	}
	if len(v) < 2 || v[0] == nil || v[1] == nil {
		return "", "", ErrNotFound
	}
	user, _ = v[0].(string)
	hash, _ = v[1].(string)
	return user, hash, nil
}

// NonEmpty tells, for each full queue name, whether the queue holds any
// entries (one pipelined round trip per chunk).
func (s *Store) NonEmpty(ctx context.Context, fulls []string) ([]bool, error) {
	out := make([]bool, len(fulls))
	for start := 0; start < len(fulls); start += pipelineChunk {
		end := min(start+pipelineChunk, len(fulls))
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, end-start)
		for i := start; i < end; i++ {
			qk := KeysOfQueue(fulls[i])
			cmds[i-start] = pipe.Exists(ctx, qk.High, qk.Low)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			// Exists across two keys is one slot (hash tag), fine in Cluster.
			return nil, fmt.Errorf("queue lengths: %w", err)
		}
		for i, c := range cmds {
			out[start+i] = c.Val() > 0
		}
	}
	return out, nil
}
