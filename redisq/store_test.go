package redisq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

type backend struct {
	name  string
	store func(t *testing.T) (*redisq.Store, *redis.Client)
}

func realRedis(t *testing.T) (*redisq.Store, *redis.Client) {
	r := testenv.StartRedis(t)
	c := r.Client()
	t.Cleanup(func() { c.Close() })
	return redisq.New(c, redisq.Options{}), c
}

func embedded(t *testing.T) (*redisq.Store, *redis.Client) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	return redisq.New(c, redisq.Options{ExplicitWake: true}), c
}

var backends = []backend{{"redis", realRedis}, {"embedded", embedded}}

func provision(t *testing.T, s *redisq.Store, ns string, prio byte, payload string, expires int64, queues ...string) string {
	t.Helper()
	tid := uuid.NewString()
	tx := &redisq.Transaction{ID: tid, NS: ns, Queues: queues, Priority: prio, ExpiresAt: expires,
		Meta: map[string]string{"payload": payload, "priority": string(prio), "expirationDate": fmt.Sprint(expires)}}
	if err := s.Provision(context.Background(), tx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return tid
}

func payloads(ms []redisq.Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Payload)
	}
	return out
}

func TestPopOrderAndStates(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, _ := b.store(t)
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			provision(t, s, "UNSEC:", 'L', "l1", exp, "q1")
			provision(t, s, "UNSEC:", 'H', "h1", exp, "q1")
			provision(t, s, "UNSEC:", 'L', "l2", exp, "q1", "q2")
			tid := provision(t, s, "UNSEC:", 'H', "h2", exp, "q1")

			peek, err := s.Peek(ctx, "UNSEC:q1", 10)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]string{"h1", "h2", "l1", "l2"}, payloads(peek)); d != "" {
				t.Fatalf("peek (-want +got):\n%s", d)
			}
			got, err := s.Pop(ctx, "UNSEC:q1", 3, redisq.PopOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]string{"h1", "h2", "l1"}, payloads(got)); d != "" {
				t.Fatalf("pop (-want +got):\n%s", d)
			}
			st, _ := s.States(ctx, tid)
			if st["UNSEC:q1"] != redisq.StateDelivered {
				t.Fatalf("state after pop = %v", st)
			}
			info, err := s.QueueInfo(ctx, "UNSEC:q1")
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != 1 || info.LastPop == 0 || len(info.Low) != 1 || info.Blocked {
				t.Fatalf("info = %+v", info)
			}
			// Hand back keeps order and makes the message Pending again.
			if err := s.HandBack(ctx, "UNSEC:q1", got); err != nil {
				t.Fatal(err)
			}
			st, _ = s.States(ctx, tid)
			if st["UNSEC:q1"] != redisq.StatePending {
				t.Fatalf("state after hand back = %v", st)
			}
			again, _ := s.Pop(ctx, "UNSEC:q1", 10, redisq.PopOptions{})
			if d := cmp.Diff([]string{"h1", "h2", "l1", "l2"}, payloads(again)); d != "" {
				t.Fatalf("pop after hand back (-want +got):\n%s", d)
			}
		})
	}
}

func TestGhostsSkipped(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, c := b.store(t)
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			gone := provision(t, s, "UNSEC:", 'H', "deleted", exp, "q")
			provision(t, s, "UNSEC:", 'H', "kept", exp, "q")
			short := provision(t, s, "UNSEC:", 'H', "expired", exp, "q")
			if err := s.DeleteTrans(ctx, gone); err != nil {
				t.Fatal(err)
			}
			// Expire one transaction's metadata now (as Redis does at expirationDate).
			c.Del(ctx, redisq.KeysOfTrans(short).Meta)
			got, err := s.Pop(ctx, "UNSEC:q", 2, redisq.PopOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]string{"kept"}, payloads(got)); d != "" {
				t.Fatalf("pop (-want +got):\n%s", d)
			}
			m, _ := s.Meta(ctx, gone)
			if len(m) != 0 {
				t.Fatalf("deleted meta = %v", m)
			}
		})
	}
}

func TestReliableAndReaper(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, _ := b.store(t)
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			a := provision(t, s, "UNSEC:", 'H', "a", exp, "r")
			bb := provision(t, s, "UNSEC:", 'L', "b", exp, "r")
			got, err := s.Pop(ctx, "UNSEC:r", 10, redisq.PopOptions{Reliable: true, AckTimeout: 50 * time.Millisecond})
			if err != nil || len(got) != 2 {
				t.Fatalf("reliable pop = %v, %v", got, err)
			}
			st, _ := s.States(ctx, a)
			if st["UNSEC:r"] != redisq.StateBlocked {
				t.Fatalf("state = %v", st)
			}
			res, err := s.Ack(ctx, "UNSEC:r", []string{a, "nope"})
			if err != nil || !res[0].OK || res[1].OK {
				t.Fatalf("ack = %+v, %v", res, err)
			}
			st, _ = s.States(ctx, a)
			if st["UNSEC:r"] != redisq.StateDelivered {
				t.Fatalf("state after ack = %v", st)
			}
			// b is not acked: after its deadline the reaper puts it back.
			deadline := time.Now().Add(5 * time.Second)
			for {
				req, err := s.ReapInflight(ctx, 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(req) == 1 && req[0].TID == bb {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("reaper never re-queued the unacked message")
				}
				time.Sleep(20 * time.Millisecond)
			}
			st, _ = s.States(ctx, bb)
			if st["UNSEC:r"] != redisq.StatePending {
				t.Fatalf("state after reap = %v", st)
			}
			again, _ := s.Pop(ctx, "UNSEC:r", 10, redisq.PopOptions{})
			if d := cmp.Diff([]string{"b"}, payloads(again)); d != "" {
				t.Fatalf("pop after reap (-want +got):\n%s", d)
			}
			if req, _ := s.ReapInflight(ctx, 100); len(req) != 0 {
				t.Fatalf("second reap re-queued %v", req)
			}
		})
	}
}

func TestGroupsBoxesDeferred(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, _ := b.store(t)
			ctx := context.Background()
			if err := s.SetGroup(ctx, "UNSEC:", "g", []string{"b", "a"}); err != nil {
				t.Fatal(err)
			}
			if err := s.ModifyGroup(ctx, "UNSEC:", "g", []string{"c"}, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			m, _ := s.Group(ctx, "UNSEC:", "g")
			if d := cmp.Diff([]string{"b", "c"}, m); d != "" {
				t.Fatal(d)
			}
			if err := s.ModifyGroup(ctx, "UNSEC:", "nope", []string{"c"}, nil); err != redisq.ErrNotFound {
				t.Fatalf("modify unknown group: %v", err)
			}
			if m, _ := s.Group(ctx, "SEC:", "g"); len(m) != 0 {
				t.Fatal("groups leak across namespaces")
			}
			if err := s.CreateBox(ctx, "SEC:box", "u", "hash"); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateBox(ctx, "SEC:box", "u", "hash"); err != redisq.ErrExists {
				t.Fatalf("second create: %v", err)
			}
			if u, h, err := s.Box(ctx, "SEC:box"); u != "u" || h != "hash" || err != nil {
				t.Fatalf("box = %q %q %v", u, h, err)
			}
			if _, _, err := s.Box(ctx, "SEC:none"); err != redisq.ErrNotFound {
				t.Fatalf("missing box: %v", err)
			}

			tx := &redisq.Transaction{ID: uuid.NewString(), NS: "UNSEC:", Queues: []string{"d"}, Priority: 'H',
				ExpiresAt: time.Now().Add(time.Hour).Unix(), Meta: map[string]string{"payload": "later", "priority": "H"}}
			if err := s.Defer(ctx, tx, time.Now().Add(-time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			claimed, err := s.ClaimDeferred(ctx, time.Minute, 10)
			if err != nil || len(claimed) != 1 || claimed[0].ID != tx.ID {
				t.Fatalf("claim = %v, %v", claimed, err)
			}
			if again, _ := s.ClaimDeferred(ctx, time.Minute, 10); len(again) != 0 {
				t.Fatal("a leased deferral was claimed twice")
			}
			if err := s.Provision(ctx, claimed[0]); err != nil {
				t.Fatal(err)
			}
			if err := s.FinishDeferred(ctx, tx.ID); err != nil {
				t.Fatal(err)
			}
			got, _ := s.Pop(ctx, "UNSEC:d", 10, redisq.PopOptions{})
			if d := cmp.Diff([]string{"later"}, payloads(got)); d != "" {
				t.Fatal(d)
			}
		})
	}
}

func TestWaitersAndHeartbeat(t *testing.T) {
	s, _ := realRedis(t)
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, "n1", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWaiting(ctx, "n1", []string{"UNSEC:w"}, nil); err != nil {
		t.Fatal(err)
	}
	info, _ := s.QueueInfo(ctx, "UNSEC:w")
	if !info.Blocked {
		t.Fatal("not blocked while a live node waits")
	}
	// The node dies: its heartbeat runs out and blocked falls back to false.
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, _ = s.QueueInfo(ctx, "UNSEC:w")
		if !info.Blocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("blocked stayed true after the node died")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUpdateTrans(t *testing.T) {
	s, c := realRedis(t)
	ctx := context.Background()
	tid := provision(t, s, "UNSEC:", 'H', "p", time.Now().Add(time.Hour).Unix(), "u")
	if err := s.UpdateTrans(ctx, uuid.NewString(), map[string]string{"payload": "x"}, 0); err != redisq.ErrNotFound {
		t.Fatalf("update unknown: %v", err)
	}
	newExp := time.Now().Add(48 * time.Hour).Unix()
	if err := s.UpdateTrans(ctx, tid, map[string]string{"payload": "new"}, newExp); err != nil {
		t.Fatal(err)
	}
	ttl := c.TTL(ctx, redisq.KeysOfQueue("UNSEC:u").High).Val()
	if ttl < 47*time.Hour {
		t.Fatalf("queue list TTL not extended: %v", ttl)
	}
	if mttl := c.TTL(ctx, redisq.KeysOfTrans(tid).Meta).Val(); mttl < 47*time.Hour {
		t.Fatalf("meta TTL = %v", mttl)
	}
	got, _ := s.Pop(ctx, "UNSEC:u", 1, redisq.PopOptions{})
	if d := cmp.Diff([]string{"new"}, payloads(got)); d != "" {
		t.Fatal(d)
	}
}

func TestWakeupsKeyspace(t *testing.T) {
	s, c := realRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ok, err := s.EnableNotifications(ctx)
	if err != nil || !ok {
		t.Fatalf("enable notifications: %v %v", ok, err)
	}
	woke := make(chan string, 10)
	go func() { _ = s.Wakeups(ctx, func(f string) { woke <- f }, func() {}) }()
	// An external writer pushing by the documented key layout wakes us.
	deadline := time.After(5 * time.Second)
	for {
		c.RPush(ctx, redisq.KeysOfQueue("UNSEC:ext").High, "some-tid")
		select {
		case f := <-woke:
			if f != "UNSEC:ext" {
				t.Fatalf("woke %q", f)
			}
			return
		case <-time.After(100 * time.Millisecond): // subscription may not be up yet
		case <-deadline:
			t.Fatal("no wake-up")
		}
	}
}

func TestPopMany(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, c := b.store(t)
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			provision(t, s, "UNSEC:", 'L', "a-l", exp, "a")
			provision(t, s, "UNSEC:", 'H', "a-h", exp, "a")
			ghost := provision(t, s, "UNSEC:", 'H', "b-ghost", exp, "b")
			provision(t, s, "UNSEC:", 'H', "b-live", exp, "b")
			provision(t, s, "UNSEC:", 'H', "r1", exp, "r")
			c.Del(ctx, redisq.KeysOfTrans(ghost).Meta)
			var skipped []string
			s.OnSkip(func(q, tid string) { skipped = append(skipped, q+"/"+tid) })
			res := s.PopMany(ctx, []redisq.PopRequest{
				{Queue: "UNSEC:a", Max: 10},
				{Queue: "UNSEC:b", Max: 1},
				{Queue: "UNSEC:r", Max: 5, Opts: redisq.PopOptions{Reliable: true, AckTimeout: time.Minute}},
				{Queue: "UNSEC:empty", Max: 5},
			})
			if d := cmp.Diff([]string{"a-h", "a-l"}, payloads(res[0].Messages)); d != "" || res[0].Taken != 2 {
				t.Fatalf("queue a: %s taken=%d", d, res[0].Taken)
			}
			// The ghost is taken (Taken == Max: pop again) but not returned.
			if len(res[1].Messages) != 0 || res[1].Taken != 1 || len(skipped) != 1 || skipped[0] != "UNSEC:b/"+ghost {
				t.Fatalf("queue b: %+v skipped=%v", res[1], skipped)
			}
			again := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:b", Max: 1}})
			if d := cmp.Diff([]string{"b-live"}, payloads(again[0].Messages)); d != "" {
				t.Fatal(d)
			}
			if len(res[2].Messages) != 1 {
				t.Fatalf("reliable: %+v", res[2])
			}
			st, _ := s.States(ctx, res[2].Messages[0].TID)
			if st["UNSEC:r"] != redisq.StateBlocked {
				t.Fatalf("reliable state = %v", st)
			}
			if res[3].Taken != 0 || len(res[3].Messages) != 0 || res[3].Err != nil {
				t.Fatalf("empty queue: %+v", res[3])
			}
		})
	}
}

func TestHandBackReliable(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, _ := b.store(t)
			ctx := context.Background()
			exp := time.Now().Add(time.Hour).Unix()
			a := provision(t, s, "UNSEC:", 'H', "a", exp, "hb")
			provision(t, s, "UNSEC:", 'L', "b", exp, "hb")
			provision(t, s, "UNSEC:", 'L', "c", exp, "hb")
			got, err := s.Pop(ctx, "UNSEC:hb", 2, redisq.PopOptions{Reliable: true, AckTimeout: time.Minute})
			if err != nil || len(got) != 2 {
				t.Fatalf("pop = %v %v", got, err)
			}
			// "a" is acked meanwhile: only "b" goes back, ahead of "c".
			if _, err := s.Ack(ctx, "UNSEC:hb", []string{a}); err != nil {
				t.Fatal(err)
			}
			if err := s.HandBackReliable(ctx, "UNSEC:hb", got); err != nil {
				t.Fatal(err)
			}
			st, _ := s.States(ctx, got[1].TID)
			if st["UNSEC:hb"] != redisq.StatePending {
				t.Fatalf("state after hand back = %v", st)
			}
			rest, _ := s.Pop(ctx, "UNSEC:hb", 10, redisq.PopOptions{})
			if d := cmp.Diff([]string{"b", "c"}, payloads(rest)); d != "" {
				t.Fatal(d)
			}
			if req, _ := s.ReapInflight(ctx, 10); len(req) != 0 {
				t.Fatalf("a handed-back entry stayed in flight: %v", req)
			}
		})
	}
}
