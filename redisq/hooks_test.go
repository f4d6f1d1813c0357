package redisq_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// cmdHook is a go-redis hook that shows each command the client sends (a
// pipeline of one) and each pipeline to before as it goes out and to after
// once it has its replies; either may be nil.
type cmdHook struct {
	before, after func(cmds ...redis.Cmder)
}

func (h cmdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.around([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}

func (h cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.around(cmds, func() error { return next(ctx, cmds) })
	}
}

func (h cmdHook) around(cmds []redis.Cmder, send func() error) error {
	if h.before != nil {
		h.before(cmds...)
	}
	err := send()
	if h.after != nil {
		h.after(cmds...)
	}
	return err
}

// batchWatch is a go-redis hook that records what the autopipeliner sent:
// the largest pipeline, and the NOSCRIPT and MOVED replies seen in them.
type batchWatch struct {
	cmdHook
	maxBatch atomic.Int64
	noScript atomic.Int64
	moved    atomic.Int64
}

func newBatchWatch() *batchWatch {
	w := &batchWatch{}
	w.cmdHook = cmdHook{before: w.batch, after: w.see}
	return w
}

func (w *batchWatch) batch(cmds ...redis.Cmder) {
	for n := int64(len(cmds)); ; {
		cur := w.maxBatch.Load()
		if n <= cur || w.maxBatch.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (w *batchWatch) see(cmds ...redis.Cmder) {
	for _, c := range cmds {
		err := c.Err()
		switch {
		case err == nil:
		case strings.HasPrefix(err.Error(), "NOSCRIPT"):
			w.noScript.Add(1)
		case strings.HasPrefix(err.Error(), "MOVED"):
			w.moved.Add(1)
		}
	}
}

// cmdCounter is a go-redis hook counting the commands a client sends.
type cmdCounter struct {
	cmdHook
	mu   sync.Mutex
	seen map[string]int64
}

func newCmdCounter() *cmdCounter {
	h := &cmdCounter{seen: map[string]int64{}}
	h.cmdHook = cmdHook{before: h.count}
	return h
}

func (h *cmdCounter) count(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range cmds {
		h.seen[strings.ToLower(c.Name())]++
	}
}

func (h *cmdCounter) reset() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.seen
	h.seen = map[string]int64{}
	return out
}
