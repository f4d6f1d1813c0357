package redisq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// Provision stores a transaction and pushes it to every target queue. It
// returns only when the message is in Redis for every target. On failure it
// removes the metadata so entries already pushed become ghosts that pops
// skip: nothing half-provisioned stays visible.
func (s *Store) Provision(ctx context.Context, tx *Transaction) error {
	if !tx.Priority.Valid() {
		return fmt.Errorf("provision %s: bad priority %q", tx.ID, tx.Priority)
	}
	// The stored metadata: tx.Meta and the org the transaction belongs to
	// (FieldOrg, written last so that no metadata field can replace it).
	fields := make([]string, 0, len(tx.Meta)+1)
	for k := range tx.Meta {
		if k != FieldOrg {
			fields = append(fields, k)
		}
	}
	sort.Strings(fields)
	fields = append(fields, FieldOrg)
	org := domain.Namespace(tx.NS).Org()
	value := func(k string) string {
		if k == FieldOrg {
			return org
		}
		return tx.Meta[k]
	}
	if s.fused() && s.opts.WaitReplicas == 0 && len(tx.Queues) <= fusedMaxQueues {
		return s.provisionFused(ctx, tx, fields, value)
	}
	tk := KeysOfTrans(tx.ID)
	args := make([]any, 0, 2+2*len(fields)+2*len(tx.Queues))
	args = append(args, tx.ExpiresAt, len(fields))
	for _, k := range fields {
		args = append(args, k, value(k))
	}
	for _, q := range tx.Queues {
		args = append(args, tx.NS+q, domain.StatePending)
	}
	// With WaitReplicas every write goes through one dedicated connection
	// per primary: WAIT only counts the writes made on its own connection.
	var pin *pinnedConns
	run := s.runScript
	if s.opts.WaitReplicas > 0 {
		pin = &pinnedConns{rdb: s.rdb, conns: map[string]*redis.Conn{}}
		defer pin.close()
		cn, err := pin.conn(ctx, tk.Meta)
		if err != nil {
			return fmt.Errorf("provision %s: metadata: %w", tx.ID, err)
		}
		run = func(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
			return runScriptOn(ctx, cn, sc, keys, args)
		}
	}
	if err := run(ctx, provisionMetaScript, []string{tk.Meta, tk.State}, args...).Err(); err != nil {
		pin.failed(ctx)
		return fmt.Errorf("provision %s: metadata: %w", tx.ID, err)
	}
	ttl := s.listTTL(tx.ExpiresAt)
	calls := make([]scriptCall, len(tx.Queues))
	for i, q := range tx.Queues {
		calls[i] = scriptCall{pushScript, []string{listKey(tx.NS+q, tx.Priority)}, []any{tx.ID, ttl}}
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

// fused tells whether scripts may touch keys of several slots: on a single
// server or a Sentinel primary, not on a Cluster. The fused scripts
// (provisionAllScript, popFusedScript) then do in one call what takes one
// script per slot on a Cluster.
func (s *Store) fused() bool {
	_, ok := s.rdb.(*redis.Client)
	return ok && !s.stepwise
}

// fusedMaxQueues is the largest fan-out provisioned by one script on a
// server that is not a Cluster.
const fusedMaxQueues = 64

// provisionFused provisions tx with one atomic script (one round trip):
// only on a single server (or Sentinel primary), where a script may touch
// keys of any slot.
func (s *Store) provisionFused(ctx context.Context, tx *Transaction, fields []string, value func(string) string) error {
	tk := KeysOfTrans(tx.ID)
	keys := make([]string, 0, 2+len(tx.Queues))
	keys = append(keys, tk.Meta, tk.State)
	args := make([]any, 0, 4+2*len(fields)+len(tx.Queues))
	args = append(args, tx.ExpiresAt, len(fields), tx.ID, s.listTTL(tx.ExpiresAt))
	for _, k := range fields {
		args = append(args, k, value(k))
	}
	full := make([]string, len(tx.Queues))
	for i, q := range tx.Queues {
		full[i] = tx.NS + q
		keys = append(keys, listKey(full[i], tx.Priority))
		args = append(args, full[i])
	}
	if err := s.runScript(ctx, provisionAllScript, keys, args...).Err(); err != nil {
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
				err = fmt.Errorf("%w: %d of %d replicas acknowledged within %v", ErrReplicasTimeout, n, replicas, timeout)
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

// ErrReplicasTimeout is wrapped by a write that fewer replicas than
// POPBOX_REDIS_WAIT_REPLICAS acknowledged within the WAIT timeout: the
// write may still be there (outcome unknown), and the caller may say so
// without showing Redis' own error text or addresses.
var ErrReplicasTimeout = errors.New("not acknowledged by enough replicas in time")

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
	if len(fulls) == 1 {
		if err := s.batch(ctx, func(p redis.Cmdable) []redis.Cmder {
			return []redis.Cmder{p.Publish(ctx, WakeChannel, fulls[0])}
		}); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "wake-up publish failed", slog.Any("err", err))
		}
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

// Defer stores a transaction to be provisioned at due. The deferral lives in
// Redis, so any node carries it out, also after a restart or crash of the
// node that accepted it.
func (s *Store) Defer(ctx context.Context, tx *Transaction, due time.Time) error {
	body, err := json.Marshal(tx)
	if err != nil {
		return fmt.Errorf("defer %s: %w", tx.ID, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyDeferredBody, tx.ID, body)
		p.ZAdd(ctx, keyDeferred, redis.Z{Score: float64(due.UnixMilli()), Member: tx.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("defer %s: %w", tx.ID, err)
	}
	return nil
}

// ClaimDeferred claims up to limit deferred transactions that are due. Each
// is leased for lease: if the caller does not call FinishDeferred in time
// (it died), another node claims it again. Provisioning the same
// transaction twice rewrites its metadata and may push its entries twice.
func (s *Store) ClaimDeferred(ctx context.Context, lease time.Duration, limit int) ([]*Transaction, error) {
	raw, err := claimDeferredScript.Run(ctx, s.rdb, []string{keyDeferred, keyDeferredBody},
		s.now().UnixMilli(), lease.Milliseconds(), limit).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim deferred: %w", err)
	}
	var out []*Transaction
	for i := 0; i+1 < len(raw); i += 2 {
		var tx Transaction
		if err := json.Unmarshal([]byte(raw[i+1]), &tx); err != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "drop unreadable deferred transaction", slog.String("tid", raw[i]), slog.Any("err", err))
			_ = s.FinishDeferred(ctx, raw[i])
			continue
		}
		out = append(out, &tx)
	}
	return out, nil
}

// FinishDeferred removes a deferred transaction once it is provisioned.
func (s *Store) FinishDeferred(ctx context.Context, tid string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, keyDeferred, tid)
		p.HDel(ctx, keyDeferredBody, tid)
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish deferred %s: %w", tid, err)
	}
	return nil
}
