package redisq_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/redisq"
)

const mib = 1 << 20

func TestPeekBounded(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, c *redis.Client) {
		ctx := context.Background()
		exp := time.Now().Add(time.Hour).Unix()
		big := func(ch string) string { return strings.Repeat(ch, mib) }
		var want []string
		for i := range 5 {
			p := big(string(rune('a' + i)))
			want = append(want, p)
			provision(t, s, "UNSEC:", 'L', p, exp, "pb")
		}
		ghost := provision(t, s, "UNSEC:", 'H', "ghost", exp, "pb")
		c.Del(ctx, redisq.KeysOfTrans(ghost).Meta)
		provision(t, s, "UNSEC:", 'H', "small", exp, "pb")
		cases := []struct {
			name     string
			max      int
			maxBytes int64
			want     []string
		}{
			{"count bound", 2, 100 * mib, append([]string{"small"}, want[:1]...)},
			{"byte bound", 100, 3*mib + 4, append([]string{"small"}, want[:2]...)},
			{"byte bound exact", 100, 3*mib + 5, append([]string{"small"}, want[:3]...)},
			{"first always", 100, 1, []string{"small"}},
			{"all", 100, 100 * mib, append([]string{"small"}, want...)},
		}
		for _, tc := range cases {
			got, err := s.PeekBounded(ctx, "UNSEC:pb", tc.max, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, payloads(got)); d != "" {
				t.Errorf("%s: %d messages, want %d", tc.name, len(got), len(tc.want))
			}
		}
		// Only a big one at the head: returned alone even over the bound.
		got, _ := s.Pop(ctx, "UNSEC:pb", 1, redisq.PopOptions{})
		if len(got) != 1 || got[0].Payload != "small" {
			t.Fatalf("pop: %v", payloads(got))
		}
		got, err := s.PeekBounded(ctx, "UNSEC:pb", 100, 10)
		if err != nil || len(got) != 1 || got[0].Payload != want[0] {
			t.Fatalf("peek over the bound: %d messages, %v", len(got), err)
		}
	})
}

// TestPopManyByteBudget: one PopMany reads at most its byte budget of
// payloads (whole messages, at least one); what does not fit goes back
// untouched, in order, and is reported as Limited so the caller pops
// again. The Cluster's path shares the budget one message per queue in
// turn; the fused path gives each queue an equal share.
func TestPopManyByteBudget(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, r *redisq.Store, c *redis.Client) {
		s := redisq.NewLike(r, c, redisq.Options{BatchBytes: 3*mib + 10, ExplicitWake: r.ExplicitWake()})
		ctx := context.Background()
		exp := time.Now().Add(time.Hour).Unix()
		big := strings.Repeat("x", mib)
		var a, bq []string
		for range 3 {
			a = append(a, provision(t, s, "UNSEC:", 'H', big, exp, "a"))
			bq = append(bq, provision(t, s, "UNSEC:", 'H', big, exp, "b"))
		}
		small := provision(t, s, "UNSEC:", 'L', "small", exp, "c")
		res := s.PopMany(ctx, []redisq.PopRequest{
			{Queue: "UNSEC:a", Max: 10},
			{Queue: "UNSEC:b", Max: 10},
			{Queue: "UNSEC:c", Max: 10},
		})
		// In turn: a1, b1, small, then a2 fits (3 MiB + 5 bytes), b2
		// does not. In shares of 1 MiB + 3 bytes: a1, b1, small.
		want := [][]string{a[:2], bq[:1], {small}}
		if !redisq.IsStepwise(s) {
			want[0] = a[:1]
		}
		for i, r := range res {
			var got []string
			for _, m := range r.Messages {
				got = append(got, m.TID)
			}
			if r.Err != nil || !cmp.Equal(want[i], got) {
				t.Fatalf("queue %d: %v err=%v, want %v", i, got, r.Err, want[i])
			}
		}
		if !res[0].Limited || !res[1].Limited || res[2].Limited {
			t.Fatalf("limited = %v %v %v", res[0].Limited, res[1].Limited, res[2].Limited)
		}
		for q, rest := range map[string][]string{"UNSEC:a": a[len(want[0]):], "UNSEC:b": bq[1:]} {
			got, err := s.Peek(ctx, q, 10)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range got {
				ids = append(ids, m.TID)
				st, _ := s.States(ctx, m.TID)
				if st[q] != domain.StatePending {
					t.Fatalf("%s left in %s as %q", m.TID, q, st[q])
				}
			}
			if !cmp.Equal(rest, ids) {
				t.Fatalf("%s after the pop: %v, want %v", q, ids, rest)
			}
		}
		// A budget smaller than one message still delivers one.
		tiny := redisq.NewLike(r, c, redisq.Options{BatchBytes: 1, ExplicitWake: r.ExplicitWake()})
		one := tiny.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:b", Max: 10}})[0]
		if len(one.Messages) != 1 || one.Messages[0].TID != bq[1] || one.Messages[0].Payload != big || !one.Limited {
			t.Fatalf("tiny budget: %d messages, limited %v", len(one.Messages), one.Limited)
		}
	})
}

// TestPopManyBigHead: on the fused path a queue whose first message alone
// is over its share of the budget gets its entries back and is popped the
// Cluster's way, which delivers it: a batch always delivers at least one
// message of such a queue, and what it skips stays queued, in order,
// Pending.
func TestPopManyBigHead(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, r *redisq.Store, c *redis.Client) {
		s := redisq.NewLike(r, c, redisq.Options{BatchBytes: 2 * mib, ExplicitWake: r.ExplicitWake()})
		ctx := context.Background()
		exp := time.Now().Add(time.Hour).Unix()
		big := strings.Repeat("x", mib+1) // over the fused share of 1 MiB
		ghost := provision(t, s, "UNSEC:", 'H', "gone", exp, "a")
		c.Del(ctx, redisq.KeysOfTrans(ghost).Meta)
		var a []string
		for range 3 {
			a = append(a, provision(t, s, "UNSEC:", 'H', big, exp, "a"))
		}
		small := provision(t, s, "UNSEC:", 'L', "small", exp, "c")
		res := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:a", Max: 10}, {Queue: "UNSEC:c", Max: 10}})
		if res[0].Err != nil || len(res[0].Messages) != 1 || res[0].Messages[0].TID != a[0] || res[0].Messages[0].Payload != big || !res[0].Limited {
			t.Fatalf("queue a: %d messages, limited %v, err %v", len(res[0].Messages), res[0].Limited, res[0].Err)
		}
		if res[1].Err != nil || len(res[1].Messages) != 1 || res[1].Messages[0].TID != small {
			t.Fatalf("queue c: %+v", res[1])
		}
		if sk := res[0].Skipped; len(sk) != 1 || sk[0].TID != ghost {
			t.Fatalf("skipped %v, want the ghost %s", sk, ghost)
		}
		if st, _ := s.States(ctx, a[0]); st["UNSEC:a"] != domain.StateDelivered {
			t.Fatalf("state of the delivered one: %v", st)
		}
		got, err := s.Peek(ctx, "UNSEC:a", 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range got {
			ids = append(ids, m.TID)
			if st, _ := s.States(ctx, m.TID); st["UNSEC:a"] != domain.StatePending {
				t.Fatalf("%s left as %v", m.TID, st)
			}
		}
		if !cmp.Equal(ids, a[1:]) {
			t.Fatalf("queue a after the pop: %v, want %v", ids, a[1:])
		}
		if ttl := c.PTTL(ctx, redisq.KeysOfQueue("UNSEC:a").High).Val(); ttl < time.Hour {
			t.Fatalf("queue a's list TTL after the entries came back: %v", ttl)
		}
	})
}

// TestPopOneQueueDeliversItsBigHead: a pop of one queue keeps its first
// live entry whatever its size (the fused script reads it at once, without
// a size check): behind a ghost, a payload over the whole batch budget is
// delivered alone, the ghost is skipped, and the small entry after it stays
// queued, Pending.
func TestPopOneQueueDeliversItsBigHead(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, r *redisq.Store, c *redis.Client) {
		s := redisq.NewLike(r, c, redisq.Options{BatchBytes: mib, ExplicitWake: r.ExplicitWake()})
		ctx := context.Background()
		exp := time.Now().Add(time.Hour).Unix()
		big := strings.Repeat("x", mib+1)
		ghost := provision(t, s, "UNSEC:", 'H', "gone", exp, "one")
		c.Del(ctx, redisq.KeysOfTrans(ghost).Meta)
		head := provision(t, s, "UNSEC:", 'H', big, exp, "one")
		small := provision(t, s, "UNSEC:", 'H', "small", exp, "one")
		res := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:one", Max: 10}})[0]
		if res.Err != nil || len(res.Messages) != 1 || res.Messages[0].TID != head || res.Messages[0].Payload != big || !res.Limited {
			t.Fatalf("pop: %d messages, limited %v, err %v", len(res.Messages), res.Limited, res.Err)
		}
		if sk := res.Skipped; len(sk) != 1 || sk[0].TID != ghost {
			t.Fatalf("skipped %v, want the ghost %s", sk, ghost)
		}
		if st, _ := s.States(ctx, head); st["UNSEC:one"] != domain.StateDelivered {
			t.Fatalf("state of the big head: %v", st)
		}
		left, err := s.Peek(ctx, "UNSEC:one", 10)
		if err != nil || len(left) != 1 || left[0].TID != small || left[0].Payload != "small" {
			t.Fatalf("left in the queue: %+v, %v", left, err)
		}
		if st, _ := s.States(ctx, small); st["UNSEC:one"] != domain.StatePending {
			t.Fatalf("state of the one left: %v", st)
		}
	})
}

// TestPopManyReadsOnlyWhatFits: the single-server pop script reads (with
// HMGET, INFO commandstats counting the calls made inside scripts) only
// the payloads it delivers, not every payload it took: 17 messages of
// 1 MiB under a 3 MiB budget cost 3 payload reads. It used to read all 17
// into Lua and drop 14: 16 MiB of Redis work per call for a queue whose
// consumer takes 16, a GiB per round for 64 such queues, which stalled
// every other queue of the node. (The Cluster's path reads sizes first
// already, see deliverTaken.)
func TestPopManyReadsOnlyWhatFits(t *testing.T) {
	for _, b := range backends {
		if b.name == "embedded" || b.name == "redis-stepwise" {
			continue // no INFO commandstats; not the fused script
		}
		t.Run(b.name, func(t *testing.T) {
			r, c := b.store(t)
			s := redisq.NewLike(r, c, redisq.Options{BatchBytes: 3*mib + 10})
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			big := strings.Repeat("x", mib)
			for range 17 {
				provision(t, s, "UNSEC:", 'L', big, exp, "fit")
			}
			before := readServerStats(t, c)
			res := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:fit", Max: 17}})
			after := readServerStats(t, c)
			if res[0].Err != nil || len(res[0].Messages) != 3 || !res[0].Limited {
				t.Fatalf("pop: %d messages, limited %v, err %v", len(res[0].Messages), res[0].Limited, res[0].Err)
			}
			if reads := after.calls["hmget"] - before.calls["hmget"]; reads != 3 {
				t.Errorf("%d payload reads (HMGET) for 3 messages delivered, want 3", reads)
			}
			rest := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:fit", Max: 17}})
			if len(rest[0].Messages) != 3 || rest[0].Messages[0].TID == res[0].Messages[0].TID {
				t.Fatalf("second pop: %d messages", len(rest[0].Messages))
			}
		})
	}
}
