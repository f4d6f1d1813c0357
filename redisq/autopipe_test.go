package redisq_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

// apStore is a Store with autopipelining on rdb.
func apStore(t *testing.T, rdb redis.UniversalClient) *redisq.Store {
	t.Helper()
	s := redisq.New(rdb, redisq.Options{AutoPipeline: true})
	if !s.AutoPipelined() {
		t.Fatal("store is not autopipelined")
	}
	if err := s.LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// roundTrip is one caller's dependent sequence on its own two queues:
// provision message j to both, pop both in one PopMany (reliable, so the
// two pop scripts and their state changes are in flight together), ack
// both, and read the states back. Each step needs the previous one to have
// happened, in order: a reordered or lost command shows as a wrong answer.
func roundTrip(ctx context.Context, s *redisq.Store, caller, j int) error {
	qa, qb := fmt.Sprintf("ap%da", caller), fmt.Sprintf("ap%db", caller)
	payload := fmt.Sprintf("c%d-%d", caller, j)
	tx := redisq.NewTx('H', payload, qa, qb)
	tid := tx.ID
	if err := s.Provision(ctx, tx); err != nil {
		return fmt.Errorf("provision %s: %w", payload, err)
	}
	ro := redisq.PopOptions{Reliable: true, AckTimeout: time.Minute}
	res := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:" + qa, Max: 2, Opts: ro}, {Queue: "UNSEC:" + qb, Max: 2, Opts: ro}})
	for i, r := range res {
		if r.Err != nil {
			return fmt.Errorf("pop %d of %s: %w", i, payload, r.Err)
		}
		if len(r.Messages) != 1 || r.Messages[0].Payload != payload || r.Messages[0].TID != tid {
			return fmt.Errorf("pop %d after provisioning %s: got %+v", i, payload, r.Messages)
		}
	}
	for _, q := range []string{qa, qb} {
		acks, err := s.Ack(ctx, "UNSEC:"+q, []string{tid})
		if err != nil {
			return fmt.Errorf("ack %s on %s: %w", payload, q, err)
		}
		if len(acks) != 1 || !acks[0].OK {
			return fmt.Errorf("ack %s on %s: %+v", payload, q, acks)
		}
	}
	st, err := s.States(ctx, tid)
	if err != nil {
		return fmt.Errorf("states of %s: %w", payload, err)
	}
	if st["UNSEC:"+qa] != domain.StateDelivered || st["UNSEC:"+qb] != domain.StateDelivered {
		return fmt.Errorf("states of %s after ack: %v", payload, st)
	}
	return nil
}

// runCallers runs callers concurrent callers, each doing rounds round
// trips; between(c, k) is called by caller c before its round k, so a test
// can act mid-run. A caller goes on after an error (so a barrier in
// between still fills). It returns the first ten errors.
func runCallers(s *redisq.Store, callers, rounds int, between func(c, k int)) []error {
	ctx := context.Background()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for j := range rounds {
				if between != nil {
					between(c, j)
				}
				if err := roundTrip(ctx, s, c, j); err != nil {
					mu.Lock()
					if len(errs) < 10 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// TestAutoPipelineKeepsCallerOrder: 16 callers share the autopipeliner;
// every caller's dependent provision → pop → ack → state sequence sees its
// own earlier commands' effects, and the commands were really coalesced
// (pipelines of more than one caller's commands went out).
func TestAutoPipelineKeepsCallerOrder(t *testing.T) {
	c := redisClient(t)
	w := newBatchWatch()
	c.AddHook(w)
	s := apStore(t, c)
	for _, err := range runCallers(s, 16, 40, nil) {
		t.Error(err)
	}
	// One round trip sends at most 7 commands of one caller; more in one
	// pipeline means several callers shared it.
	if got := w.maxBatch.Load(); got <= 7 {
		t.Errorf("largest pipeline held %d commands: concurrent callers were not coalesced", got)
	}
}

// TestAutoPipelinePerCommandErrors: a caller whose commands fail (its queue
// key holds a string: WRONGTYPE) gets its own error, and callers whose
// commands went out in the same pipelines are not affected.
func TestAutoPipelinePerCommandErrors(t *testing.T) {
	c := redisClient(t)
	w := newBatchWatch()
	c.AddHook(w)
	s := apStore(t, c)
	ctx := context.Background()
	bad := redisq.KeysOfQueue("UNSEC:broken")
	if err := c.Set(ctx, bad.High, "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var badErrs, badCalls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				badCalls.Add(1)
				_, err := s.Pop(ctx, "UNSEC:broken", 1, redisq.PopOptions{})
				if err != nil && strings.Contains(err.Error(), "WRONGTYPE") {
					badErrs.Add(1)
				} else {
					t.Errorf("pop of a queue whose key is a string: err = %v, want WRONGTYPE", err)
				}
			}
		})
	}
	errs := runCallers(s, 12, 30, nil)
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if badErrs.Load() == 0 || badErrs.Load() != badCalls.Load() {
		t.Errorf("%d of %d pops of the broken queue failed with WRONGTYPE, want all (and some)", badErrs.Load(), badCalls.Load())
	}
	if w.maxBatch.Load() <= 7 {
		t.Errorf("largest pipeline held %d commands: the failing commands did not share pipelines", w.maxBatch.Load())
	}
}

// TestAutoPipelineScriptFlush: SCRIPT FLUSH on the server while callers run
// (twice): the EVALSHA calls in flight get NOSCRIPT, are sent again with the
// script body, and no caller sees an error or a wrong answer.
func TestAutoPipelineScriptFlush(t *testing.T) {
	r := testenv.StartRedis(t, testenv.OwnRedis())
	c := r.Client()
	t.Cleanup(func() { c.Close() })
	w := newBatchWatch()
	c.AddHook(w)
	s := apStore(t, c)
	admin := r.Client()
	t.Cleanup(func() { admin.Close() })
	flush := func(c, k int) {
		if c == 0 && (k == 10 || k == 25) {
			if err := admin.ScriptFlush(context.Background()).Err(); err != nil {
				t.Errorf("script flush: %v", err)
			}
		}
	}
	for _, err := range runCallers(s, 8, 40, flush) {
		t.Error(err)
	}
	if w.noScript.Load() == 0 {
		t.Error("no command met NOSCRIPT: the flush did not hit the run")
	}
}

// TestAutoPipelineClusterMoved: on a Redis Cluster every caller's queues
// are moved to another primary mid-run, while the callers wait at a
// barrier; the client under test is not told (its slot map is stale), so
// the autopipelined commands for those queues come back MOVED, go-redis
// follows the redirect, and every caller carries on in order.
func TestAutoPipelineClusterMoved(t *testing.T) {
	cl := testenv.StartCluster(t, testenv.WithClusterShape(3, 0))
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(cl.Seeds(), ",")})
	t.Cleanup(func() { cc.Close() })
	w := newBatchWatch()
	// Node-level hooks see each node's pipeline as sent, MOVED replies
	// included, before the cluster client follows them.
	cc.OnNewNode(func(n *redis.Client) { n.AddHook(w) })
	s := apStore(t, cc)
	const callers, rounds, at = 6, 30, 15
	var arrived sync.WaitGroup
	arrived.Add(callers)
	release := make(chan struct{})
	barrier := func(c, k int) {
		if k != at {
			return
		}
		arrived.Done()
		if c != 0 {
			<-release
			return
		}
		arrived.Wait()
		defer close(release)
		for i := range callers {
			for _, q := range []string{fmt.Sprintf("ap%da", i), fmt.Sprintf("ap%db", i)} {
				if err := moveSlot(cl, redisq.KeysOfQueue("UNSEC:"+q).High); err != nil {
					t.Errorf("move slot of %s: %v", q, err)
				}
			}
		}
	}
	for _, err := range runCallers(s, callers, rounds, barrier) {
		t.Error(err)
	}
	if w.moved.Load() == 0 {
		t.Error("no command met MOVED: the slot moves did not hit the run")
	}
}

// moveSlot moves the slot of key, with its keys, from the primary that
// holds it to another primary, the way redis-cli --cluster reshard does
// (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE on every primary).
func moveSlot(cl *testenv.Cluster, key string) error {
	ctx := context.Background()
	// Every node must agree on the epochs first (see EpochsAgreed): the
	// moves before this one each gave their destination a new epoch.
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := cl.EpochsAgreed(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("before the move: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	view, err := cl.View(ctx)
	if err != nil {
		return err
	}
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(cl.Seeds(), ",")})
	defer admin.Close()
	owner, err := admin.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	slot, err := owner.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return err
	}
	var src, dst testenv.ClusterNode
	for _, n := range view {
		switch {
		case !n.Primary() || n.Failed():
		case n.Addr == owner.Options().Addr:
			src = n
		case dst.ID == "":
			dst = n
		}
	}
	if src.ID == "" || dst.ID == "" {
		return fmt.Errorf("slot %d: no source or destination primary in %+v", slot, view)
	}
	sc := redis.NewClient(&redis.Options{Addr: src.Addr})
	defer sc.Close()
	dc := redis.NewClient(&redis.Options{Addr: dst.Addr})
	defer dc.Close()
	if err := dc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.ID).Err(); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := sc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.ID).Err(); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	host, port, _ := net.SplitHostPort(dst.Addr)
	for {
		keys, err := sc.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := sc.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	// The destination first, then the source, then the others, as redis-cli
	// does; then wait until every primary redirects the key to the
	// destination (until then two nodes may send each other's MOVED).
	order := []testenv.ClusterNode{dst, src}
	for _, n := range view {
		if n.Primary() && !n.Failed() && n.ID != src.ID && n.ID != dst.ID {
			order = append(order, n)
		}
	}
	for _, n := range order {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		err := nc.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dst.ID).Err()
		nc.Close()
		if err != nil {
			return fmt.Errorf("setslot node on %s: %w", n.Addr, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range order {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		for {
			err := nc.Exists(ctx, key).Err()
			ok := (n.ID == dst.ID && err == nil) || (err != nil && strings.HasPrefix(err.Error(), "MOVED") && strings.HasSuffix(err.Error(), " "+dst.Addr))
			if ok {
				break
			}
			if time.Now().After(deadline) {
				nc.Close()
				return fmt.Errorf("%s still answers %v for slot %d", n.Addr, err, slot)
			}
			time.Sleep(10 * time.Millisecond)
		}
		nc.Close()
	}
	return nil
}
