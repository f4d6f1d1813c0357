package redisq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

// pauseHook stops the redis-server process (SIGSTOP) while the first
// pipeline that match selects is sent, so that the client's read times out
// on a real server, and lets it run again (SIGCONT) once the client has
// given up. The paused server still executes what it received.
type pauseHook struct {
	pid   int
	match func([]redis.Cmder) bool
	armed atomic.Bool
	fired atomic.Bool
}

func (h *pauseHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pauseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.around([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}
func (h *pauseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.around(cmds, func() error { return next(ctx, cmds) })
	}
}

// around runs send (the command or pipeline, with go-redis' retries) with
// the server paused if cmds match and the hook is armed.
func (h *pauseHook) around(cmds []redis.Cmder, send func() error) error {
	if !h.match(cmds) || !h.armed.CompareAndSwap(true, false) {
		return send()
	}
	h.fired.Store(true)
	if err := syscall.Kill(h.pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause redis: %w", err)
	}
	defer func() { _ = syscall.Kill(h.pid, syscall.SIGCONT) }()
	return send()
}

// runsScript matches pipelines that run script sc.
func runsScript(sc *redis.Script) func([]redis.Cmder) bool {
	return func(cmds []redis.Cmder) bool {
		for _, c := range cmds {
			a := c.Args()
			if len(a) > 1 && strings.EqualFold(fmt.Sprint(a[0]), "evalsha") && a[1] == sc.Hash() {
				return true
			}
		}
		return false
	}
}

// readsPayloads matches the pipelines that fetch big payloads.
func readsPayloads(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if a := c.Args(); len(a) == 3 && strings.EqualFold(fmt.Sprint(a[0]), "hget") && a[2] == "payload" {
			return true
		}
	}
	return false
}

// TestFailedPopChangesNoState: a pop whose Redis round trip times out (the
// server paused, at each step: the pop script itself, whose lost reply
// leaves the entries taken, and on the Cluster's path the steps after it)
// hands every entry back to the head of its queue, in order, in the state
// it had: Pending, nothing in flight. Issue 13 item 6: after a read
// timeout, handed-back messages were left Delivered, and the entries taken
// by a pop script whose reply was lost were gone (and, on a single
// server, marked Delivered or Blocked).
func TestFailedPopChangesNoState(t *testing.T) {
	steps := []struct {
		name     string
		match    func([]redis.Cmder) bool
		big      bool
		stepwise bool
	}{
		{"fused pop script", runsScript(popFusedScript), false, false},
		{"pop script", runsScript(popScript), false, true},
		{"metadata read", runsScript(metaInfoScript), false, true},
		{"payload read", readsPayloads, true, true},
		{"marking", runsScript(transitionScript), false, true},
	}
	for _, st := range steps {
		for _, reliable := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reliable=%v", st.name, reliable), func(t *testing.T) {
				r := testenv.StartRedis(t, testenv.OwnRedis())
				plain := r.Client()
				t.Cleanup(func() { plain.Close() })
				c := redis.NewClient(&redis.Options{Addr: r.Addr, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
				t.Cleanup(func() { c.Close() })
				hook := &pauseHook{pid: r.Pid(), match: st.match}
				c.AddHook(hook)
				ctx := context.Background()
				s := New(c, Options{BatchBytes: 1 << 20})
				s.stepwise = st.stepwise // the steps of the Cluster's path
				if err := s.LoadScripts(ctx); err != nil {
					t.Fatal(err)
				}
				const q = "UNSEC:paused"
				payload := "small"
				if st.big {
					payload = strings.Repeat("b", 600<<10) // not inlined: fetched by HGET
				}
				var tids []string
				for range 3 {
					tx := NewTx('H', payload, "paused")
					tids = append(tids, tx.ID)
					if err := s.Provision(ctx, tx); err != nil {
						t.Fatal(err)
					}
				}
				opts := PopOptions{Reliable: reliable, AckTimeout: time.Minute}
				hook.armed.Store(true)
				res := s.PopMany(ctx, []PopRequest{{Queue: q, Max: 10, Opts: opts}})[0]
				if !hook.fired.Load() {
					t.Fatalf("the %s step never ran", st.name)
				}
				if res.Err == nil {
					t.Fatalf("pop with Redis paused at the %s step: no error, %d messages", st.name, len(res.Messages))
				}
				// Every entry is back at the head, in order, Pending.
				if got, _ := plain.LRange(ctx, KeysOfQueue(q).High, 0, -1).Result(); !cmp.Equal(tids, got) {
					t.Fatalf("queue after the failed pop = %v, want %v", got, tids)
				}
				for _, tid := range tids {
					states, err := s.States(ctx, tid)
					if err != nil {
						t.Fatal(err)
					}
					if states[q] != domain.StatePending {
						t.Fatalf("state of %s after the failed pop = %q, want Pending", tid, states[q])
					}
				}
				if n, _ := plain.ZCard(ctx, KeysOfQueue(q).Inflight).Result(); n != 0 {
					t.Fatalf("%d entries left in flight", n)
				}
				// And they are delivered by the next pop, once, in order.
				got, err := s.Pop(ctx, q, 10, opts)
				if err != nil || len(got) != 3 {
					t.Fatalf("pop after the failure: %d messages, %v", len(got), err)
				}
				for i, m := range got {
					if m.TID != tids[i] {
						t.Fatalf("pop after the failure: message %d is %s, want %s", i, m.TID, tids[i])
					}
				}
				if more, err := s.Pop(ctx, q, 10, opts); err != nil || len(more) != 0 {
					t.Fatalf("second pop after the failure: %d messages (delivered twice), %v", len(more), err)
				}
			})
		}
	}
}

// sendCounter counts how often a script's SHA goes over the wire, on every
// connection a client dials: go-redis' retries happen below the hooks, so
// only the connections see them.
type sendCounter struct {
	sha   []byte
	sends atomic.Int64
}

type countingConn struct {
	net.Conn
	c *sendCounter
}

func (cc countingConn) Write(p []byte) (int, error) {
	cc.c.sends.Add(int64(bytes.Count(p, cc.c.sha)))
	return cc.Conn.Write(p)
}

func (c *sendCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	cn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return countingConn{cn, c}, nil
}

// TestScriptsNotResent: a push or pop script whose reply does not come in
// time (the server paused past the read timeout; it runs what it received
// once it goes on) is not sent again by go-redis' retries (MaxRetries 3):
// the server would run it twice, queueing a message twice or taking
// entries twice (the first ones lost). Every script of runOnce is sent
// exactly once, the call fails, and the server's one run is all that
// happened: one entry queued; or the popped entry taken once and then put
// back by the pop's undo (all three queued again, none in flight).
func TestScriptsNotResent(t *testing.T) {
	cases := []struct {
		name     string
		sc       *redis.Script
		stepwise bool
		pop      bool
		reliable bool
	}{
		{"fused provision", provisionAllScript, false, false, false},
		{"stepwise push", pushScript, true, false, false},
		{"fused pop", popFusedScript, false, true, false},
		{"fused reliable pop", popFusedScript, false, true, true},
		{"stepwise pop", popScript, true, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := testenv.StartRedis(t, testenv.OwnRedis())
			plain := r.Client()
			t.Cleanup(func() { plain.Close() })
			counter := &sendCounter{sha: []byte(tc.sc.Hash())}
			c := redis.NewClient(&redis.Options{Addr: r.Addr, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
				MaxRetries: 3, Dialer: counter.dial})
			t.Cleanup(func() { c.Close() })
			hook := &pauseHook{pid: r.Pid(), match: runsScript(tc.sc)}
			c.AddHook(hook)
			ctx := context.Background()
			// Idle connections, ready: a resend would not wait on a dial
			// (which cannot complete while the server is paused).
			var conns []*redis.Conn
			for range 4 {
				cn := c.Conn()
				if err := cn.Ping(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, cn)
			}
			for _, cn := range conns {
				cn.Close()
			}
			s := New(c, Options{})
			s.stepwise = tc.stepwise
			if err := s.LoadScripts(ctx); err != nil {
				t.Fatal(err)
			}
			const q = "UNSEC:once"
			qk := KeysOfQueue(q)
			tx := func() *Transaction { return NewTx('H', "p", "once") }
			var err error
			wantLen := int64(1) // provision: the one entry
			if tc.pop {
				for range 3 {
					if err := s.Provision(ctx, tx()); err != nil {
						t.Fatal(err)
					}
				}
				hook.armed.Store(true)
				err = s.PopMany(ctx, []PopRequest{{Queue: q, Max: 1, Opts: PopOptions{Reliable: tc.reliable, AckTimeout: time.Minute}}})[0].Err
				wantLen = 3 // one entry taken, once, and put back by the undo
			} else {
				hook.armed.Store(true)
				err = s.Provision(ctx, tx())
			}
			if !hook.fired.Load() {
				t.Fatal("the script never ran")
			}
			if err == nil {
				t.Fatal("no error with the server paused past the read timeout")
			}
			if n := counter.sends.Load(); n != 1 {
				t.Fatalf("the script was sent %d times, want once", n)
			}
			// The server runs the one call it received once it goes on.
			deadline := time.Now().Add(10 * time.Second)
			for plain.LLen(ctx, qk.High).Val() != wantLen {
				if time.Now().After(deadline) {
					t.Fatalf("queue length %d, want %d", plain.LLen(ctx, qk.High).Val(), wantLen)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if tc.pop {
				if n := plain.ZCard(ctx, qk.Inflight).Val(); n != 0 {
					t.Fatalf("%d entries in flight after the undo", n)
				}
			}
		})
	}
}

// beforeHook runs fn once before the first command or pipeline that match
// selects is sent.
type beforeHook struct {
	match func([]redis.Cmder) bool
	fn    func()
	once  sync.Once
}

func (h *beforeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *beforeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.match([]redis.Cmder{cmd}) {
			h.once.Do(h.fn)
		}
		return next(ctx, cmd)
	}
}
func (h *beforeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.match(cmds) {
			h.once.Do(h.fn)
		}
		return next(ctx, cmds)
	}
}

// popFailFixture is a queue of n messages on a private server, a store
// whose client times out after 200 ms with a pause hook, and a plain client.
type popFailFixture struct {
	s     *Store
	c     *redis.Client
	plain *redis.Client
	hook  *pauseHook
	addr  string
	queue string
	tids  []string
}

func newPopFailFixture(t *testing.T, stepwise bool, n int) *popFailFixture {
	t.Helper()
	r := testenv.StartRedis(t, testenv.OwnRedis())
	plain := r.Client()
	t.Cleanup(func() { plain.Close() })
	c := redis.NewClient(&redis.Options{Addr: r.Addr, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	f := &popFailFixture{c: c, plain: plain, addr: r.Addr, queue: "UNSEC:undo",
		hook: &pauseHook{pid: r.Pid(), match: func(cmds []redis.Cmder) bool {
			return runsScript(popFusedScript)(cmds) || runsScript(popScript)(cmds)
		}}}
	c.AddHook(f.hook)
	ctx := context.Background()
	f.s = New(c, Options{})
	f.s.stepwise = stepwise
	if err := f.s.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		tx := NewTx('H', "p", "undo")
		f.tids = append(f.tids, tx.ID)
		if err := f.s.Provision(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// expect checks the queue's entries (head first) and the state of every
// message: want maps a tid to its state; those not in the queue list are
// checked for their state only.
func (f *popFailFixture) expect(t *testing.T, queued []string, states map[string]string) {
	t.Helper()
	ctx := context.Background()
	got, err := f.plain.LRange(ctx, KeysOfQueue(f.queue).High, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(queued, got) {
		t.Fatalf("queue = %v, want %v", got, queued)
	}
	for tid, want := range states {
		st, err := f.s.States(ctx, tid)
		if err != nil {
			t.Fatal(err)
		}
		if st[f.queue] != want {
			t.Fatalf("state of %s = %q, want %q", tid, st[f.queue], want)
		}
	}
}

// TestFailedPopUndoneAfterOtherNodePopped: node A's pop script runs but its
// reply is lost; before A's undo reaches Redis, node B pops the same queue
// (its pop writes the queue's lastpop value too). A's undo still finds
// its record (B's pop kept it) and puts A's entries back at the head, in
// order, Pending; B keeps what it got. Without B keeping A's record, A's
// entries would be lost, marked Delivered.
func TestFailedPopUndoneAfterOtherNodePopped(t *testing.T) {
	for _, stepwise := range []bool{false, true} {
		t.Run(fmt.Sprintf("stepwise=%v", stepwise), func(t *testing.T) {
			f := newPopFailFixture(t, stepwise, 6)
			ctx := context.Background()
			b := redis.NewClient(&redis.Options{Addr: f.addr})
			t.Cleanup(func() { b.Close() })
			sb := New(b, Options{})
			sb.stepwise = stepwise
			var bgot []Message
			var berr error
			f.c.AddHook(&beforeHook{match: runsScript(popUndoScript), fn: func() {
				// A's pop has run once the server went on: wait for it.
				deadline := time.Now().Add(10 * time.Second)
				for f.plain.LLen(ctx, KeysOfQueue(f.queue).High).Val() != 3 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				bgot, berr = sb.Pop(ctx, f.queue, 2, PopOptions{})
			}})
			f.hook.armed.Store(true)
			res := f.s.PopMany(ctx, []PopRequest{{Queue: f.queue, Max: 3}})[0]
			if !f.hook.fired.Load() || res.Err == nil {
				t.Fatalf("pop with Redis paused: fired %v, err %v", f.hook.fired.Load(), res.Err)
			}
			if berr != nil || len(bgot) != 2 || bgot[0].TID != f.tids[3] || bgot[1].TID != f.tids[4] {
				t.Fatalf("B's pop: %+v, %v; want messages 4 and 5", bgot, berr)
			}
			f.expect(t, []string{f.tids[0], f.tids[1], f.tids[2], f.tids[5]}, map[string]string{
				f.tids[0]: domain.StatePending, f.tids[1]: domain.StatePending, f.tids[2]: domain.StatePending,
				f.tids[3]: domain.StateDelivered, f.tids[4]: domain.StateDelivered, f.tids[5]: domain.StatePending,
			})
		})
	}
}

// TestPopUndoneBeforeItRuns: the undo of a pop call can reach Redis before
// the call itself (its connection was slower, or the call was stuck in a
// buffer): the undo finds no record and leaves a tombstone, and the call,
// when it runs, puts back what it took and marks nothing; the queue is as
// before. Another call of the same owner in between does not drop the
// tombstone.
func TestPopUndoneBeforeItRuns(t *testing.T) {
	for _, stepwise := range []bool{false, true} {
		for _, reliable := range []bool{false, true} {
			t.Run(fmt.Sprintf("stepwise=%v/reliable=%v", stepwise, reliable), func(t *testing.T) {
				f := newPopFailFixture(t, stepwise, 3)
				ctx := context.Background()
				opts := PopOptions{Reliable: reliable, AckTimeout: time.Minute}
				// The undo of call "early" arrives first ...
				pc := f.s.newPopCall(PopRequest{Queue: f.queue, Opts: opts}, !stepwise, time.Now().UnixMilli())
				pc.nonce = "early"
				f.s.undoPops(ctx, []popCall{pc})
				if f.s.owners.npending.Load() != 0 {
					t.Fatal("the undo did not go through")
				}
				// ... another call of the same owner comes and goes (it
				// finds the queue empty: a TouchLastPop) ...
				if err := f.s.TouchLastPop(ctx, f.queue); err != nil {
					t.Fatal(err)
				}
				// ... then the call "early" itself.
				f.s.owners.nonce = func() string { return "early" }
				res := f.s.PopMany(ctx, []PopRequest{{Queue: f.queue, Max: 10, Opts: opts}})[0]
				if res.Err != nil || len(res.Messages) != 0 {
					t.Fatalf("the cancelled call: %d messages, %v", len(res.Messages), res.Err)
				}
				pending := map[string]string{}
				for _, tid := range f.tids {
					pending[tid] = domain.StatePending
				}
				f.expect(t, f.tids, pending)
				if n := f.plain.ZCard(ctx, KeysOfQueue(f.queue).Inflight).Val(); n != 0 {
					t.Fatalf("%d entries in flight", n)
				}
				f.s.owners.nonce = newPopOwners().nonce
				got, err := f.s.Pop(ctx, f.queue, 10, opts)
				if err != nil || len(got) != 3 {
					t.Fatalf("pop after: %d messages, %v", len(got), err)
				}
			})
		}
	}
}

// TestFailedPopUndoPending: when the undo cannot reach Redis either (the
// server still paused), the queue is not popped again by that store until
// the undo went through, which UndoPending does once Redis is back.
func TestFailedPopUndoPending(t *testing.T) {
	f := newPopFailFixture(t, false, 3)
	ctx := context.Background()
	// Keep the server paused through the pop and its undo attempts.
	f.hook.match = func(cmds []redis.Cmder) bool { return runsScript(popFusedScript)(cmds) }
	f.hook.armed.Store(false)
	f.hook.fired.Store(true)
	if err := syscall.Kill(f.hook.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(f.hook.pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	res := f.s.PopMany(ctx, []PopRequest{{Queue: f.queue, Max: 10}})[0]
	if res.Err == nil {
		t.Fatal("pop with Redis paused: no error")
	}
	if f.s.owners.npending.Load() != 1 {
		t.Fatalf("%d undos pending, want 1", f.s.owners.npending.Load())
	}
	resume()
	// Redis is back, but the undo has not run yet: the queue is not popped.
	s2 := f.s
	blocked := s2.undosPending([]PopRequest{{Queue: f.queue}})
	if blocked == nil || !blocked[0] {
		t.Fatal("the queue is not held back while its undo is pending")
	}
	s2.UndoPending(ctx)
	if f.s.owners.npending.Load() != 0 {
		t.Fatal("the undo is still pending with Redis back")
	}
	pending := map[string]string{}
	for _, tid := range f.tids {
		pending[tid] = domain.StatePending
	}
	f.expect(t, f.tids, pending)
	got, err := f.s.Pop(ctx, f.queue, 10, PopOptions{})
	if err != nil || len(got) != 3 {
		t.Fatalf("pop after: %d messages, %v", len(got), err)
	}
}

// failHook fails, without sending them, the pipelines that match selects,
// with err on every command, as go-redis does when it gets no connection
// (a saturated pool).
type failHook struct {
	match func([]redis.Cmder) bool
	err   error
}

func (h *failHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *failHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *failHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.match(cmds) {
			return next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(h.err)
		}
		return h.err
	}
}

// TestPopNotSentNotUndone: a pop that never left the client (the pool
// saturated: no connection within PoolTimeout) fails without an undo: no
// extra round trip under overload, and the queue is untouched.
func TestPopNotSentNotUndone(t *testing.T) {
	for _, stepwise := range []bool{false, true} {
		t.Run(fmt.Sprintf("stepwise=%v", stepwise), func(t *testing.T) {
			r := testenv.StartRedis(t, testenv.OwnRedis())
			plain := r.Client()
			t.Cleanup(func() { plain.Close() })
			c := redis.NewClient(&redis.Options{Addr: r.Addr})
			t.Cleanup(func() { c.Close() })
			ctx := context.Background()
			s := New(c, Options{})
			s.stepwise = stepwise
			if err := s.LoadScripts(ctx); err != nil {
				t.Fatal(err)
			}
			const q = "UNSEC:notsent"
			tx := NewTx('H', "p", "notsent")
			if err := s.Provision(ctx, tx); err != nil {
				t.Fatal(err)
			}
			var undos atomic.Int64
			c.AddHook(&beforeHook{match: runsScript(popUndoScript), fn: func() { undos.Add(1) }})
			c.AddHook(&failHook{match: func(cmds []redis.Cmder) bool {
				return runsScript(popFusedScript)(cmds) || runsScript(popScript)(cmds)
			}, err: redis.ErrPoolTimeout})
			res := s.PopMany(ctx, []PopRequest{{Queue: q, Max: 10}})[0]
			if !errors.Is(res.Err, redis.ErrPoolTimeout) {
				t.Fatalf("pop with the pool saturated: %v, want a pool timeout", res.Err)
			}
			if n := undos.Load(); n != 0 {
				t.Fatalf("%d undo round trips for a call that was never sent", n)
			}
			if n := s.owners.npending.Load(); n != 0 {
				t.Fatalf("%d undos pending for a call that was never sent", n)
			}
			if v, err := plain.Get(ctx, KeysOfQueue(q).LastPop).Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("lastpop = %q, %v: an undo ran for a call that was never sent", v, err)
			}
			if n := plain.LLen(ctx, KeysOfQueue(q).High).Val(); n != 1 {
				t.Fatalf("queue length %d, want 1", n)
			}
		})
	}
}
