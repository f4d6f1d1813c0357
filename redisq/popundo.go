package redisq

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// A pop script takes entries off a queue (and, on a single server, marks
// them Delivered or Blocked) in one call that go-redis must not resend
// (runOnce). When its reply does not come, the call may or may not have
// run; the store then undoes it: every pop script records what it took in
// the queue's lastpop value under the call's owner and nonce (luaRecordPop;
// the SET it did anyway, so the happy path costs nothing more), and
// popUndoScript puts a recorded call's entries back and resets their
// states, or leaves a tombstone that makes a call still on its way take
// nothing. The undo is idempotent and retried; a failed pop thus changes
// no state and loses no entry.
//
// Residual cases: while an undo cannot reach Redis the entries stay taken
// (and marked); it is retried at this store's next PopMany and by
// UndoPending (the hub calls it on every heartbeat), and the queue is not
// popped by this store meanwhile. A store that exits before its undo went
// through leaves them so (a reliable pop's come back through the reaper).
// Records of other owners live popRecordWindow: an undo later than that,
// with other nodes popping the queue meanwhile, may find its record gone
// (then nothing is put back).

// popRecordWindow is how long a pop call's record (or an undo's tombstone)
// is kept in a queue's lastpop value by the pops of other owners; an
// owner's own next pop of the queue replaces its record at once.
const popRecordWindow = 10 * time.Minute

// stepwiseUndoTTL is the least TTL of a list that an undo of popScript
// gives entries back: the Cluster's undo cannot read the entries'
// expiry (other slots), and a list the pop emptied lost its TTL; the
// lastpop TTL outlives any transaction's.
const stepwiseUndoTTL = infoTTL

// undoAttempts is how often undoPops sends an undo before it leaves it
// pending (go-redis retries each attempt too: the undo is idempotent).
const undoAttempts = 2

// errUndoPending fails the pops of a queue whose last failed pop could not
// be undone yet.
var errUndoPending = errors.New("undo of a failed pop pending (redis unreachable)")

// popCall identifies one pop script call, for its undo.
type popCall struct {
	queue    string
	owner    string
	slot     int
	nonce    string
	reliable bool
	deadline int64  // the call's ack deadline (ms), reliable only
	fused    bool   // popFusedScript: the call set states
	state    string // the state it set
}

// popOwners hands out owners (store id and slot) to pop calls and keeps
// the undos that could not be done yet.
type popOwners struct {
	id       string // random, per store
	mu       sync.Mutex
	slots    map[string]uint64 // queue → slots in use (a bit each)
	pending  map[string][]popCall
	npending atomic.Int64
	nonce    func() string // a fresh nonce per call (tests fix it)
}

func newPopOwners() *popOwners {
	return &popOwners{id: strconv.FormatUint(rand.Uint64(), 36), slots: map[string]uint64{}, pending: map[string][]popCall{},
		nonce: func() string { return strconv.FormatUint(rand.Uint64(), 36) }}
}

// newPopCall starts a pop call of r: it takes the lowest free slot of the
// queue (concurrent pops of one queue in this store get distinct owners,
// so that none replaces the record of another) and a fresh nonce. Settle
// it with settled, or hand it to undoPops.
func (s *Store) newPopCall(r PopRequest, fused bool, deadline int64) popCall {
	o := s.owners
	o.mu.Lock()
	used := o.slots[r.Queue]
	slot := bits.TrailingZeros64(^used)
	if slot < 64 {
		o.slots[r.Queue] = used | 1<<slot
	}
	o.mu.Unlock()
	owner := o.id + "." + strconv.Itoa(slot)
	if slot >= 64 { // 64 concurrent pops of one queue: a one-off owner
		owner = o.id + ".r" + strconv.FormatUint(rand.Uint64(), 36)
	}
	state := domain.StateDelivered
	if r.Opts.Reliable {
		state = domain.StateBlocked
	}
	return popCall{queue: r.Queue, owner: owner, slot: slot, nonce: o.nonce(),
		reliable: r.Opts.Reliable, deadline: deadline, fused: fused, state: state}
}

// settled frees the slot of a call that is over (its reply came, or it
// was undone).
func (s *Store) settled(pc popCall) {
	if pc.slot >= 64 {
		return
	}
	o := s.owners
	o.mu.Lock()
	if used := o.slots[pc.queue] &^ (1 << pc.slot); used != 0 {
		o.slots[pc.queue] = used
	} else {
		delete(o.slots, pc.queue)
	}
	o.mu.Unlock()
}

// toUndo appends pc to calls unless err shows that the call never left
// the client (no connection to send it on: a saturated pool), which needs
// no undo and, under overload, should cost no extra round trip; pc is then
// settled.
func (s *Store) toUndo(calls []popCall, pc popCall, err error) []popCall {
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) {
		s.settled(pc)
		return calls
	}
	return append(calls, pc)
}

// undoPops undoes pop calls whose outcome is unknown (see popUndoScript),
// in one pipelined round trip, tried undoAttempts times; those that still
// fail are kept for UndoPending, their slots still taken.
func (s *Store) undoPops(ctx context.Context, calls []popCall) {
	if len(calls) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx) // the undo is owed whatever the caller does
	pre, metaSuf, stateSuf := transKeyParts()
	var err error
	for attempt := 0; attempt < undoAttempts && len(calls) > 0; attempt++ {
		now := s.now()
		sc := make([]scriptCall, len(calls))
		for i, pc := range calls {
			qk := KeysOfQueue(pc.queue)
			ttl := stepwiseUndoTTL
			if pc.fused {
				ttl = handBackTTL // and the entries' own expiry, which the script reads
			}
			sc[i] = scriptCall{popUndoScript, []string{qk.High, qk.Low, qk.LastPop, qk.Inflight},
				[]any{pc.owner, pc.nonce, now.UnixMilli(), int64(infoTTL / time.Second), boolArg(pc.reliable), pc.deadline,
					boolArg(pc.fused), pc.queue, pc.state, pre, metaSuf, stateSuf, ttl.Milliseconds()}}
		}
		cmds, _ := runScriptsOn(ctx, s.rdb, sc)
		var left []popCall
		for i, c := range cmds {
			n, cerr := c.Int64()
			if cerr != nil {
				err = cerr
				left = append(left, calls[i])
				continue
			}
			s.settled(calls[i])
			if n > 0 {
				s.log.LogAttrs(ctx, slog.LevelInfo, "failed pop undone", slog.String("queue", calls[i].queue), slog.Int64("entries", n))
				s.wake(ctx, calls[i].queue)
			}
		}
		calls = left
	}
	if len(calls) == 0 {
		return
	}
	o := s.owners
	o.mu.Lock()
	for _, pc := range calls {
		o.pending[pc.queue] = append(o.pending[pc.queue], pc)
		o.npending.Add(1)
	}
	o.mu.Unlock()
	s.log.LogAttrs(ctx, slog.LevelWarn, "undo of failed pops pending", slog.Int("calls", len(calls)), slog.Any("err", err))
}

// UndoPending tries again the undos of failed pops that could not reach
// Redis (see PopMany); it costs nothing when there are none. The hub calls
// it on every heartbeat, so that they go through soon after Redis is back
// even when no pop follows.
func (s *Store) UndoPending(ctx context.Context) {
	o := s.owners
	if o.npending.Load() == 0 {
		return
	}
	o.mu.Lock()
	var calls []popCall
	for q, pcs := range o.pending {
		calls = append(calls, pcs...)
		delete(o.pending, q)
	}
	o.npending.Store(0)
	o.mu.Unlock()
	if len(calls) > 0 {
		s.undoPops(ctx, calls)
	}
}

// undosPending tells which requests are of queues with an undo still
// pending (nil: none).
func (s *Store) undosPending(reqs []PopRequest) []bool {
	o := s.owners
	if o.npending.Load() == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []bool
	for i, r := range reqs {
		if len(o.pending[r.Queue]) > 0 {
			if out == nil {
				out = make([]bool, len(reqs))
			}
			out[i] = true
		}
	}
	return out
}
