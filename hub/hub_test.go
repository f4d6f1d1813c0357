package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
	"github.com/popbox/popbox/redisq"
)

func newStore(t *testing.T, r *testenv.Redis) *redisq.Store {
	c := r.Client()
	t.Cleanup(func() { c.Close() })
	s := redisq.New(c, redisq.Options{})
	if ok, err := s.EnableNotifications(context.Background()); err != nil || !ok {
		t.Fatalf("notifications: %v %v", ok, err)
	}
	return s
}

// startHub runs a hub on s as node, with a one-second lease and a fast
// re-check sweep.
func startHub(t *testing.T, s *redisq.Store, node string) *hub.Hub {
	return runHub(t, s, hub.Options{Node: node, Lease: time.Second, RecheckInterval: 500 * time.Millisecond})
}

// startOneHub starts a redis-server with a store on it and hub node n1.
func startOneHub(t *testing.T) (*redisq.Store, *hub.Hub) {
	s := newStore(t, testenv.StartRedis(t))
	return s, startHub(t, s, "n1")
}

// runHub runs a hub on s with opts until the test ends (then shuts it
// down and waits for Run to return).
func runHub(t *testing.T, s hub.Store, opts hub.Options) *hub.Hub {
	h := hub.New(s, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	t.Cleanup(func() { h.Shutdown(); cancel(); <-done })
	return h
}

// wantBatch waits up to within for the batch of the one-shot waiter w and
// checks that it is the one message payload.
func wantBatch(t *testing.T, w *hub.Waiter, payload string, within time.Duration) {
	t.Helper()
	select {
	case b := <-w.Batch():
		if len(b) != 1 || b[0].Payload != payload {
			t.Fatalf("batch = %+v, want the one message %q", b, payload)
		}
	case <-time.After(within):
		t.Fatalf("no batch within %v: waiter not woken", within)
	}
}

func push(t *testing.T, s *redisq.Store, queue, payload string, prio domain.Priority) string {
	t.Helper()
	tid := uuid.NewString()
	exp := time.Now().Add(time.Hour).Unix()
	err := s.Provision(context.Background(), &redisq.Transaction{ID: tid, NS: "UNSEC:", Queues: []string{queue}, Priority: prio,
		ExpiresAt: exp, Meta: map[string]string{"payload": payload, "priority": prio.String()}})
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

func TestPopWaiterWokenByLaterPush(t *testing.T) {
	s, h := startOneHub(t)
	w := hub.NewPop("UNSEC:q", 10, hub.Mode{}, "test")
	h.Add(w)
	defer h.Remove(w)
	go func() {
		time.Sleep(50 * time.Millisecond) // the push happens while the pop waits
		push(t, s, "q", "hello", 'H')
	}()
	wantBatch(t, w, "hello", 5*time.Second)
}

func TestTwoNodesEachMessageOnce(t *testing.T) {
	r := testenv.StartRedis(t)
	s1, s2 := newStore(t, r), newStore(t, r)
	h1, h2 := startHub(t, s1, "n1"), startHub(t, s2, "n2")
	const n = 200
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	consume := func(h *hub.Hub) {
		defer wg.Done()
		w := hub.NewStream("UNSEC:shared", 8, hub.Mode{}, "test")
		h.Add(w)
		defer h.Remove(w)
		for {
			select {
			case m := <-w.Outbox():
				mu.Lock()
				seen[m.Payload]++
				total := len(seen)
				mu.Unlock()
				h.Pulled(w)
				if total == n {
					cancel()
				}
			case <-ctx.Done():
				return
			}
		}
	}
	wg.Add(2)
	go consume(h1)
	go consume(h2)
	for i := 0; i < n; i++ {
		push(t, s1, "shared", fmt.Sprint(i), 'L')
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("received %d distinct of %d", len(seen), n)
	}
	for p, c := range seen {
		if c != 1 {
			t.Fatalf("message %s delivered %d times", p, c)
		}
	}
}

func TestRemovedStreamHandsBack(t *testing.T) {
	s, h := startOneHub(t)
	for i := 0; i < 3; i++ {
		push(t, s, "hb", fmt.Sprint(i), 'H')
	}
	w := hub.NewStream("UNSEC:hb", 8, hub.Mode{}, "test")
	h.Add(w)
	deadline := time.Now().Add(5 * time.Second)
	for len(w.Outbox()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("stream did not fill")
		}
		time.Sleep(5 * time.Millisecond)
	}
	first := <-w.Outbox() // written to the client
	h.Remove(w)           // the other two go back to the head, in order
	got, err := s.Pop(context.Background(), "UNSEC:hb", 10, redisq.PopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Payload != "0" || len(got) != 2 || got[0].Payload != "1" || got[1].Payload != "2" {
		t.Fatalf("first=%q rest=%+v", first.Payload, got)
	}
}

func TestBlockedRegistration(t *testing.T) {
	s, h := startOneHub(t)
	w := hub.NewPop("UNSEC:b", 1, hub.Mode{}, "test")
	h.Add(w)
	waitBlocked(t, s, "UNSEC:b", true)
	h.Remove(w)
	waitBlocked(t, s, "UNSEC:b", false)
}

func waitBlocked(t *testing.T, s *redisq.Store, q string, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := s.QueueInfo(context.Background(), q)
		if err == nil && info.Blocked == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocked never became %v", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recordingStore records the queues registered and unregistered.
type recordingStore struct {
	*redisq.Store
	mu      sync.Mutex
	on, off map[string]int
}

func (r *recordingStore) SetWaiting(ctx context.Context, node string, lease time.Duration, on, off []string) (bool, error) {
	r.mu.Lock()
	for _, q := range on {
		r.on[q]++
	}
	for _, q := range off {
		r.off[q]++
	}
	r.mu.Unlock()
	return r.Store.SetWaiting(ctx, node, lease, on, off)
}

func (r *recordingStore) count(q string) (on, off int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.on[q], r.off[q]
}

// TestServedPopNotRegistered: a long-poll pop that its first pop round
// serves never waited, so the node writes no "waiting" registration for it
// (nor its removal): two Redis round trips less per such pop. A pop that
// does wait is registered, and unregistered when it ends.
func TestServedPopNotRegistered(t *testing.T) {
	r := testenv.StartRedis(t)
	rs := &recordingStore{Store: newStore(t, r), on: map[string]int{}, off: map[string]int{}}
	h := runHub(t, rs, hub.Options{Node: "n1", Lease: time.Minute, RecheckInterval: time.Minute})

	push(t, rs.Store, "served", "hello", 'H')
	w := hub.NewPop("UNSEC:served", 1, hub.Mode{}, "test")
	h.Add(w)
	wantBatch(t, w, "hello", 10*time.Second)
	h.Remove(w)
	// A pop on an empty queue waits: registered, then unregistered.
	w2 := hub.NewPop("UNSEC:empty", 1, hub.Mode{}, "test")
	h.Add(w2)
	waitBlocked(t, rs.Store, "UNSEC:empty", true)
	h.Remove(w2)
	waitBlocked(t, rs.Store, "UNSEC:empty", false)
	// Registrations are written in order: the served pop's would have
	// gone before the empty queue's.
	if on, off := rs.count("UNSEC:served"); on != 0 || off != 0 {
		t.Fatalf("served pop: %d registrations, %d removals; want none", on, off)
	}
	if on, off := rs.count("UNSEC:empty"); on != 1 || off != 1 {
		t.Fatalf("waiting pop: %d registrations, %d removals; want one each", on, off)
	}
}
