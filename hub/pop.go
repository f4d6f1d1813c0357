package hub

import (
	"log/slog"
	"sync"

	"github.com/popbox/popbox/redisq"
)

// The ready lists and the pop workers: woken queues wait on a ready list
// until a pop worker takes them, pops for them in one PopMany and offers
// what it took to their waiters.

// startDrain puts a queue on the ready list of the pop workers: the
// shared batches', or the apart workers' one when apart.
func (h *Hub) startDrain(queue string, apart bool) {
	if apart {
		h.apart.put(queue)
	} else {
		h.ready.put(queue)
	}
}

// readyList is a list of queues to pop for and the signal that wakes an
// idle worker of it.
type readyList struct {
	mu    sync.Mutex
	items []string
	ch    chan struct{}
}

func newReadyList() readyList { return readyList{ch: make(chan struct{}, 1)} }

func (l *readyList) put(queue string) {
	l.mu.Lock()
	l.items = append(l.items, queue)
	l.mu.Unlock()
	signal(l.ch)
}

// take waits for ready queues and takes up to n of them; nil when done
// ends.
func (l *readyList) take(n int, done <-chan struct{}) []string {
	for {
		l.mu.Lock()
		if len(l.items) > 0 {
			k := min(n, len(l.items))
			batch := make([]string, k)
			copy(batch, l.items)
			l.items = append(l.items[:0:0], l.items[k:]...)
			more := len(l.items) > 0
			l.mu.Unlock()
			if more {
				signal(l.ch) // let another worker take the rest
			}
			return batch
		}
		l.mu.Unlock()
		select {
		case <-l.ch:
		case <-done:
			return nil
		}
	}
}

// popWorker pops for batches of woken queues: one PopMany (one or three
// pipelined Redis round trips, at most the store's byte budget of
// payloads) serves up to popBatch queues, so the Redis round trips per
// delivered message fall as the load grows. Each queue is in at most one
// batch at a time (queueState.draining); nodes race through the atomic pop
// script. The queues kept apart (big payloads, failures) are popped one
// per call by the apart workers instead (list h.apart, n 1), so that a
// consumer of big payloads, e.g. one that never reads and so keeps its
// queues' pops at the byte budget, delays only its own queues.
func (h *Hub) popWorker(list *readyList, n int) {
	defer h.drains.Done()
	for {
		batch := list.take(n, h.ctx.Done())
		if batch == nil {
			return
		}
		h.popFor(batch)
	}
}

func (h *Hub) popFor(queues []string) {
	reqs := make([]redisq.PopRequest, 0, len(queues))
	ws := make([]*Waiter, 0, len(queues))
	for _, q := range queues {
		w, n := h.pick(q, h.shardOf(q))
		if w == nil {
			h.finish(q, false)
			continue
		}
		reqs = append(reqs, redisq.PopRequest{Queue: q, Max: n,
			Opts: redisq.PopOptions{Reliable: w.mode.Reliable, AckTimeout: w.mode.AckTimeout, Grace: w.mode.Grace}})
		ws = append(ws, w)
	}
	if len(reqs) == 0 {
		return
	}
	results := h.store.PopMany(h.ctx, reqs)
	shared := len(reqs) > 1
	for i, r := range results {
		q, w := reqs[i].Queue, ws[i]
		if r.Err != nil {
			h.stats.Errors.Add(1)
			if h.ctx.Err() == nil {
				h.log.LogAttrs(h.ctx, slog.LevelWarn, "pop failed", slog.String("queue", q), slog.Any("err", r.Err))
			}
			// Popped alone from now on; failed in a shared batch, it is
			// retried alone at once (the failure may have been another
			// queue's), else the sweep or the next wake-up retries.
			h.setApart(q, true)
			h.finish(q, shared)
			h.checkRedis()
			continue
		}
		h.setApart(q, r.Limited)
		if msgs := r.Messages; len(msgs) > 0 {
			h.stats.Pops.Add(1)
			rest := w.offer(msgs)
			h.stats.Delivered.Add(int64(len(msgs) - len(rest)))
			if len(rest) > 0 {
				// The waiter left (or filled up) meanwhile: try the others.
				rest = h.offerOthers(q, h.shardOf(q), w, rest)
				if len(rest) > 0 {
					h.handBack(q, w.mode, rest)
				}
			}
		}
		h.finish(q, r.Limited || r.Taken > 0 && r.Taken >= reqs[i].Max)
	}
}

// finish ends one pop step of a queue: if the queue may hold more, or a
// wake-up came meanwhile, it goes back on the ready list; else it is idle.
func (h *Hub) finish(queue string, more bool) {
	s := h.shardOf(queue)
	s.mu.Lock()
	q := s.queues[queue]
	if q != nil && len(q.waiters) > 0 && (more || q.again) && h.ctx.Err() == nil {
		q.again = false
		apart := q.apart
		s.mu.Unlock()
		h.startDrain(queue, apart)
		return
	}
	register := false
	if q != nil {
		q.draining = false
		q.again = false
		if len(q.waiters) == 0 {
			delete(s.queues, queue)
		} else if !q.registered && anyOpen(q.waiters) {
			// The round left waiters waiting (one-shot pops): now they
			// count as blocked.
			q.registered, register = true, true
		}
	}
	s.mu.Unlock()
	if register {
		h.markDirty(queue)
	}
}

// setApart sets whether a queue is popped apart (queueState.apart).
func (h *Hub) setApart(queue string, apart bool) {
	s := h.shardOf(queue)
	s.mu.Lock()
	if q := s.queues[queue]; q != nil {
		q.apart = apart
	}
	s.mu.Unlock()
}

// anyOpen tells whether any of ws still takes messages (a one-shot pop
// that got its batch stays listed until its request removes it).
func anyOpen(ws []*Waiter) bool {
	for _, w := range ws {
		if w.open() {
			return true
		}
	}
	return false
}

// pick returns the first waiter with room and how many messages it takes;
// a stream served is moved to the back so streams share a queue fairly.
func (h *Hub) pick(queue string, s *shard) (*Waiter, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[queue]
	if q == nil {
		return nil, 0
	}
	for i, w := range q.waiters {
		if n := w.want(); n > 0 {
			if !w.oneShot && len(q.waiters) > 1 {
				q.waiters = append(append(q.waiters[:i:i], q.waiters[i+1:]...), w)
			}
			return w, n
		}
		if !w.oneShot {
			// No room now: pull again as soon as the stream writes out
			// (the outbox may have looked full only because its reader
			// had not taken the next message yet).
			w.kick.Store(true)
		}
	}
	return nil, 0
}

// offerOthers offers messages to the queue's other waiters of the same mode.
func (h *Hub) offerOthers(queue string, s *shard, skip *Waiter, msgs []redisq.Message) []redisq.Message {
	s.mu.Lock()
	var cands []*Waiter
	if q := s.queues[queue]; q != nil {
		for _, w := range q.waiters {
			if w != skip && w.mode == skip.mode {
				cands = append(cands, w)
			}
		}
	}
	s.mu.Unlock()
	for _, w := range cands {
		if len(msgs) == 0 {
			break
		}
		if w.oneShot && len(msgs) > w.want() {
			continue
		}
		before := len(msgs)
		msgs = w.offer(msgs)
		h.stats.Delivered.Add(int64(before - len(msgs)))
	}
	return msgs
}
