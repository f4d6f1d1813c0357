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

	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

type backend struct {
	name  string
	store func(t *testing.T) (*redisq.Store, *redis.Client)
}

// redisClient starts a Redis server for the test and returns a client of
// it, closed at the end of the test.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	c := testenv.StartRedis(t).Client()
	t.Cleanup(func() { c.Close() })
	return c
}

func realRedis(t *testing.T) (*redisq.Store, *redis.Client) {
	c := redisClient(t)
	return redisq.New(c, redisq.Options{}), c
}

func embedded(t *testing.T) (*redisq.Store, *redis.Client) {
	m := miniredis.RunT(t)
	// miniredis runs its Lua in the test process: on a loaded machine a
	// big script can exceed go-redis' default 3 s read timeout.
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	t.Cleanup(func() { c.Close() })
	return redisq.New(c, redisq.Options{ExplicitWake: true}), c
}

// autoPipelined is realRedis with the request path autopipelined.
func autoPipelined(t *testing.T) (*redisq.Store, *redis.Client) {
	c := redisClient(t)
	return redisq.New(c, redisq.Options{AutoPipeline: true}), c
}

// stepwise is realRedis taking the Cluster's path: one script per slot.
func stepwise(t *testing.T) (*redisq.Store, *redis.Client) {
	s, c := realRedis(t)
	redisq.Stepwise(s)
	return s, c
}

var backends = []backend{{"redis", realRedis}, {"embedded", embedded}, {"redis-autopipeline", autoPipelined}, {"redis-stepwise", stepwise}}

func provision(t *testing.T, s *redisq.Store, ns string, prio domain.Priority, payload string, expires int64, queues ...string) string {
	t.Helper()
	tx := redisq.NewTx(prio, payload, queues...)
	tx.NS, tx.ExpiresAt = ns, expires
	tx.Meta["expirationDate"] = fmt.Sprint(expires)
	if err := s.Provision(context.Background(), tx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return tx.ID
}

// msg is a transaction a store test starts with: its priority, its payload
// and the queues it goes to.
type msg struct {
	prio    domain.Priority
	payload string
	queues  []string
}

// provisionAll provisions msgs in order, each a transaction of namespace ns
// expiring in an hour, and returns their ids by payload.
func provisionAll(t *testing.T, s *redisq.Store, ns string, msgs ...msg) map[string]string {
	t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	ids := map[string]string{}
	for _, m := range msgs {
		if _, ok := ids[m.payload]; ok {
			t.Fatalf("payload %q provisioned twice", m.payload)
		}
		ids[m.payload] = provision(t, s, ns, m.prio, m.payload, exp, m.queues...)
	}
	return ids
}

func payloads(ms []redisq.Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Payload)
	}
	return out
}

func TestPopOrderAndStates(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		q1 := []string{"q1"}
		tid := provisionAll(t, s, "UNSEC:", msg{'L', "l1", q1}, msg{'H', "h1", q1}, msg{'L', "l2", []string{"q1", "q2"}}, msg{'H', "h2", q1})["h2"]

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
		if st["UNSEC:q1"] != domain.StateDelivered {
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
		if st["UNSEC:q1"] != domain.StatePending {
			t.Fatalf("state after hand back = %v", st)
		}
		again, _ := s.Pop(ctx, "UNSEC:q1", 10, redisq.PopOptions{})
		if d := cmp.Diff([]string{"h1", "h2", "l1", "l2"}, payloads(again)); d != "" {
			t.Fatalf("pop after hand back (-want +got):\n%s", d)
		}
	})
}

func TestGhostsSkipped(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, c *redis.Client) {
		ctx := context.Background()
		q := []string{"q"}
		ids := provisionAll(t, s, "UNSEC:", msg{'H', "deleted", q}, msg{'H', "kept", q}, msg{'H', "expired", q})
		gone := ids["deleted"]
		if deleted, err := s.DeleteTrans(ctx, gone, ""); err != nil || !deleted {
			t.Fatal(deleted, err)
		}
		// Expire one transaction's metadata now (as Redis does at expirationDate).
		c.Del(ctx, redisq.KeysOfTrans(ids["expired"]).Meta)
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

func TestReliableAndReaper(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		ids := provisionAll(t, s, "UNSEC:", msg{'H', "a", []string{"r"}}, msg{'L', "b", []string{"r"}})
		a, bb := ids["a"], ids["b"]
		got, err := s.Pop(ctx, "UNSEC:r", 10, redisq.PopOptions{Reliable: true, AckTimeout: 50 * time.Millisecond})
		if err != nil || len(got) != 2 {
			t.Fatalf("reliable pop = %v, %v", got, err)
		}
		st, _ := s.States(ctx, a)
		if st["UNSEC:r"] != domain.StateBlocked {
			t.Fatalf("state = %v", st)
		}
		res, err := s.Ack(ctx, "UNSEC:r", []string{a, "nope"})
		if err != nil || !res[0].OK || res[1].OK {
			t.Fatalf("ack = %+v, %v", res, err)
		}
		st, _ = s.States(ctx, a)
		if st["UNSEC:r"] != domain.StateDelivered {
			t.Fatalf("state after ack = %v", st)
		}
		// b is not acked: after its deadline the reaper puts it back.
		reapOne(t, s, 100, bb)
		st, _ = s.States(ctx, bb)
		if st["UNSEC:r"] != domain.StatePending {
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

func TestGroupsBoxesDeferred(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		if err := s.AddToGroup(ctx, "UNSEC:", "g", []string{"b", "a"}); err != nil {
			t.Fatal(err)
		}
		// Adding again keeps the members it has (set union).
		if err := s.AddToGroup(ctx, "UNSEC:", "g", []string{"a"}); err != nil {
			t.Fatal(err)
		}
		if m, _ := s.Group(ctx, "UNSEC:", "g"); cmp.Diff([]string{"a", "b"}, m) != "" {
			t.Fatalf("members after adding a again: %v", m)
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

		tx := redisq.NewTx('H', "later", "d")
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

func TestWaitersAndHeartbeat(t *testing.T) {
	s, _ := realRedis(t)
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, "n1", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetWaiting(ctx, "n1", 0, []string{"UNSEC:w"}, nil); err != nil {
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

// TestRegistrationAssertsHeartbeat: a registration asserts the node's
// heartbeat itself, so a waiter registered just after Redis lost its data
// counts at once, and reports the lapse so the node registers its other
// queues again. A registration without a heartbeat does not count, and is
// removed by readers only once it is older than the grace period.
func TestRegistrationAssertsHeartbeat(t *testing.T) {
	s, c := realRedis(t)
	ctx := context.Background()
	blocked := func(q string) bool {
		t.Helper()
		info, err := s.QueueInfo(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return info.Blocked
	}
	lapsed, err := s.SetWaiting(ctx, "n1", time.Minute, []string{"UNSEC:a"}, nil)
	if err != nil || !lapsed {
		t.Fatalf("first registration: lapsed %v, err %v; want lapsed", lapsed, err)
	}
	if !blocked("UNSEC:a") {
		t.Fatal("not blocked right after the first registration")
	}
	if lapsed, err = s.SetWaiting(ctx, "n1", time.Minute, []string{"UNSEC:b"}, nil); err != nil || lapsed {
		t.Fatalf("second registration: lapsed %v, err %v", lapsed, err)
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if blocked("UNSEC:a") || blocked("UNSEC:b") {
		t.Fatal("blocked after FLUSHALL")
	}
	if lapsed, err = s.SetWaiting(ctx, "n1", time.Minute, []string{"UNSEC:c"}, nil); err != nil || !lapsed {
		t.Fatalf("registration after FLUSHALL: lapsed %v, err %v; want lapsed", lapsed, err)
	}
	if !blocked("UNSEC:c") {
		t.Fatal("not blocked right after a registration that followed FLUSHALL")
	}
	if lapsed, err = s.SetWaiting(ctx, "n1", time.Minute, nil, []string{"UNSEC:c"}); err != nil || lapsed {
		t.Fatalf("unregistration: lapsed %v, err %v", lapsed, err)
	}
	if blocked("UNSEC:c") {
		t.Fatal("still blocked right after the unregistration")
	}

	// A fresh registration of a node whose heartbeat is not (yet) there
	// does not count and stays; an old one is dropped.
	if _, err := s.SetWaiting(ctx, "n2", 0, []string{"UNSEC:d"}, nil); err != nil {
		t.Fatal(err)
	}
	if blocked("UNSEC:d") {
		t.Fatal("a node without a heartbeat counts")
	}
	waiters := redisq.KeysOfQueue("UNSEC:d").Waiters
	if err := c.ZScore(ctx, waiters, "n2").Err(); err != nil {
		t.Fatalf("a fresh registration was dropped: %v", err)
	}
	if _, err := s.Heartbeat(ctx, "n2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !blocked("UNSEC:d") {
		t.Fatal("not blocked once the node's heartbeat is there")
	}
	old := float64(time.Now().Add(-time.Minute).UnixMilli())
	if err := c.ZAdd(ctx, waiters, redis.Z{Score: old, Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	blocked("UNSEC:d")
	if err := c.ZScore(ctx, waiters, "gone").Err(); err != redis.Nil {
		t.Fatalf("an old registration of a dead node was kept: %v", err)
	}
}

func TestUpdateTrans(t *testing.T) {
	s, c := realRedis(t)
	ctx := context.Background()
	tid := provision(t, s, "UNSEC:", 'H', "p", time.Now().Add(time.Hour).Unix(), "u")
	if err := s.UpdateTrans(ctx, uuid.NewString(), "", map[string]string{"payload": "x"}, 0); err != redisq.ErrNotFound {
		t.Fatalf("update unknown: %v", err)
	}
	newExp := time.Now().Add(48 * time.Hour).Unix()
	if err := s.UpdateTrans(ctx, tid, "", map[string]string{"payload": "new"}, newExp); err != nil {
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

// TestTransOrg: a transaction belongs to the org of its namespace; reads
// see it, updates and deletes act on it only within that org (issue 13
// item 1).
func TestTransOrg(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		acme := provisionAll(t, s, "acme:UNSEC:", msg{'H', "acme-secret", []string{"q"}})["acme-secret"]
		root := provisionAll(t, s, "SEC:", msg{'L', "root", []string{"q"}})["root"]
		for _, c := range []struct{ tid, org string }{{acme, "acme"}, {root, ""}} {
			info, err := s.ReadTrans(ctx, c.tid, true)
			if err != nil || !info.Found || info.Org != c.org {
				t.Fatalf("read %s: %+v %v, want org %q", c.tid, info, err, c.org)
			}
			if _, ok := info.Meta[redisq.FieldOrg]; ok || info.Meta["payload"] == "" || len(info.States) != 1 {
				t.Fatalf("read %s: meta %v states %v", c.tid, info.Meta, info.States)
			}
		}
		if err := s.UpdateTrans(ctx, acme, "evil", map[string]string{"payload": "pwned"}, 0); err != redisq.ErrNotFound {
			t.Fatalf("update from another org: %v", err)
		}
		if err := s.UpdateTrans(ctx, acme, "", map[string]string{"payload": "pwned"}, 0); err != redisq.ErrNotFound {
			t.Fatalf("update from no org: %v", err)
		}
		if err := s.UpdateTrans(ctx, root, "acme", map[string]string{"payload": "pwned"}, 0); err != redisq.ErrNotFound {
			t.Fatalf("update of a no-org transaction from an org: %v", err)
		}
		if d, err := s.DeleteTrans(ctx, acme, "evil"); err != nil || d {
			t.Fatalf("delete from another org: %v %v", d, err)
		}
		info, _ := s.ReadTrans(ctx, acme, true)
		if !info.Found || info.Meta["payload"] != "acme-secret" {
			t.Fatalf("acme's transaction changed by another org: %+v", info)
		}
		if err := s.UpdateTrans(ctx, acme, "acme", map[string]string{"payload": "v2", redisq.FieldOrg: "evil"}, 0); err != nil {
			t.Fatal(err)
		}
		if info, _ := s.ReadTrans(ctx, acme, true); info.Org != "acme" || info.Meta["payload"] != "v2" {
			t.Fatalf("after update: %+v", info)
		}
		if d, err := s.DeleteTrans(ctx, acme, "acme"); err != nil || !d {
			t.Fatalf("delete by its org: %v %v", d, err)
		}
		if info, _ := s.ReadTrans(ctx, acme, true); info.Found {
			t.Fatalf("deleted transaction still found: %+v", info)
		}
		// A deferral is cancelled only by its own org.
		later := redisq.NewTx('H', "later", "q")
		later.NS = "acme:UNSEC:"
		if err := s.Defer(ctx, later, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if d, err := s.DeleteTrans(ctx, later.ID, "evil"); err != nil || d {
			t.Fatalf("cancel another org's deferral: %v %v", d, err)
		}
		if d, err := s.DeleteTrans(ctx, later.ID, "acme"); err != nil || !d {
			t.Fatalf("cancel own deferral: %v %v", d, err)
		}
	})
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
	go func() { _ = s.Wakeups(ctx, func(f string) { woke <- f }, func() {}, nil) }()
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
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, c *redis.Client) {
		ctx := context.Background()
		qa, qb := []string{"a"}, []string{"b"}
		ghost := provisionAll(t, s, "UNSEC:", msg{'L', "a-l", qa}, msg{'H', "a-h", qa}, msg{'H', "b-ghost", qb}, msg{'H', "b-live", qb}, msg{'H', "r1", []string{"r"}})["b-ghost"]
		c.Del(ctx, redisq.KeysOfTrans(ghost).Meta)
		res := s.PopMany(ctx, []redisq.PopRequest{
			{Queue: "UNSEC:a", Max: 10},
			{Queue: "UNSEC:b", Max: 1},
			{Queue: "UNSEC:r", Max: 5, Opts: redisq.PopOptions{Reliable: true, AckTimeout: time.Minute}},
			{Queue: "UNSEC:empty", Max: 5},
		})
		if d := cmp.Diff([]string{"a-h", "a-l"}, payloads(res[0].Messages)); d != "" || res[0].Taken != 2 {
			t.Fatalf("queue a: %s taken=%d", d, res[0].Taken)
		}
		if sk := res[1].Skipped; len(sk) != 1 || sk[0].Queue != "UNSEC:b" || sk[0].TID != ghost {
			t.Fatalf("queue b skipped: %+v", res[1])
		}
		if b.name == "redis-stepwise" {
			// The ghost is taken (Taken == Max: pop again) but not returned.
			if len(res[1].Messages) != 0 || res[1].Taken != 1 {
				t.Fatalf("queue b: %+v", res[1])
			}
			again := s.PopMany(ctx, []redisq.PopRequest{{Queue: "UNSEC:b", Max: 1}})
			if d := cmp.Diff([]string{"b-live"}, payloads(again[0].Messages)); d != "" {
				t.Fatal(d)
			}
		} else if d := cmp.Diff([]string{"b-live"}, payloads(res[1].Messages)); d != "" || res[1].Taken != 2 {
			// One script pops on past the ghost.
			t.Fatalf("queue b: %s taken=%d", d, res[1].Taken)
		}
		if len(res[2].Messages) != 1 {
			t.Fatalf("reliable: %+v", res[2])
		}
		st, _ := s.States(ctx, res[2].Messages[0].TID)
		if st["UNSEC:r"] != domain.StateBlocked {
			t.Fatalf("reliable state = %v", st)
		}
		if res[3].Taken != 0 || len(res[3].Messages) != 0 || res[3].Err != nil {
			t.Fatalf("empty queue: %+v", res[3])
		}
	})
}

func TestHandBackReliable(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		hb := []string{"hb"}
		a := provisionAll(t, s, "UNSEC:", msg{'H', "a", hb}, msg{'L', "b", hb}, msg{'L', "c", hb})["a"]
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
		if st["UNSEC:hb"] != domain.StatePending {
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

// TestHandBackReliableOnlyItsOwnDelivery: a consumer that hands back a
// reliable message after the reaper re-queued it and another consumer took
// it again must not take that newer delivery away (the stream's deadline and
// the reaper do not race).
func TestHandBackReliableOnlyItsOwnDelivery(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, s *redisq.Store, _ *redis.Client) {
		ctx := context.Background()
		tid := provisionAll(t, s, "UNSEC:", msg{'H', "a", []string{"own"}})["a"]
		first, err := s.Pop(ctx, "UNSEC:own", 1, redisq.PopOptions{Reliable: true, AckTimeout: time.Millisecond})
		if err != nil || len(first) != 1 || first[0].Deadline == 0 {
			t.Fatalf("pop = %+v %v", first, err)
		}
		reapOne(t, s, 10, "")
		second, err := s.Pop(ctx, "UNSEC:own", 1, redisq.PopOptions{Reliable: true, AckTimeout: time.Minute})
		if err != nil || len(second) != 1 || second[0].TID != tid {
			t.Fatalf("second pop = %+v %v", second, err)
		}
		// The first consumer hands back late: nothing changes.
		if err := s.HandBackReliable(ctx, "UNSEC:own", first); err != nil {
			t.Fatal(err)
		}
		if rest, _ := s.Peek(ctx, "UNSEC:own", 10); len(rest) != 0 {
			t.Fatalf("a stale hand-back put the message back while another consumer holds it: %+v", rest)
		}
		res, err := s.Ack(ctx, "UNSEC:own", []string{tid})
		if err != nil || !res[0].OK {
			t.Fatalf("the second consumer's ack = %+v %v", res, err)
		}
	})
}

// TestPopSkipsGhostsInOneCall: on a single server one pop call pops on
// past entries whose transaction is gone (a cancelled fan-out) instead of
// returning empty-handed once per ghost, up to its bound of 1,000 ghosts.
func TestPopSkipsGhostsInOneCall(t *testing.T) {
	s, c := realRedis(t)
	ctx := context.Background()
	const q = "UNSEC:ghosts"
	ghosts := make([]any, 1001)
	for i := range ghosts {
		ghosts[i] = uuid.NewString() // no transaction behind them
	}
	if err := c.RPush(ctx, redisq.KeysOfQueue(q).High, ghosts[:30]...).Err(); err != nil {
		t.Fatal(err)
	}
	live := provision(t, s, "UNSEC:", 'L', "live", time.Now().Add(time.Hour).Unix(), "ghosts")
	res := s.PopMany(ctx, []redisq.PopRequest{{Queue: q, Max: 1}})[0]
	if len(res.Messages) != 1 || res.Messages[0].TID != live || len(res.Skipped) != 30 || res.Taken != 31 || res.Err != nil {
		t.Fatalf("30 ghosts then a live message: %d messages, %d skipped, taken %d, err %v", len(res.Messages), len(res.Skipped), res.Taken, res.Err)
	}
	// More ghosts than one call skips: it returns after 1,000, the caller
	// (Taken >= Max) pops again and gets the live one.
	if err := c.RPush(ctx, redisq.KeysOfQueue(q).High, ghosts...).Err(); err != nil {
		t.Fatal(err)
	}
	live = provision(t, s, "UNSEC:", 'H', "live2", time.Now().Add(time.Hour).Unix(), "ghosts")
	res = s.PopMany(ctx, []redisq.PopRequest{{Queue: q, Max: 1}})[0]
	if len(res.Messages) != 0 || len(res.Skipped) != 1000 || res.Taken != 1000 {
		t.Fatalf("1,001 ghosts, first call: %d messages, %d skipped, taken %d, err %v", len(res.Messages), len(res.Skipped), res.Taken, res.Err)
	}
	res = s.PopMany(ctx, []redisq.PopRequest{{Queue: q, Max: 1}})[0]
	if len(res.Messages) != 1 || res.Messages[0].TID != live || len(res.Skipped) != 1 {
		t.Fatalf("second call: %d messages, %d skipped, taken %d, err %v", len(res.Messages), len(res.Skipped), res.Taken, res.Err)
	}
}

// eachBackend runs test as a subtest named after each backend, on a fresh
// store of that backend and a client of its server.
func eachBackend(t *testing.T, test func(t *testing.T, b backend, s *redisq.Store, c *redis.Client)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, c := b.store(t)
			test(t, b, s, c)
		})
	}
}

// reapOne calls ReapInflight(max) until a call re-queues exactly one entry
// (of transaction tid, unless tid is ""), failing after 5 s.
func reapOne(t *testing.T, s *redisq.Store, max int, tid string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, err := s.ReapInflight(context.Background(), max)
		if err != nil {
			t.Fatal(err)
		}
		if len(req) == 1 && (tid == "" || req[0].TID == tid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the reaper never re-queued the unacked message")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
