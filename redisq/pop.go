package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// PopOptions select plain or reliable pops.
type PopOptions struct {
	// Reliable records the taken entries as in flight (state Blocked) until
	// acknowledged or until AckTimeout passes.
	Reliable   bool
	AckTimeout time.Duration
	// Grace delays the reaper by this much beyond AckTimeout: the consumer
	// (a stream) watches its own deadline and hands back itself.
	Grace time.Duration
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
		if r.Taken < want && !r.Limited {
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
// ghosts (transaction expired or deleted) are dropped from out and
// returned in gone (and, for reliable pops, removed from the inflight set).
func (s *Store) fetchAndMark(ctx context.Context, taken []Message, state string) (out, gone []Message, err error) {
	calls := make([]scriptCall, len(taken))
	for i, m := range taken {
		tk := KeysOfTrans(m.TID)
		calls[i] = scriptCall{transitionScript, []string{tk.Meta, tk.State}, []any{m.Queue, state, "1"}}
	}
	cmds, err := s.runScripts(ctx, calls)
	if err != nil {
		return nil, nil, err
	}
	out = taken[:0:0]
	var ghosts []string
	for i, c := range cmds {
		vals, err := c.Slice()
		if errors.Is(err, redis.Nil) || len(vals) < 3 {
			ghosts = append(ghosts, taken[i].Priority.String()+taken[i].TID)
			gone = append(gone, taken[i])
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
	if state == domain.StateBlocked && len(ghosts) > 0 {
		members := make([]any, len(ghosts))
		for i, g := range ghosts {
			members[i] = g
		}
		if err := s.rdb.ZRem(ctx, KeysOfQueue(taken[0].Queue).Inflight, members...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop ghost inflight entries", slog.Any("err", err))
		}
	}
	return out, gone, nil
}

// TouchLastPop records that queue full was popped now (for a pop that
// returned nothing; pops that take messages record it themselves). It
// keeps the records of recent pop calls in the value (see luaRecordPop).
func (s *Store) TouchLastPop(ctx context.Context, full string) error {
	now := s.now()
	if err := s.runScript(ctx, touchLastPopScript, []string{KeysOfQueue(full).LastPop},
		now.Unix(), int64(infoTTL/time.Second), now.UnixMilli(), popRecordWindow.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("touch lastPop %s: %w", full, err)
	}
	return nil
}

// Peek returns up to max messages of queue full without removing them or
// changing any state, H before L. Ghosts are skipped (and looked past). It
// reads at most DefaultBatchBytes of payloads (see PeekBounded).
func (s *Store) Peek(ctx context.Context, full string, max int) ([]Message, error) {
	return s.PeekBounded(ctx, full, max, DefaultBatchBytes)
}

// PopRequest asks for up to Max messages of the queue with full name Queue.
type PopRequest struct {
	Queue string
	Max   int
	Opts  PopOptions
}

// PopResult is the outcome of one PopRequest. Taken counts the entries
// taken from the queue, ghosts (expired or deleted transactions) included:
// Taken >= Max means the queue may hold more. Limited reports entries
// handed back because the batch's byte budget was spent: the queue holds
// more too. Skipped are the entries taken whose transaction had expired
// or was deleted (state Expired for that queue; not delivered).
type PopResult struct {
	Messages []Message
	Taken    int
	Limited  bool
	Skipped  []Message
	Err      error
}

// PopMany pops several queues in one pipelined round trip of one script
// per queue on a single server or Sentinel primary (see popManyFused), in
// three on a Cluster (the pop scripts, a read of the transactions, their
// state changes; a fourth reads big payloads), whatever their number: the
// hub batches the queues it was woken for. The payloads read are bounded by the store's batch budget
// (Options.BatchBytes): entries beyond it go back to their queue untouched
// (PopResult.Limited), at least one message is always delivered. Each queue is popped
// atomically as by Pop. On a Cluster it does one round per queue, so a
// queue whose entries were ghosts reports Taken == Max with fewer Messages
// and the caller pops it again; the single-server script pops on past
// ghosts (up to ghostLimitLua of them) in the same call.
//
// A pop script call whose reply does not come (a read timeout, a dropped
// connection) fails its request, and before PopMany returns the call is
// undone (see undoPops): whatever it took is back at the head of its queue,
// in order, in the state it had. A queue whose undo could not reach Redis
// either is not popped again by this store until the undo went through
// (tried again at the start of every PopMany and by UndoPending).
func (s *Store) PopMany(ctx context.Context, reqs []PopRequest) []PopResult {
	s.UndoPending(ctx)
	var res []PopResult
	if blocked := s.undosPending(reqs); blocked != nil {
		// Pop the others; the blocked ones fail without a round trip.
		var sub []PopRequest
		var subOf []int
		for i, r := range reqs {
			if !blocked[i] {
				sub = append(sub, r)
				subOf = append(subOf, i)
			}
		}
		res = make([]PopResult, len(reqs))
		for i, r := range reqs {
			if blocked[i] {
				res[i].Err = fmt.Errorf("pop %s: %w", r.Queue, errUndoPending)
			}
		}
		if len(sub) > 0 {
			for j, r := range s.PopMany(ctx, sub) {
				res[subOf[j]] = r
			}
		}
		return res
	}
	if s.fused() {
		return s.popManyFused(ctx, reqs)
	}
	return s.popManySteps(ctx, reqs)
}

// popManySteps is PopMany where every script stays in one slot (Cluster):
// the pop scripts on the queues' slots, then the reads and the state
// changes on the transactions' slots.
func (s *Store) popManySteps(ctx context.Context, reqs []PopRequest) []PopResult {
	res := make([]PopResult, len(reqs))
	now := s.now()
	deadlines := make([]int64, len(reqs))
	var idx []scriptCall
	var idxOf []int
	for i, r := range reqs {
		if r.Opts.Reliable {
			deadlines[i] = now.Add(r.Opts.AckTimeout + r.Opts.Grace).UnixMilli()
			idx = append(idx, scriptCall{inflightIndexScript, []string{keyInflightQueues}, []any{r.Queue, "lt", deadlines[i]}})
			idxOf = append(idxOf, i)
		}
	}
	if len(idx) > 0 {
		cmds, _ := s.runScripts(ctx, idx)
		for j, c := range cmds {
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				res[idxOf[j]].Err = fmt.Errorf("pop %s: inflight index: %w", reqs[idxOf[j]].Queue, err)
			}
		}
	}

	calls := make([]scriptCall, 0, len(reqs))
	callOf := make([]int, 0, len(reqs))
	pops := make([]popCall, 0, len(reqs))
	for i, r := range reqs {
		if res[i].Err != nil || r.Max <= 0 {
			continue
		}
		qk := KeysOfQueue(r.Queue)
		pc := s.newPopCall(r, false, deadlines[i])
		calls = append(calls, scriptCall{popScript, []string{qk.High, qk.Low, qk.LastPop, qk.Inflight},
			[]any{r.Max, now.Unix(), int64(infoTTL / time.Second), boolArg(r.Opts.Reliable), deadlines[i],
				pc.owner, pc.nonce, now.UnixMilli(), popRecordWindow.Milliseconds(), stepwiseUndoTTL.Milliseconds()}})
		callOf = append(callOf, i)
		pops = append(pops, pc)
	}
	if len(calls) == 0 {
		return res
	}
	cmds, _ := s.runScripts(ctx, calls)
	taken := make([][]Message, len(reqs))
	var failed []popCall
	for j, c := range cmds {
		i := callOf[j]
		raw, err := c.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			res[i].Err = fmt.Errorf("pop %s: %w", reqs[i].Queue, err)
			failed = s.toUndo(failed, pops[j], err)
			continue
		}
		s.settled(pops[j])
		for k := 0; k+1 < len(raw); k += 2 {
			taken[i] = append(taken[i], Message{TID: raw[k+1], Queue: reqs[i].Queue, Priority: domain.Priority(raw[k][0]), Deadline: deadlines[i]})
		}
		res[i].Taken = len(taken[i])
	}
	s.undoPops(ctx, failed)
	s.deliverTaken(ctx, reqs, taken, deadlines, res)
	return res
}

// deliverTaken turns the entries taken by the pop scripts into messages,
// within the store's byte budget, in three steps: read the metadata and
// payload sizes (and the small payloads), read the payloads that fit the
// budget, then mark the states. Nothing is changed before everything is
// read, so a failed read (a Redis timeout) hands the entries back exactly
// as they were; entries beyond the budget go back untouched too
// (PopResult.Limited). Only a failure of the marking step, whose replies
// are a few bytes, has states to undo.
func (s *Store) deliverTaken(ctx context.Context, reqs []PopRequest, taken [][]Message, deadlines []int64, res []PopResult) {
	d := &delivery{s: s, reqs: reqs, taken: taken, res: res, base: make([]int, len(reqs))}
	for i := range reqs {
		d.base[i] = len(d.flat)
		d.flat = append(d.flat, taken[i]...)
	}
	if len(d.flat) == 0 {
		return
	}
	info, err := s.readInfo(ctx, d.flat, s.opts.BatchBytes/int64(len(d.flat)))
	if err != nil {
		d.handBackAll(ctx, err)
		return
	}
	d.info = info
	d.choose(s.opts.BatchBytes)
	d.settleUnchosen(ctx)
	if !d.readChosen(ctx) {
		return
	}
	s.dropGhosts(ctx, reqs, d.ghosts, d.mark(ctx, deadlines))
}

// delivery is one deliverTaken call: the entries the pop scripts took,
// flattened over the batch's queues (base[i] is where queue i's start),
// what was read of them, and which of them each queue delivers.
type delivery struct {
	s      *Store
	reqs   []PopRequest
	taken  [][]Message
	res    []PopResult
	flat   []Message
	base   []int
	info   []entryInfo
	chosen [][]int       // per queue: indexes into flat of the messages that fit the budget
	next   []int         // per queue: how many of its entries the choice went through
	ghosts map[int][]any // reliable ghosts per queue, to drop from the inflight set
}

// handBackAll gives every queue its entries back as they were, after a
// failed read, and reports err for it.
func (d *delivery) handBackAll(ctx context.Context, err error) {
	for i, r := range d.reqs {
		if len(d.taken[i]) > 0 && d.res[i].Err == nil {
			d.s.handBackRaw(context.WithoutCancel(ctx), r.Queue, d.taken[i], r.Opts.Reliable)
			d.res[i].Err = fmt.Errorf("pop %s: %w", r.Queue, err)
			d.res[i].Taken = 0
		}
	}
}

// choose picks what fits the budget, one message per queue in turn so
// that one queue of big payloads does not crowd the others out; each queue
// keeps its order (the first one that does not fit ends its turns).
func (d *delivery) choose(budget int64) {
	d.chosen = make([][]int, len(d.reqs))
	d.next = make([]int, len(d.reqs))
	stopped := make([]bool, len(d.reqs))
	var total int64
	for more := true; more; {
		more = false
		for i := range d.reqs {
			for !stopped[i] && d.next[i] < len(d.taken[i]) {
				k := d.base[i] + d.next[i]
				if !d.info[k].live {
					d.next[i]++
					continue
				}
				if total > 0 && total+d.info[k].size > budget {
					stopped[i] = true
					break
				}
				total += d.info[k].size
				d.chosen[i] = append(d.chosen[i], k)
				d.next[i]++
				more = true
				break
			}
		}
	}
}

// ghost records flat[k], taken for queue i, as skipped (its transaction
// is gone).
func (d *delivery) ghost(i, k int) {
	m := d.flat[k]
	d.res[i].Skipped = append(d.res[i].Skipped, m)
	if d.reqs[i].Opts.Reliable {
		if d.ghosts == nil {
			d.ghosts = map[int][]any{}
		}
		d.ghosts[i] = append(d.ghosts[i], m.Priority.String()+m.TID)
	}
}

// settleUnchosen records the ghosts the choice went through and hands
// back, untouched, the entries beyond the budget.
func (d *delivery) settleUnchosen(ctx context.Context) {
	for i, r := range d.reqs {
		var rest []Message
		for p := range d.taken[i] {
			k := d.base[i] + p
			switch {
			case !d.info[k].live:
				d.ghost(i, k)
			case p >= d.next[i]:
				rest = append(rest, d.flat[k])
			}
		}
		if len(rest) > 0 {
			// Over the budget: back to the head of the queue as they were.
			d.s.handBackRaw(context.WithoutCancel(ctx), r.Queue, rest, r.Opts.Reliable)
			d.res[i].Limited = true
		}
	}
}

// readChosen reads the payloads of the chosen messages not read with
// their sizes. On a failure it hands the chosen ones back, reports the
// error and returns false.
func (d *delivery) readChosen(ctx context.Context) bool {
	var all []int
	for i := range d.reqs {
		all = append(all, d.chosen[i]...)
	}
	gone, err := d.s.readPayloads(ctx, d.flat, d.info, all)
	if err != nil {
		for i, r := range d.reqs {
			if len(d.chosen[i]) > 0 {
				d.s.handBackRaw(context.WithoutCancel(ctx), r.Queue, pick(d.flat, d.chosen[i]), r.Opts.Reliable)
				d.res[i].Err = fmt.Errorf("pop %s: %w", r.Queue, err)
				d.res[i].Taken = 0
			}
		}
		d.s.dropGhosts(ctx, d.reqs, d.ghosts, nil)
		return false
	}
	for _, k := range gone {
		d.info[k].live = false
	}
	return true
}

// mark sets the states of the chosen messages, the only step that changes
// anything, fills the results, and returns the in-flight index updates of
// the reliable queues that delivered. A queue whose marking failed gets
// its marks undone and an error.
func (d *delivery) mark(ctx context.Context, deadlines []int64) (after []scriptCall) {
	var marks []scriptCall
	var markOf, markK []int
	for i, r := range d.reqs {
		state := domain.StateDelivered
		if r.Opts.Reliable {
			state = domain.StateBlocked
		}
		for _, k := range d.chosen[i] {
			if !d.info[k].live {
				d.ghost(i, k)
				continue
			}
			tk := KeysOfTrans(d.flat[k].TID)
			marks = append(marks, scriptCall{transitionScript, []string{tk.Meta, tk.State}, []any{r.Queue, state, "0"}})
			markOf = append(markOf, i)
			markK = append(markK, k)
		}
	}
	mcmds, _ := d.s.runScripts(ctx, marks)
	failed := make([]bool, len(d.reqs))
	marked := make([]bool, len(d.flat))
	for j, c := range mcmds {
		i, k := markOf[j], markK[j]
		switch err := c.Err(); {
		case errors.Is(err, redis.Nil):
			d.ghost(i, k) // deleted or expired since it was read
		case err != nil:
			failed[i] = true
		default:
			marked[k] = true
		}
	}
	for i, r := range d.reqs {
		if failed[i] {
			d.s.undoMarks(context.WithoutCancel(ctx), r, pick(d.flat, d.chosen[i]))
			d.res[i].Err = fmt.Errorf("pop %s: marking deliveries failed", r.Queue)
			d.res[i].Taken = 0
			continue
		}
		for _, k := range d.chosen[i] {
			if marked[k] {
				d.res[i].Messages = append(d.res[i].Messages, d.flat[k])
			}
		}
		if r.Opts.Reliable && len(d.res[i].Messages) > 0 {
			after = append(after, scriptCall{inflightIndexScript, []string{keyInflightQueues}, []any{r.Queue, "lt", deadlines[i]}})
		}
	}
	return after
}

// pick returns flat[k] for each k of idx.
func pick(flat []Message, idx []int) []Message {
	out := make([]Message, len(idx))
	for j, k := range idx {
		out[j] = flat[k]
	}
	return out
}

// undoMarks hands back messages whose marking failed (a Redis timeout may
// have applied some of the marks): their state goes back to Pending where a
// mark of this pop set it, and the entries go back to the head of the
// queue.
func (s *Store) undoMarks(ctx context.Context, r PopRequest, msgs []Message) {
	if r.Opts.Reliable {
		s.handBackRaw(ctx, r.Queue, msgs, true) // Blocked → Pending, out of flight
		return
	}
	s.setStatesIf(ctx, msgs, domain.StatePending, domain.StateDelivered)
	s.handBackRaw(ctx, r.Queue, msgs, false)
}

// dropGhosts removes reliable ghosts from the inflight sets and refreshes
// the reaper's index for queues with messages in flight (after the pop
// too: closes the race with a reaper that found the inflight set empty
// between the first index write and the pop).
func (s *Store) dropGhosts(ctx context.Context, reqs []PopRequest, ghosts map[int][]any, after []scriptCall) {
	if len(ghosts) > 0 {
		pipe := s.rdb.Pipeline()
		for i, members := range ghosts {
			pipe.ZRem(ctx, KeysOfQueue(reqs[i].Queue).Inflight, members...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop ghost inflight entries", slog.Any("err", err))
		}
	}
	if len(after) > 0 {
		if _, err := s.runScripts(context.WithoutCancel(ctx), after); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "inflight index", slog.Any("err", err))
		}
	}
}

// popManyFused is PopMany on a server that is not a Cluster: one script per
// queue (popFusedScript) takes the entries, reads their transactions, keeps
// what fits the queue's share of the batch budget, and marks it (records it
// in flight, for a reliable pop): one round trip for the whole batch, the
// Redis work of one delivered message in one script call. A queue whose
// first message alone is over its share (a big payload among many queues)
// gets it all back and is popped by popManySteps, which reads sizes first.
//
// Unlike popManySteps the state changes in the same step as the pop, so a
// reply lost after the script ran (a read timeout) leaves the entries
// taken and marked Delivered (Blocked and in flight) with nobody holding
// them. go-redis does not resend the script (runOnce: a second run would
// take again), so the call is undone instead (undoPops): the script
// records what it took under the call's nonce in the lastpop value it
// writes anyway (no extra command), and popUndoScript puts those entries
// back and resets their states, or, when the call has not run, leaves a
// tombstone so that it takes nothing if it still arrives.
//
// Why an undo rather than replaying the call (returning the recorded
// entries to a retry): the undo needs no metadata re-read on a second
// path of the pop script, serves just as well when the retry can only
// happen much later (Redis unreachable for a while, the consumer gone
// meanwhile), and leaves the queue exactly as it was, so the hub's next
// pop (woken by the entries' return) delivers them once.
func (s *Store) popManyFused(ctx context.Context, reqs []PopRequest) []PopResult {
	res := make([]PopResult, len(reqs))
	now := s.now()
	share := s.opts.BatchBytes / int64(max(len(reqs), 1))
	firstAlways := boolArg(len(reqs) == 1)
	pre, metaSuf, stateSuf := transKeyArgs[0], transKeyArgs[1], transKeyArgs[2]
	deadlines := make([]int64, len(reqs))
	calls := make([]scriptCall, 0, len(reqs))
	callOf := make([]int, 0, len(reqs))
	pops := make([]popCall, 0, len(reqs))
	for i, r := range reqs {
		if r.Max <= 0 {
			continue
		}
		state := domain.StateDelivered
		if r.Opts.Reliable {
			state = domain.StateBlocked
			deadlines[i] = now.Add(r.Opts.AckTimeout + r.Opts.Grace).UnixMilli()
		}
		high, low, lastPop, inflight := popKeys(r.Queue)
		pc := s.newPopCall(r, true, deadlines[i])
		calls = append(calls, scriptCall{popFusedScript,
			[]string{high, low, lastPop, inflight, keyInflightQueues},
			[]any{r.Max, now.Unix(), int64(infoTTL / time.Second), boolArg(r.Opts.Reliable), deadlines[i],
				share, firstAlways, r.Queue, state, pre, metaSuf, stateSuf, handBackTTL.Milliseconds(),
				pc.owner, pc.nonce, now.UnixMilli(), popRecordWindow.Milliseconds()}})
		callOf = append(callOf, i)
		pops = append(pops, pc)
	}
	if len(calls) == 0 {
		return res
	}
	cmds, _ := s.runPayloadScripts(ctx, calls)
	var big []int
	var failed []popCall
	for j, c := range cmds {
		i := callOf[j]
		raw, err := c.StringSlice()
		if err != nil || len(raw) < 2 {
			if err == nil {
				err = fmt.Errorf("short reply %q", raw)
			}
			res[i].Err = fmt.Errorf("pop %s: %w", reqs[i].Queue, err)
			failed = s.toUndo(failed, pops[j], err)
			continue
		}
		s.settled(pops[j])
		res[i].Taken, _ = strconv.Atoi(raw[1])
		res[i].Limited = raw[0] == "limited"
		ghosts := 0
		for k := 2; k+5 < len(raw); k += 6 {
			m := Message{TID: raw[k+1], Queue: reqs[i].Queue, Priority: domain.Priority(raw[k][0]), Deadline: deadlines[i]}
			if raw[k+2] != "1" {
				ghosts++
				res[i].Skipped = append(res[i].Skipped, m)
				continue
			}
			m.Payload, m.Callback = raw[k+3], raw[k+4]
			m.ExpiresAt, _ = strconv.ParseInt(raw[k+5], 10, 64)
			res[i].Messages = append(res[i].Messages, m)
		}
		if raw[0] == "big" {
			res[i].Taken = ghosts
			big = append(big, i)
		}
	}
	s.undoPops(ctx, failed)
	if len(big) > 0 {
		sub := make([]PopRequest, len(big))
		for j, i := range big {
			sub[j] = reqs[i]
			sub[j].Max -= res[i].Taken
		}
		for j, r := range s.popManySteps(ctx, sub) {
			i := big[j]
			res[i].Messages = append(res[i].Messages, r.Messages...)
			res[i].Taken += r.Taken
			res[i].Limited, res[i].Err = r.Limited, r.Err
		}
	}
	return res
}
