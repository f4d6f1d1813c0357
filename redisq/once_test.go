package redisq

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/testenv"
)

// onceTx is a one-queue transaction to ns+queue.
func onceTx(ns, queue string) *Transaction {
	tx := NewTx('H', "p", queue)
	tx.NS = ns
	tx.Meta["expirationDate"] = strconv.FormatInt(tx.ExpiresAt, 10)
	return tx
}

// queueEntries is the queue's list of tids in Redis.
func queueEntries(t *testing.T, c *redis.Client, full string) []string {
	t.Helper()
	ids, err := c.LRange(context.Background(), KeysOfQueue(full).High, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// onceClaim runs the claim script for o's key as candidate tid at now.
func onceClaim(t *testing.T, c *redis.Client, o Once, tid string, now time.Time) []string {
	t.Helper()
	res, err := onceClaimScript.Run(context.Background(), c, []string{KeyOfIdempotency(o.NS, o.Key)}, o.Hash, tid, now.UnixMilli(),
		onceLease.Milliseconds(), o.Window.Milliseconds()).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// onceStore is a store on a test Redis, a client of that Redis, and the
// Once of key "k" (body hash "h") in namespace UNSEC: with the given window.
func onceStore(t *testing.T, window time.Duration) (*Store, *redis.Client, Once) {
	r := testenv.StartRedis(t)
	c := r.Client()
	t.Cleanup(func() { c.Close() })
	return New(c, Options{}), c, Once{NS: "UNSEC:", Key: "k", Hash: "h", Window: window}
}

// TestProvisionOnceConcurrent: many concurrent repeats of one key through
// two clients (two "nodes") provision once and all answer the same tid.
func TestProvisionOnceConcurrent(t *testing.T) {
	s1, c, o := onceStore(t, time.Minute)
	c2 := redis.NewClient(&redis.Options{Addr: c.Options().Addr})
	t.Cleanup(func() { c2.Close() })
	s2 := New(c2, Options{})
	ctx := context.Background()

	const n = 20
	tids := make([]string, n)
	repeats := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		wg.Go(func() { tids[i], repeats[i], errs[i] = s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q1")) })
	}
	wg.Wait()
	firsts := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if tids[i] != tids[0] {
			t.Errorf("call %d answered %s, call 0 %s", i, tids[i], tids[0])
		}
		if !repeats[i] {
			firsts++
		}
	}
	if firsts != 1 {
		t.Errorf("%d calls provisioned, want 1", firsts)
	}
	if got := queueEntries(t, c, "UNSEC:q1"); len(got) != 1 || got[0] != tids[0] {
		t.Errorf("queue holds %v, want [%s]", got, tids[0])
	}

	// Another body: conflict, nothing provisioned.
	_, _, err := s2.ProvisionOnce(ctx, Once{NS: o.NS, Key: o.Key, Hash: "h2", Window: time.Minute}, onceTx("UNSEC:", "q1"))
	if !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("other body: err %v, want ErrIdempotencyConflict", err)
	}
	// The same key in another namespace is another key.
	tid, repeat, err := s1.ProvisionOnce(ctx, Once{NS: "acme:UNSEC:", Key: o.Key, Hash: "h2", Window: time.Minute}, onceTx("acme:UNSEC:", "q1"))
	if err != nil || repeat || tid == tids[0] {
		t.Errorf("other namespace: %s %v %v, want a new provisioning", tid, repeat, err)
	}
	if got := queueEntries(t, c, "UNSEC:q1"); len(got) != 1 {
		t.Errorf("queue holds %v after the conflict, want one entry", got)
	}
}

// TestProvisionOnceWaitsForPending: a repeat arriving while the first call
// still provisions waits and answers the first call's tid.
func TestProvisionOnceWaitsForPending(t *testing.T) {
	s, c, o := onceStore(t, time.Minute)
	ctx := context.Background()
	key := KeyOfIdempotency(o.NS, o.Key)
	first := onceTx("UNSEC:", "q")
	// The first call has claimed the key and is provisioning.
	if res := onceClaim(t, c, o, first.ID, time.Now()); res[0] != "new" {
		t.Fatalf("claim: %v", res)
	}
	type result struct {
		tid    string
		repeat bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		tid, repeat, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
		done <- result{tid, repeat, err}
	}()
	// The repeat must still be waiting: the first call has not finished.
	select {
	case r := <-done:
		t.Fatalf("repeat answered %+v before the first call finished", r)
	case <-time.After(100 * time.Millisecond):
	}
	if err := s.Provision(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := onceSettleScript.Run(ctx, c, []string{key}, first.ID, "done").Err(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !r.repeat || r.tid != first.ID {
		t.Errorf("repeat: %+v, want the first tid %s as a repeat", r, first.ID)
	}
	if got := queueEntries(t, c, "UNSEC:q"); len(got) != 1 {
		t.Errorf("queue holds %v, want one entry", got)
	}
}

// TestProvisionOnceFailureReleases: a failed provisioning drops the claim,
// so a repeat provisions.
func TestProvisionOnceFailureReleases(t *testing.T) {
	s, c, o := onceStore(t, time.Minute)
	ctx := context.Background()
	boom := errors.New("boom")
	_, _, err := s.once(ctx, o, onceTx("UNSEC:", "q"), func(context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	tid, repeat, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
	if err != nil || repeat {
		t.Fatalf("repeat after a failure: %s %v %v, want a provisioning", tid, repeat, err)
	}
	if got := queueEntries(t, c, "UNSEC:q"); len(got) != 1 || got[0] != tid {
		t.Errorf("queue holds %v, want [%s]", got, tid)
	}
}

// TestProvisionOnceTakeover: a claimant that died between its claim and the
// end of its provisioning (here: after pushing, before recording it) stops
// renewing its lease; the next repeat after the lease takes over, turns the
// abandoned transaction into a ghost and provisions once more, so the queue
// delivers the message once.
func TestProvisionOnceTakeover(t *testing.T) {
	s, c, o := onceStore(t, time.Minute)
	ctx := context.Background()
	dead := onceTx("UNSEC:", "q")
	onceClaim(t, c, o, dead.ID, time.Now())
	if err := s.Provision(ctx, dead); err != nil {
		t.Fatal(err)
	}
	// Within the lease a repeat waits (here: until its context ends).
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, _, err := s.ProvisionOnce(wctx, o, onceTx("UNSEC:", "q"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("repeat within the lease: %v, want it to wait", err)
	}
	// After the lease: take over.
	s.now = func() time.Time { return time.Now().Add(onceLease + time.Second) }
	tid, repeat, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
	if err != nil || repeat || tid == dead.ID {
		t.Fatalf("repeat after the lease: %s %v %v, want a new provisioning", tid, repeat, err)
	}
	msgs, err := s.Pop(ctx, "UNSEC:q", 10, PopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].TID != tid {
		t.Errorf("popped %+v, want only %s", msgs, tid)
	}
	// And later repeats answer the new tid.
	again, repeat, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
	if err != nil || !repeat || again != tid {
		t.Errorf("repeat after the takeover: %s %v %v, want %s", again, repeat, err, tid)
	}
}

// TestProvisionOnceWindow: after the window the key is forgotten and the
// same request provisions again.
func TestProvisionOnceWindow(t *testing.T) {
	s, c, o := onceStore(t, time.Second)
	ctx := context.Background()
	first, _, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, KeyOfIdempotency(o.NS, o.Key)).Result()
	if err != nil || ttl <= 0 || ttl > time.Second {
		t.Errorf("record TTL %v (%v), want within the 1s window", ttl, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tid, repeat, err := s.ProvisionOnce(ctx, o, onceTx("UNSEC:", "q"))
		if err != nil {
			t.Fatal(err)
		}
		if !repeat {
			if tid == first {
				t.Fatalf("a new provisioning answered the old tid")
			}
			break
		}
		if tid != first {
			t.Fatalf("repeat answered %s, want %s", tid, first)
		}
		if time.Now().After(deadline) {
			t.Fatal("the key was still remembered 10s after a 1s window")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := queueEntries(t, c, "UNSEC:q"); len(got) != 2 {
		t.Errorf("queue holds %v, want two entries", got)
	}
}

// TestOnceClaimRunTwice: the claim script run again with the same
// candidate tid (go-redis resends a script whose reply was lost) answers
// as the first run did, instead of "pending" on the caller's own claim
// (which made it wait out the lease and take over from itself).
func TestOnceClaimRunTwice(t *testing.T) {
	_, c, o := onceStore(t, time.Minute)
	claim := func(tid string, now time.Time) []string {
		t.Helper()
		return onceClaim(t, c, o, tid, now)
	}
	now := time.Now()
	for range 2 {
		if res := claim("t1", now); len(res) != 2 || res[0] != "new" || res[1] != "t1" {
			t.Fatalf("claim by t1: %v, want [new t1]", res)
		}
	}
	if res := claim("t2", now); res[0] != "pending" || res[1] != "t1" {
		t.Fatalf("another call while t1 holds the lease: %v, want [pending t1]", res)
	}
	later := now.Add(onceLease + time.Second) // t1's lease ran out
	for range 2 {
		if res := claim("t3", later); len(res) != 3 || res[0] != "takeover" || res[1] != "t3" || res[2] != "t1" {
			t.Fatalf("takeover by t3: %v, want [takeover t3 t1]", res)
		}
	}
}
