package redisq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// Meta returns the metadata of transaction tid as stored (all values are
// strings); an unknown or expired transaction gives an empty map.
func (s *Store) Meta(ctx context.Context, tid string) (map[string]string, error) {
	var all *redis.MapStringStringCmd
	err := s.batch(ctx, func(p redis.Cmdable) []redis.Cmder {
		all = p.HGetAll(ctx, KeysOfTrans(tid).Meta)
		return []redis.Cmder{all}
	})
	m := all.Val()
	if err != nil {
		return nil, fmt.Errorf("transaction %s: %w", tid, err)
	}
	return m, nil
}

// States returns the state of transaction tid per full queue name.
func (s *Store) States(ctx context.Context, tid string) (map[string]string, error) {
	tk := KeysOfTrans(tid)
	var ex *redis.IntCmd
	var st *redis.MapStringStringCmd
	if err := s.batch(ctx, func(p redis.Cmdable) []redis.Cmder {
		ex = p.Exists(ctx, tk.Meta)
		st = p.HGetAll(ctx, tk.State)
		return []redis.Cmder{ex, st}
	}); err != nil {
		return nil, fmt.Errorf("transaction %s states: %w", tid, err)
	}
	if ex.Val() == 0 {
		return map[string]string{}, nil
	}
	return st.Val(), nil
}

// TransInfo is a stored transaction as the transaction routes read it.
type TransInfo struct {
	// Found is false for an unknown, expired or deleted transaction.
	Found bool
	// Org is the org the transaction belongs to ("" for none).
	Org string
	// Meta is the metadata as GET /trans shows it (FieldOrg removed); nil
	// unless asked for.
	Meta map[string]string
	// States is the state per full queue name.
	States map[string]string
}

// ReadTrans reads transaction tid in one round trip: its org, its states
// and, when withMeta, its metadata.
func (s *Store) ReadTrans(ctx context.Context, tid string, withMeta bool) (TransInfo, error) {
	tk := KeysOfTrans(tid)
	pipe := s.rdb.Pipeline()
	ex := pipe.Exists(ctx, tk.Meta)
	org := pipe.HGet(ctx, tk.Meta, FieldOrg)
	var meta *redis.MapStringStringCmd
	if withMeta {
		meta = pipe.HGetAll(ctx, tk.Meta)
	}
	st := pipe.HGetAll(ctx, tk.State)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return TransInfo{}, fmt.Errorf("transaction %s: %w", tid, err)
	}
	if ex.Val() == 0 {
		return TransInfo{States: map[string]string{}}, nil
	}
	info := TransInfo{Found: true, Org: org.Val(), States: st.Val()}
	if meta != nil {
		info.Meta = meta.Val()
		delete(info.Meta, FieldOrg)
	}
	return info, nil
}

// UpdateTrans changes fields of an existing transaction of org ("" for
// none); expiresAt > 0 also moves its expiry (and that of its entries still
// waiting in queues). It returns ErrNotFound for an unknown transaction and
// for one of another org.
func (s *Store) UpdateTrans(ctx context.Context, tid, org string, fields map[string]string, expiresAt int64) error {
	tk := KeysOfTrans(tid)
	args := []any{org, expiresAt}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k != FieldOrg {
			keys = append(keys, k)
		}
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
			if st == domain.StatePending {
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

// DeleteTrans deletes a transaction of org ("" for none); its queue entries
// become ghosts that pops skip. A deferred provisioning of it (?delay=) of
// that org that is not due yet is cancelled too (one already claimed by a
// node may still go through). A transaction of another org is left alone.
// deleted tells whether anything was deleted or cancelled.
func (s *Store) DeleteTrans(ctx context.Context, tid, org string) (deleted bool, err error) {
	tk := KeysOfTrans(tid)
	n, err := deleteTransScript.Run(ctx, s.rdb, []string{tk.Meta, tk.State}, org).Int()
	if err != nil {
		return false, fmt.Errorf("delete %s: %w", tid, err)
	}
	switch n {
	case 0:
		return false, nil // another org's
	case -1:
		// Not provisioned (yet): a deferral of this org?
		body, err := s.rdb.HGet(ctx, keyDeferredBody, tid).Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("delete %s: %w", tid, err)
		}
		var tx Transaction
		if json.Unmarshal([]byte(body), &tx) == nil && domain.Namespace(tx.NS).Org() != org {
			return false, nil
		}
	}
	if err := s.FinishDeferred(ctx, tid); err != nil {
		return false, fmt.Errorf("delete %s: %w", tid, err)
	}
	return true, nil
}
